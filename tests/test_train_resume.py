"""A teacher's fine-tuning (or a student initialiser's distillation) killed part way continues from its checkpoint and
ends where an uninterrupted run ends: the same weights, the same early-stopping line. The kill is real: the first run is
a child process, SIGKILLed once its checkpoint has a few steps in it."""

from __future__ import annotations

import os
import pathlib
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch

HERE = pathlib.Path(__file__).resolve().parent
ROOT = HERE.parent


def problem():
    """A tiny random BERT and 2,000 rows of a rule it learns slowly (the second token decides): many short steps."""
    from transformers import BertConfig, BertForSequenceClassification

    torch.manual_seed(0)
    model = BertForSequenceClassification(BertConfig(vocab_size=50, hidden_size=32, num_hidden_layers=2,
                                                     num_attention_heads=2, intermediate_size=64, num_labels=2))
    ids = torch.randint(5, 50, (2000, 16))
    labels = (ids[:, 1] > 27).long()
    tensors = {"input_ids": ids, "attention_mask": torch.ones_like(ids)}
    splits = {"train": np.arange(0, 1800), "dev": np.arange(1800, 2000)}
    return model, tensors, labels, splits


def train(checkpoint: pathlib.Path | None, soft_from: str | None) -> tuple[dict, list[str]]:
    """fine_tune on `problem()` for up to 6 epochs; the trained weights and the lines it logged."""
    from nas.compute import CPU
    from nas.teachers.load import fine_tune

    torch.set_num_threads(1)  # the same kernels in the child and here
    model, tensors, labels, splits = problem()
    lines: list[str] = []
    fine_tune(model, tensors, labels, splits, 2, 0, 6, lines.append, CPU, soft_from, "accuracy", checkpoint=checkpoint)
    return model.state_dict(), lines


CHILD = """
import sys
sys.path[:0] = [{tests!r}, {root!r}]
from test_train_resume import train
train(__import__("pathlib").Path({ckpt!r}), {soft!r})
"""


@pytest.mark.parametrize("soft", [False, True], ids=["fine-tuned", "distilled from logits"])
def test_a_killed_fine_tuning_resumes_from_its_checkpoint_to_the_uninterrupted_result(tmp_path, soft):
    threads = torch.get_num_threads()
    soft_from = None
    if soft:  # a teacher that knows the rule: the initialiser's case
        _, _, labels, _ = problem()
        soft_from = str(tmp_path / "logits.pt")
        torch.save(4.0 * torch.nn.functional.one_hot(labels, 2).float() - 2.0, soft_from)
    try:
        whole, whole_lines = train(None, soft_from)
        ckpt = tmp_path / "run.checkpoint.pt"
        env = {**os.environ, "NAS_TRAIN_CHECKPOINT_S": "0", "PYTHONPATH": str(ROOT)}
        child = subprocess.Popen([sys.executable, "-c", CHILD.format(tests=str(HERE), root=str(ROOT), ckpt=str(ckpt),
                                                                     soft=soft_from)],
                                 env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, cwd=tmp_path)
        deadline, step = time.monotonic() + 300, 0
        while step < 40 and time.monotonic() < deadline:
            assert child.poll() is None, f"the run ended before it could be killed: {child.stderr.read().decode()}"
            time.sleep(0.05)
            if ckpt.is_file():
                step = torch.load(ckpt, map_location="cpu", weights_only=False)["step"]
        os.kill(child.pid, signal.SIGKILL)
        child.wait()
        saved = torch.load(ckpt, map_location="cpu", weights_only=False)
        assert 40 <= saved["step"] < saved["steps"]
        resumed, lines = train(ckpt, soft_from)
    finally:
        torch.set_num_threads(threads)
    assert any(line.endswith(f"resumed from its checkpoint at step {saved['step']} of {saved['steps']}")
               for line in lines), lines
    stop = [x for x in lines if x.startswith("early stopping on dev accuracy")]
    assert stop and stop == [x for x in whole_lines if x.startswith("early stopping on dev accuracy")]
    diff = max((resumed[k].float() - whole[k].float()).abs().max().item() for k in whole)
    assert diff <= 1e-6, diff
    # a checkpoint of another schedule (steps) or another run (key) is not this run's: the run trains from the start
    for field, value in (("steps", saved["steps"] + 1), ("key", "another final")):
        torch.save({**saved, field: value}, ckpt)
        again, lines = train(ckpt, soft_from)
        assert not any("resumed" in line for line in lines)
        assert max((again[k].float() - whole[k].float()).abs().max().item() for k in whole) <= 1e-6


