"""A teacher that learned nothing is never distilled in silence. On a small imbalanced slice (built here: three BBC
News categories, 65% one of them), fine-tuning takes at least MIN_TEACHER_STEPS steps and the teacher beats the
majority class on f1_macro; a teacher made to learn nothing (`teacher_epochs: 0`, its head as initialised) stops the
job before anything is distilled, with the message in the CLI, the job's status and on the teacher's trial; with
`teacher_check: {majority: warn}` the job goes on and the warning stays on the teacher's trial."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
from conftest import job_environment, real_job, write_csv

from nas.teachers.load import MIN_TEACHER_STEPS, teacher_steps


def imbalanced_csv(path):
    from nas.data import bbc_articles

    by = {}
    for category, text in bbc_articles():
        by.setdefault(category, []).append(" ".join(text.split()[:60]))
    rows = [[t, "sports"] for t in by["sports"][:130]] + [[t, "tech"] for t in by["tech"][:36]] + \
           [[t, "business"] for t in by["business"][:34]]
    return write_csv(path, ["text", "label"], rows)


SPEC = """
name: {name}
teacher: minilm-l6
dataset: {data}
task: classification
search_space: tiny
objectives: {{metric: f1_macro}}
latency: {{device: cpu, batch: 1, seq_len: 32, threads: 1, warmup: 2, min_runs: 5, max_runs: 20}}
budgets: {{trials: 1, epochs: 1, max_seq_len: 32, teacher_epochs: {epochs}}}
{extra}
seed: 0
"""


def test_minimum_steps():
    assert teacher_steps(100, 3) == MIN_TEACHER_STEPS and teacher_steps(100_000, 1) > MIN_TEACHER_STEPS
    assert teacher_steps(100, 0) == 0


def test_imbalanced_slice_teacher_beats_the_majority(tmp_path):
    from nas.store.records import metric_value

    data = imbalanced_csv(tmp_path / "skew.csv")
    with real_job(tmp_path, SPEC.format(name="skew", data=data, epochs=1, extra="")) as j:
        store, job_id = j["store"], j["job_id"]
        assert store.get_job(job_id)["status"] == "COMPLETE"
        teacher = store.trials(job_id, kind="teacher")[0]
        majority = metric_value(teacher, "baseline_majority", "dev", "final")
        assert majority == pytest.approx(0.2623, abs=0.02)  # f1_macro of always "sport" at 65% of the rows
        assert metric_value(teacher, "f1_macro", "dev", "final") > majority + 0.1


@pytest.mark.parametrize("policy", ["stop", "warn"])
def test_a_teacher_that_learned_nothing(tmp_path, policy):
    from nas.store import Store

    data = imbalanced_csv(tmp_path / "skew.csv")
    extra = "teacher_check: {majority: warn}" if policy == "warn" else ""
    (tmp_path / "job.yaml").write_text(SPEC.format(name=f"nothing-{policy}", data=data, epochs=0, extra=extra))
    db = tmp_path / "nas.db"
    with job_environment(tmp_path):
        r = subprocess.run([sys.executable, "-m", "nas.ui.cli", "run", str(tmp_path / "job.yaml"), "--storage",
                            f"sqlite:///{db}", "-q"], capture_output=True, text=True, timeout=900)
    store = Store(f"sqlite:///{db}")
    job = store.list_jobs()[0]
    teacher = store.trials(job["id"], kind="teacher")[0]
    assert "the teacher learned nothing" in (teacher["error"] or "")
    students = store.trials(job["id"], kind="student")
    if policy == "stop":
        assert r.returncode == 1 and "job stopped: the teacher learned nothing" in r.stderr
        assert "nothing was distilled" in r.stderr and "teacher_check" in r.stderr
        assert job["status"] == "FAILED" and "learned nothing" in job["error"]
        assert students == []
    else:
        assert r.returncode == 0, r.stderr[-2000:]
        assert "warning: the teacher learned nothing" in r.stdout
        assert job["status"] == "COMPLETE" and len(students) == 1
    assert np.isfinite(teacher["metrics"][0]["value"])


def test_class_weights_and_early_stopping_apply_only_where_they_can_change_the_teacher():
    from nas.teachers import recipe

    assert recipe.class_weights([0] * 50 + [1] * 50, 2) is None and recipe.class_weights([0] * 55 + [1] * 45, 2) is None
    w = recipe.class_weights([0] * 65 + [1] * 20 + [2] * 15, 3)
    assert w[0] < 1 < w[1] < w[2] and w == pytest.approx((100 / 195, 100 / 60, 100 / 45), abs=1e-3)
    assert recipe.key_parts([0, 1] * 50, 2, 100, 32, 4, "accuracy") == ()  # one epoch's steps: nothing to stop
    assert recipe.key_parts([0, 1] * 50, 2, 100, 32, 8, "f1_macro") == (("early_stop", "f1_macro", recipe.PATIENCE),)


@pytest.mark.parametrize("soft", [False, True], ids=["fine-tuned", "distilled from logits"])
def test_early_stopping_keeps_the_best_epoch_on_dev(tmp_path, soft):
    """A tiny random BERT fine-tuned for 8 epochs' steps on a rule it barely learns: dev is scored after every epoch,
    training stops after PATIENCE evaluations without a gain (here at step 30 of 75), and the weights kept score the
    best dev figure seen, not the last one. A student initialiser distilled from a teacher's logits (`soft_from`)
    keeps its best epoch the same way."""
    import torch
    from transformers import BertConfig, BertForSequenceClassification

    from nas.compute import CPU
    from nas.distill.evaluate import predict_logits, scores
    from nas.teachers import load as tl

    torch.manual_seed(0)
    model = BertForSequenceClassification(BertConfig(vocab_size=50, hidden_size=32, num_hidden_layers=1,
                                                     num_attention_heads=2, intermediate_size=64, num_labels=2))
    ids = torch.randint(5, 50, (400, 12))
    labels = (ids[:, 1] > 27).long()  # the second token decides
    tensors = {"input_ids": ids, "attention_mask": torch.ones_like(ids)}
    splits = {"train": np.arange(0, 300), "dev": np.arange(300, 400)}
    soft_from = None
    if soft:  # a teacher that knows the rule
        soft_from = str(tmp_path / "logits.pt")
        torch.save(4.0 * torch.nn.functional.one_hot(labels, 2).float() - 2.0, soft_from)
    lines = []
    returned = tl.fine_tune(model, tensors, labels, splits, 2, 0, 8, lines.append, CPU, soft_from, "accuracy")
    note = next(x for x in lines if x.startswith("early stopping on dev accuracy"))
    assert returned == note  # what prepare_teacher keeps in teacher.json
    history = [float(v) for v in note.split("(")[1].rstrip(")").replace("step ", "").split(", ")
               for v in [v.split(": ")[1]]]
    kept = scores(predict_logits(model, {k: v[300:] for k, v in tensors.items()}), labels[300:])["accuracy"]
    assert kept == pytest.approx(max(history), abs=1e-4), (note, kept)
    assert len(history) >= 2, note


def test_the_student_initialisers_epochs_join_its_cache_key(nas_home):
    """The initialiser's own `budgets.student_init_epochs` (default: teacher_epochs) is part of its cache key, and past
    one epoch so is its early stopping, and so are its lr and soft loss: a job asking for another recipe does not read
    an initialiser trained by the old one, nor the teacher's entry."""
    from nas.data import load_dataset
    from nas.spec.job import Budgets, DatasetRef
    from nas.teachers import recipe
    from nas.teachers.load import init_recipe, teacher_cache_dir

    assert Budgets().init_epochs() == Budgets().teacher_epochs
    assert Budgets(teacher_epochs=1, student_init_epochs=3).init_epochs() == 3
    ds = load_dataset(DatasetRef(name="bbc-news", max_rows=150), "classification", 0)
    keys = {e: teacher_cache_dir("minilm-l6", ds, 0, e, 32, soft_from="/x/logits.pt").name for e in (1, 3)}
    assert keys[1] != keys[3] and keys[1] != teacher_cache_dir("minilm-l6", ds, 0, 1, 32).name
    # its lr, soft loss, hidden-state weight and length grouping join the key only where they are not the defaults (earlier entries
    # keep theirs)
    recipes = [init_recipe(Budgets()), init_recipe(Budgets(student_init_lr=2e-4)),
               init_recipe(Budgets(student_init_soft_loss="soft_mse")), init_recipe(Budgets(student_init_hidden=1.0)),
               init_recipe(Budgets(student_init_length_groups=50))]
    named = [teacher_cache_dir("minilm-l6", ds, 0, 1, 32, soft_from="/x/logits.pt", **r).name for r in recipes]
    assert named[0] == keys[1] and len(set(named)) == 5
    assert recipe.early_stop_part(len(ds.labels), 32, 3 * len(ds.labels), "accuracy") and \
        not recipe.early_stop_part(len(ds.labels), 32, 1, "accuracy")
