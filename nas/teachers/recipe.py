"""How the teacher is fine-tuned beyond the plain loop: class weights for skewed labels and early stopping on dev.
Each applies only where it can change the result (labels skewed past IMBALANCE; more than one epoch's steps), and
joins the teacher's cache key only there, so other cached teachers stay valid.

A 979-row three-class set with 65% one class gave a teacher at the majority-class rate (f1_macro 0.288): the plain
loss learns the big class first, and the last step is not the best one on dev."""

from __future__ import annotations

import math

import torch

IMBALANCE = 1.5  # largest / smallest class count in train above which the hard loss weights classes
PATIENCE = 1  # dev evaluations without a gain before fine-tuning stops


def class_weights(train_labels, num_labels: int) -> tuple | None:
    """'Balanced' weights n / (k * count_c) per class, rounded, when the train labels are skewed past IMBALANCE; else
    None (the plain loss)."""
    counts = torch.bincount(torch.as_tensor(train_labels, device="cpu"), minlength=num_labels).tolist()
    present = [c for c in counts if c > 0]
    if len(present) < 2 or max(present) / min(present) < IMBALANCE:
        return None
    n = sum(counts)
    return tuple(round(n / (len(present) * c), 4) if c else 1.0 for c in counts)


def epoch_steps(n_train: int, batch: int) -> int:
    return max(1, math.ceil(n_train / batch))


def early_stopping_applies(n_train: int, batch: int, steps: int) -> bool:
    """There is at least one dev evaluation before the last step (more than one epoch's steps)."""
    return steps > epoch_steps(n_train, batch)


def key_parts(train_labels, num_labels: int, n_train: int, batch: int, steps: int, metric: str) -> tuple:
    """What the recipe adds to the teacher's cache key: only the parts that apply."""
    parts = ()
    w = class_weights(train_labels, num_labels)
    if w:
        parts += (("class_weights", w),)
    return parts + early_stop_part(n_train, batch, steps, metric)


def early_stop_part(n_train: int, batch: int, steps: int, metric: str) -> tuple:
    """Early stopping's part of a cache key (fine-tuned teachers and student initialisers alike): only where it applies."""
    return (("early_stop", metric, PATIENCE),) if early_stopping_applies(n_train, batch, steps) else ()


class EarlyStopping:
    """An `on_step` for `distill`: after every epoch's steps, score the model on dev (the job's `metric`); keep a copy
    of the best weights; return STOP after PATIENCE evaluations without a gain. `finish()` scores the last step too
    and puts the best weights back."""

    def __init__(self, model, dev_tensors: dict, dev_labels: torch.Tensor, metric: str, every: int, compute,
                 then=None):
        self.model, self.x, self.y, self.metric, self.every, self.compute = (model, dev_tensors, dev_labels, metric,
                                                                             every, compute)
        self.then = then  # the caller's own on_step (a progress bar)
        self.best, self.best_step, self.state, self.bad, self.history = -1.0, None, None, 0, []

    def _score(self) -> float:
        from nas.distill.evaluate import predict_logits, scores

        s = scores(predict_logits(self.model, self.x, compute=self.compute.exact()), self.y)
        self.model.train()
        return s.get(self.metric, s["accuracy"])

    def _evaluate(self, step: int) -> None:
        """Score at `step`; keep the weights when they are the best so far, else count an evaluation without a gain."""
        v = self._score()
        self.history.append((step, round(v, 4)))
        if v > self.best:
            self.best, self.best_step, self.bad = v, step, 0
            self.state = {k: t.detach().to("cpu", copy=True) for k, t in self.model.state_dict().items()}
        else:
            self.bad += 1

    def __call__(self, step: int, loss: float):
        from nas.distill.loop import STOP

        if self.then:
            self.then(step, loss)
        if (step + 1) % self.every == 0:
            self._evaluate(step + 1)
            if self.bad >= PATIENCE:
                return STOP
        return None

    def state_dict(self) -> dict:
        """What a resumed run needs (nas/distill/resume.py): the best score, its step and weights, the count."""
        return {"best": self.best, "best_step": self.best_step, "state": self.state, "bad": self.bad,
                "history": list(self.history)}

    def load_state_dict(self, d: dict) -> None:
        self.best, self.best_step, self.state, self.bad = d["best"], d["best_step"], d["state"], d["bad"]
        self.history = [tuple(h) for h in d["history"]]

    def finish(self, steps_run: int) -> str:
        """After `distill`: the last step scored (unless it just was), the best weights restored; a line saying so."""
        if not self.history or self.history[-1][0] != steps_run:
            self._evaluate(steps_run)
        self.model.eval()
        if self.best_step != steps_run and self.state is not None:
            self.model.load_state_dict(self.state)
        dev = ", ".join(f"step {s}: {v}" for s, v in self.history)
        return f"early stopping on dev {self.metric}: kept step {self.best_step} of {steps_run} ({dev})"
