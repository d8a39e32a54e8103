"""No tensor in the training, labelling, proxy, final and HPO paths lands on an implicit device.

Under the NAS_STRICT_DEVICES hook torch's default device is `meta` in a job's stages and in every worker: a tensor or
module made without an explicit device is a meta tensor there, which fails at its first real use (or, as an index,
reads garbage, hence the checks on the job's results and not only on its states). conftest turns the hook on for every
real job of the suite (per-trial KD, the supernet schedule, HPO, pairs, references, the CLI, the cluster); the job here
runs, with `compute.device: cpu` named, every path that trains or infers in one tiny job, the teacher fine-tuned and
labelling from a cold cache. So the CUDA path differs from the one tested here only in the device's name."""

from __future__ import annotations

import torch
from conftest import real_job

from nas.compute import on_host, strict_devices
from nas.store.records import metric_value

SCHEDULE = """
name: strict-devices
teacher: minilm-l6
dataset: {name: bbc-news, max_rows: 150}
task: classification
search_space: tiny
compute: {device: cpu}
latency: {device: cpu, batch: 1, seq_len: 32, threads: 1, warmup: 2, min_runs: 5, max_runs: 20}
budgets: {trials: 4, max_seq_len: 32, teacher_epochs: 1}
search:
  strategy: evolution
  population: 2
  supernet: {steps: 2, n_random: 1, rewire_rows: 16}
  final: {top_k: 1, epochs: 1, one_step_baseline: false, augment: 1}
hpo: {algorithm: optuna-tpe, samples: 2, sample_fraction: 0.5, epochs: 1, reports: 1, top_k: 1, space: relevance}
references: [tfidf-linear]
seed: 5
"""


def test_the_hook_makes_the_default_device_meta_and_the_host_stays_explicit(monkeypatch):
    monkeypatch.setenv("NAS_STRICT_DEVICES", "1")
    with strict_devices():
        assert torch.zeros(2).device.type == "meta"
        with on_host():
            assert torch.zeros(2).device.type == "cpu"
        assert torch.as_tensor([1, 2], device="cpu").device.type == "cpu"
    assert torch.zeros(2).device.type == "cpu"  # restored
    monkeypatch.delenv("NAS_STRICT_DEVICES")
    with strict_devices():
        assert torch.zeros(2).device.type == "cpu"  # without the hook it changes nothing


def _check_trained(store, job_id: int, kinds: set[str]) -> None:
    trials = store.trials(job_id)
    failed = [(t["kind"], t["error"]) for t in trials if t["state"] == "FAILED"]
    assert not failed, failed
    assert kinds <= {t["kind"] for t in trials}
    for t in trials:
        if t["kind"] in ("student", "assistant", "hpo-full") and t["state"] == "COMPLETE":
            acc = metric_value(t, "accuracy", "dev", "final")
            if acc is not None:
                assert 0.0 <= acc <= 1.0
        if t["kind"] in ("teacher", "student", "assistant", "supernet") and t["state"] == "COMPLETE":
            assert t["compute"]["device"] == "cpu", (t["kind"], t["compute"])


def test_a_job_runs_with_torchs_default_device_set_to_meta(tmp_path):
    """Teacher fine-tuning and labelling, rewiring, the supernet, proxy evaluation, the AutoDisc assistants, the transfer
    set, the finals, HPO samples and full retrains, the references: all on explicitly named devices."""
    home = tmp_path / "home"
    home.mkdir()
    env = {"NAS_STRICT_DEVICES": "1", "NAS_CACHE": str(tmp_path / "cache")}
    with real_job(home, SCHEDULE, **env) as j:
        store, job_id = j["store"], j["job_id"]
        assert store.get_job(job_id)["status"] == "COMPLETE"
        _check_trained(store, job_id, {"teacher", "supernet", "assistant", "student", "hpo-sample", "hpo-full",
                                       "reference"})
        teacher = store.trials(job_id, kind="teacher")[0]
        assert metric_value(teacher, "accuracy", "dev", "final") is not None
        finals = [t for t in store.trials(job_id, kind="student") if metric_value(t, "accuracy", "dev", "final")]
        assert finals, "no final was distilled"
