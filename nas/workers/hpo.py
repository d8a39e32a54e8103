"""What one hyperparameter configuration does inside a Ray worker: distil the shape with it, report dev scores."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable

from ray import tune

from nas.context import JobContext
from nas.workers.setup import with_oom_retry, worker_setup


@dataclass
class HPOTask:
    """What the configurations of one shape share: the shape, the defaults they override, the sample rows and budgets."""

    shape: dict
    defaults: dict  # the search space's distill defaults
    sample_idx: list[int]  # the stratified sample of train the sample search trains on
    epochs: float  # budget of one sample configuration, over the sample
    reports: int  # dev evaluations per configuration (the early-stopping rungs)
    full_epochs: float  # the full re-training's budget, over all of train
    threads: int = 1
    aux_path: str | None = None  # the auxiliary teacher's probabilities, when the space tunes relevance_weight


def train_config(ctx: JobContext, task: HPOTask, hp: dict, rows: list[int], epochs: float, seed: int, reports: int = 1,
                 on_report: Callable[[dict], None] | None = None, with_test: bool = False) -> dict:
    """Distil the task's shape from the teacher with `hp` on train `rows` for `epochs`; dev scores `reports` times (evenly
    over the steps) passed to `on_report`; returns the last scores (+ test when asked) and the training seconds."""
    import torch

    from nas.distill.evaluate import predict_logits, scores
    from nas.distill.loop import DistillSettings, distill, steps_for
    from nas.students.bert_slice import extract_subnet
    from nas.students.shape import Shape
    from nas.teachers.load import load_teacher

    tensors, labels = worker_setup(ctx, task.threads)
    teacher_logits = torch.load(ctx.teacher["logits_path"])
    aux = torch.load(task.aux_path) if task.aux_path else None
    teacher = load_teacher(ctx.source)  # what students slice (and whose hidden states they may match)
    settings = DistillSettings.from_dict({**task.defaults, **hp})
    if settings.relevance_weight > 0 and aux is None:
        settings.relevance_weight = 0.0  # no auxiliary teacher in this job: the axis is inert
    needs_teacher = settings.hidden_weight > 0 or settings.attention_weight > 0
    train = torch.as_tensor(rows, device="cpu")
    dev = torch.as_tensor(ctx.dev_idx, device="cpu")
    steps = steps_for(len(train), settings.batch_size, epochs, None)
    marks = sorted({max(1, round(steps * (r + 1) / reports)) for r in range(reports)})
    state: dict = {}
    box: dict = {}  # the student of the current attempt

    def evaluate(step: int) -> None:
        state["train_s"] += time.perf_counter() - state["t"]
        dev_scores = scores(predict_logits(box["student"], {k: v[dev] for k, v in tensors.items()},
                                           compute=ctx.compute.exact()), labels[dev])
        box["student"].train()
        state.update(dev_scores, steps=step, data_seen=step * settings.batch_size, t=time.perf_counter())
        if on_report:
            on_report({**dev_scores, "steps": step, "data_seen": step * settings.batch_size,
                       "train_s": state["train_s"]})

    def on_step(step: int, loss: float) -> None:
        if step + 1 in marks:
            evaluate(step + 1)

    def train_once(accumulate: int):
        box["student"] = extract_subnet(teacher, Shape.from_dict(task.shape))
        state.clear()
        state.update(train_s=0.0, t=time.perf_counter())
        distill(box["student"], {k: v[train] for k, v in tensors.items()}, labels[train], teacher_logits[train],
                settings, steps, seed=seed, on_step=on_step, teacher=teacher if needs_teacher else None,
                aux_probs=aux[train] if (aux is not None and settings.relevance_weight > 0) else None,
                compute=ctx.compute, accumulate=accumulate)

    with_oom_retry(train_once)  # out of GPU memory: once more at half the batch, accumulated
    student = box["student"]
    out = {k: state[k] for k in ("accuracy", "f1_macro", "steps", "train_s")}
    if with_test:
        test = torch.as_tensor(ctx.test_idx, device="cpu")
        out["test"] = scores(predict_logits(student, {k: v[test] for k, v in tensors.items()}, compute=ctx.compute.exact()),
                             labels[test])
    return out


def hpo_trainable(config: dict, ctx: JobContext, task: HPOTask) -> None:
    """One sample configuration as a Ray Tune trainable: dev scores reported at every rung."""
    train_config(ctx, task, config, task.sample_idx, task.epochs, ctx.seed, task.reports,
                 on_report=lambda m: tune.report(m))


def full_retrain_task(ctx: JobContext, task: HPOTask, hp: dict, seed: int) -> dict:
    """One configuration re-trained on all of train, scored on dev and test."""
    return train_config(ctx, task, hp, ctx.train_idx, task.full_epochs, seed, reports=1, with_test=True)
