"""The compute policy (issue 24): spec validation, resolution, GPU requests scheduled by real Ray on GPUs declared on
this CPU machine, one retry at half the batch after a real torch.OutOfMemoryError, and a hung trial killed by its
watchdog and run again."""

from __future__ import annotations

import json

import pytest
import torch

from conftest import real_job, tiny_job_spec

from nas.compute import Compute, resolve
from nas.spec.errors import SpecError
from nas.spec.job import ComputePolicy, parse_spec
from nas.workers.setup import with_oom_retry


def spec_with(compute: dict):
    return parse_spec({"name": "x", "dataset": "bbc-news", "compute": compute})


@pytest.mark.parametrize("compute, field, words", [
    ({"device": "cpu", "precision": "fp16"}, "compute", "fp16 trains on cuda"),
    ({"device": "cpu", "gpus_per_trial": 0.5}, "compute", "asks for no GPU"),
    ({"device": "cuda", "gpus_per_trial": 1.5}, "compute", "whole number"),
    ({"device": "tpu"}, "compute.device", "Input should be"),
    ({"precision": "fp8"}, "compute.precision", "Input should be"),
])
def test_impossible_compute_policies_are_spec_errors(compute, field, words):
    with pytest.raises(SpecError) as err:
        spec_with(compute)
    assert err.value.field == field and words in err.value.message


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the machine without a GPU")
@pytest.mark.parametrize("compute, field", [({"device": "cuda"}, "compute.device"),
                                            ({"precision": "fp16"}, "compute.precision")])
def test_what_this_machine_cannot_run_is_refused_before_anything_is_written(compute, field, sqlite_url):
    from nas.pipeline import run_job
    from nas.store import Store

    store = Store(sqlite_url)
    with pytest.raises(SpecError) as err:
        run_job(spec_with(compute), store)
    assert err.value.field == field
    assert store.list_jobs() == []


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the machine without a GPU")
def test_a_gpu_job_is_queued_from_a_machine_without_one_and_refused_where_it_would_run(tmp_path, monkeypatch):
    """`nas submit` (and `nas validate --cluster`) leave the GPU checks to the machine that runs the job; `nas run` and
    `nas validate` here refuse it with the field's path, exit 2, nothing written."""
    import yaml
    from typer.testing import CliRunner

    from nas.store import Store
    from nas.ui.cli import app

    url = f"sqlite:///{tmp_path / 'q.db'}"
    monkeypatch.setenv("NAS_HOME", str(tmp_path))
    for extra, field in (({"compute": {"device": "cuda"}}, "compute.device"),
                         ({"latency": {"device": "cuda", "batch": 32}}, "latency.device")):
        path = tmp_path / "gpu.yaml"
        path.write_text(yaml.safe_dump({"name": "gpu", "dataset": {"name": "bbc-news", "max_rows": 100}, **extra}))
        runner = CliRunner()
        refused = runner.invoke(app, ["run", str(path), "--storage", url])
        assert refused.exit_code == 2 and field in refused.output, refused.output
        assert runner.invoke(app, ["validate", str(path)]).exit_code == 2
        assert runner.invoke(app, ["validate", str(path), "--cluster"]).exit_code == 0
        queued = runner.invoke(app, ["submit", str(path), "--storage", url])
        assert queued.exit_code == 0 and "queued" in queued.output, queued.output
    assert [j["status"] for j in Store(url).list_jobs()] == ["QUEUED", "QUEUED"]


def test_resolution_auto_is_cuda_only_where_a_gpu_is_seen():
    auto = ComputePolicy()
    assert resolve(auto, cuda_available=False) == Compute("cpu", "fp32")
    gpu = resolve(auto, max_concurrent=4, cuda_available=True)
    assert (gpu.device, gpu.gpus_per_trial, gpu.gpus_per_task) == ("cuda", 0.25, 1.0)  # 4 small trials share a GPU
    assert gpu.ray_resources() == {"num_gpus": 0.25} and gpu.ray_resources(whole_gpu=True) == {"num_gpus": 1.0}
    assert resolve(ComputePolicy(gpus_per_trial=2), cuda_available=True).ray_resources() == {"num_gpus": 2.0}
    assert resolve(ComputePolicy(device="cpu"), cuda_available=True).ray_resources() == {}


def test_out_of_memory_is_retried_once_at_half_the_batch():
    calls = []

    def train(accumulate: int):
        calls.append(accumulate)
        if accumulate == 1:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return "trained"

    reasons = []
    assert with_oom_retry(train, reasons.append) == "trained" and calls == [1, 2]
    assert "OutOfMemoryError" in reasons[0]

    def always(accumulate: int):
        raise torch.OutOfMemoryError(f"CUDA out of memory at accumulate {accumulate}")

    with pytest.raises(RuntimeError, match="at the full batch .* and at half the batch"):
        with_oom_retry(always)


def test_accumulated_half_batches_train_like_the_whole_batch():
    """The OOM retry's promise: the same effective batch. Two accumulated halves give the gradients of the whole."""
    from transformers import BertConfig, BertForSequenceClassification

    from nas.distill.loop import DistillSettings, distill

    torch.manual_seed(0)
    cfg = BertConfig(vocab_size=100, hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32,
                     max_position_embeddings=16, num_labels=2, hidden_dropout_prob=0.0,
                     attention_probs_dropout_prob=0.0)
    base = BertForSequenceClassification(cfg)
    x = {"input_ids": torch.randint(1, 100, (16, 8)), "attention_mask": torch.ones(16, 8, dtype=torch.long)}
    y, soft = torch.randint(0, 2, (16,)), torch.randn(16, 2)
    settings = DistillSettings(lr=1e-2, batch_size=16, warmup_ratio=0.0)
    outs = []
    for accumulate in (1, 2):
        model = BertForSequenceClassification(cfg)
        model.load_state_dict(base.state_dict())
        info = distill(model, x, y, soft, settings, steps=3, accumulate=accumulate)
        outs.append((model, info["final_loss"]))
    for a, b in zip(outs[0][0].parameters(), outs[1][0].parameters()):
        assert torch.allclose(a, b, atol=1e-5)
    assert outs[0][1] == pytest.approx(outs[1][1], rel=1e-5)