def finals_spec(seeds: int = 1) -> str:
    """The tiny supernet job with one final and no assistant (two_step false), 8 epochs: steps enough to kill it in;
    with `seeds`, that many members of the final."""
    import yaml

    from conftest import TINY_SUPERNET_SPEC

    spec = yaml.safe_load(TINY_SUPERNET_SPEC)
    spec["name"], spec["budgets"]["trials"], spec["search"]["population"] = "tiny-final-resume", 4, 2
    spec["search"].pop("autodisc")
    spec["search"]["final"] = {"top_k": 1, "epochs": 8, "two_step": False, "seeds": seeds}
    return yaml.safe_dump(spec)


def kill_everything_of(home: pathlib.Path, run: subprocess.Popen) -> None:
    """SIGKILL what a lost machine loses at once: the driver's process group and every process of the job's NAS_HOME
    (Ray's workers and raylet run in sessions of their own, and a worker would otherwise train on for a moment)."""
    mark = f"NAS_HOME={home}".encode()
    for proc in pathlib.Path("/proc").iterdir():
        try:
            ours = proc.name.isdigit() and mark in (proc / "environ").read_bytes().split(b"\0")
            if ours and int(proc.name) != os.getpid():
                os.kill(int(proc.name), signal.SIGKILL)
        except (OSError, ProcessLookupError):
            pass
    os.killpg(run.pid, signal.SIGKILL)
    run.wait()


@pytest.mark.parametrize("seeds", [1, 2])
def test_a_job_killed_mid_final_resumes_that_final_from_its_checkpoint(tmp_path, seeds):
    """`nas run` (its whole process group, Ray workers too) SIGKILLed while a final trains; `nas resume` finishes the
    job, and the final goes on from its checkpoint: its trial records the step, and the checkpoint is gone after. With
    `final.seeds: 2`, killed while the second member trains: the first member's weights on disk are kept, not retrained
    (its scores are stored once), and the second goes on from its checkpoint."""
    from nas.store import Store
    from nas.store.records import metric_value

    home = tmp_path / "home"
    home.mkdir()
    url = f"sqlite:///{home / 'nas.db'}"
    spec = tmp_path / "spec.yaml"
    spec.write_text(finals_spec(seeds))
    checkpoint = "train.checkpoint.pt" if seeds == 1 else f"train-seed{seeds - 1}.checkpoint.pt"
    env = {**os.environ, "NAS_HOME": str(home), "NAS_TRAIN_CHECKPOINT_S": "0", "RAY_USAGE_STATS_ENABLED": "0",
           "NAS_CACHE": os.environ.get("NAS_CACHE", str(ROOT / ".nas" / "test-cache")), "NAS_STORAGE": "",
           "TOKENIZERS_PARALLELISM": "false"}
    log = open(tmp_path / "run.log", "wb")
    run = subprocess.Popen([sys.executable, "-m", "nas", "run", str(spec), "--storage", url, "--quiet"], env=env,
                           stdout=log, stderr=subprocess.STDOUT, cwd=ROOT, start_new_session=True)
    deadline, found = time.monotonic() + 600, None
    while found is None and time.monotonic() < deadline and run.poll() is None:
        time.sleep(0.02)
        found = next(iter(home.rglob(checkpoint)), None)
    assert found is not None, (tmp_path / "run.log").read_text()[-3000:]
    kill_everything_of(home, run)
    first = found.parent / "seed0.pt"
    first_written = first.stat().st_mtime_ns if seeds > 1 else None
    saved = torch.load(found, map_location="cpu", weights_only=False)
    assert 1 <= saved["step"] < saved["steps"]
    store = Store(url)
    job_id = store.list_jobs()[0]["id"]
    assert store.get_job(job_id)["status"] != "COMPLETE"
    again = subprocess.run([sys.executable, "-m", "nas", "resume", str(job_id), "--storage", url, "--quiet"], env=env,
                           capture_output=True, text=True, cwd=ROOT, timeout=900)
    assert again.returncode == 0, again.stdout[-2000:] + again.stderr[-2000:]
    assert store.get_job(job_id)["status"] == "COMPLETE"
    number = int(found.parent.name.split("-")[1])
    prefix = found.parent.name.split("-", 2)[2] + "_" if found.parent.name.count("-") > 1 else ""
    trial = next(t for t in store.trials(job_id) if t["number"] == number)
    assert metric_value(trial, prefix + "resumed_from_step", "train", "final") == saved["step"]
    assert metric_value(trial, prefix + "accuracy", "test", "final") is not None
    assert not found.exists()
    if seeds > 1:
        assert first.stat().st_mtime_ns == first_written  # the first member was not trained again
        assert sum(m["name"] == "seed0_accuracy" and m["split"] == "dev" for m in trial["metrics"]) == 1
        assert metric_value(trial, f"seed{seeds - 1}_accuracy", "dev", "final") is not None
        assert metric_value(trial, "seeds", "train", "final") == seeds
    store.dispose()