GPU_JOB = tiny_job_spec("gpu-sched").replace("budgets: {trials: 3,", "budgets: {trials: 2, max_concurrent: 2,") + \
    "compute: {device: cuda, gpus_per_trial: 0.5, cpus_per_trial: 1}\n"


@pytest.fixture(scope="module")
def gpu_job(tmp_path_factory):
    """One real job for two checks: one GPU declared to real Ray on this CPU machine (NAS_GPU_AS_CPU keeps the tensors
    on the CPU), two students asking for half of it each, and trial 2 hit by a real torch.OutOfMemoryError at its first
    whole-batch step (NAS_INJECT_OOM_TRIALS)."""
    import os

    from nas.service.cluster import init_ray

    hooks = {"NAS_GPU_AS_CPU": "1", "NAS_INJECT_OOM_TRIALS": "2"}  # set before Ray starts: its workers inherit them
    old = {k: os.environ.get(k) for k in hooks}
    os.environ.update(hooks)
    try:
        init_ray(num_cpus=2, num_gpus=1)
        with real_job(tmp_path_factory.mktemp("gpu"), GPU_JOB) as j:
            yield j
    finally:
        for k, v in old.items():
            os.environ.pop(k, None) if v is None else os.environ.__setitem__(k, v)


def test_trials_ask_ray_for_gpu_fractions_and_share_one_declared_gpu(gpu_job):
    """Each student asks for half of the one declared GPU, the two run at once, and each records what Ray assigned it."""
    students = gpu_job["store"].trials(gpu_job["job_id"], kind="student")
    assert [t["state"] for t in students] == ["COMPLETE", "COMPLETE"]
    assert all(t["compute"]["assigned"].get("GPU") == 0.5 for t in students), [t["compute"] for t in students]
    assert all(t["compute"]["device"] == "cpu" and t["compute"]["precision"] == "fp32" for t in students)
    teacher = gpu_job["store"].trials(gpu_job["job_id"], kind="teacher")[0]
    assert teacher["compute"] == {"device": "cpu", "precision": "fp32", "gpu": None}  # the fine-tuned teacher too
    a, b = sorted(students, key=lambda t: t["started_at"])
    assert b["started_at"] < a["finished_at"], "the two half-GPU trials should overlap on the one GPU"


def test_a_trial_out_of_gpu_memory_is_retried_at_half_the_batch_and_the_job_goes_on(gpu_job):
    students = {t["number"]: t for t in gpu_job["store"].trials(gpu_job["job_id"], kind="student")}
    assert gpu_job["store"].get_job(gpu_job["job_id"])["status"] == "COMPLETE"
    assert all(t["state"] == "COMPLETE" for t in students.values())
    retried = [m for m in students[2]["metrics"] if m["name"] == "oom_retries"]
    assert retried and retried[0]["value"] == 1
    assert not any(m["name"] == "oom_retries" for n, t in students.items() if n != 2 for m in t["metrics"])
    assert students[2]["attempts"] == 1  # retried inside its attempt, not by a restart


# the hung trial (NAS_INJECT_HANG_TRIALS, budgets.trial_stale_s) shares the real job of tests/test_latency_targets.py:
# test_a_hung_trial_is_killed_after_the_staleness_limit_and_runs_again


def test_a_bf16_job_trains_under_autocast_on_the_cpu_and_stores_the_fp32_models_scores(tmp_path):
    """`compute.precision: bf16` on a CPU: the teacher and the students train under torch.autocast (about 3x faster a
    step for a 110M teacher on a CPU with avx512_bf16), the fine-tuned teacher is cached under its own key (an fp32
    job never reads it), and every stored dev score is the fp32 model's, as the export deploys it: the export
    reproduces it exactly."""
    from nas.data import load_dataset
    from nas.results.export import evaluate_export, export_trial
    from nas.spec.job import DatasetRef
    from nas.store.records import metric_value
    from nas.teachers.load import teacher_cache_dir

    spec = tiny_job_spec("tiny-bf16").replace("seed: 3", "seed: 3\ncompute: {device: cpu, precision: bf16}")
    with real_job(tmp_path / "home", spec) as j:
        store, job_id = j["store"], j["job_id"]
        trials = store.trials(job_id)
        teacher = next(t for t in trials if t["kind"] == "teacher")
        assert teacher["compute"]["precision"] == "bf16"
        students = [t for t in trials if t["kind"] == "student" and t["state"] == "COMPLETE"]
        assert students and all(t["compute"]["precision"] == "bf16" for t in students)
        ds = load_dataset(DatasetRef(name="bbc-news", max_rows=150), "classification", 3)
        bf16_dir = teacher_cache_dir("minilm-l6", ds, 3, 2.0, 32, precision="bf16")
        assert bf16_dir != teacher_cache_dir("minilm-l6", ds, 3, 2.0, 32)
        info = json.loads((bf16_dir / "teacher.json").read_text())
        assert info["precision"] == "bf16" and info["fine_tuned"]
        best = max(students, key=lambda t: metric_value(t, "accuracy", "dev", "final") or 0.0)
        out = export_trial(store, job_id, best["number"], tmp_path / "export")
        result = evaluate_export(out, "hf")
        assert result["dev_accuracy"] == pytest.approx(metric_value(best, "accuracy", "dev", "final"), abs=1e-6), result
        store.dispose()
