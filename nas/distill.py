"""Distillation losses and the distillation loop.

Each loss is a plain function whose docstring gives the tensor shapes; `LOSSES` maps names to functions so a configuration
composes losses by name with weights (TextBrewer's way).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F


def soft_kl(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float = 2.0) -> torch.Tensor:
    """KL(teacher || student) on temperature-softened distributions, scaled by T^2. logits: (batch, classes)."""
    t = temperature
    return F.kl_div(F.log_softmax(student_logits / t, -1), F.log_softmax(teacher_logits / t, -1),
                    reduction="batchmean", log_target=True) * t * t


def soft_mse(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """MSE between raw logits (Tencent's query-doc recipe). logits: (batch, classes)."""
    return F.mse_loss(student_logits, teacher_logits)


def hard_ce(student_logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Cross-entropy against gold labels. logits: (batch, classes); labels: (batch,) int64."""
    return F.cross_entropy(student_logits, labels)


LOSSES: dict[str, Callable[..., torch.Tensor]] = {"soft_kl": soft_kl, "soft_mse": soft_mse, "hard_ce": hard_ce}


@dataclass
class DistillSettings:
    lr: float = 1e-3
    alpha_soft: float = 0.5
    beta_hard: float = 0.5
    temperature: float = 2.0
    warmup_ratio: float = 0.1
    batch_size: int = 32
    weight_decay: float = 0.01
    soft_loss: str = "soft_kl"


def trim_padding(inputs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Drop the padding columns every row of a right-padded batch shares (BERT's outputs at real tokens do not change:
    padded keys are masked out). Batches of short sentences padded to a long max_len run several times faster."""
    mask = inputs.get("attention_mask")
    if mask is None or mask.dim() != 2:
        return inputs
    width = max(1, int(mask.sum(1).max()))
    if width >= mask.shape[1]:
        return inputs
    return {k: (v[:, :width] if v.dim() == 2 and v.shape[1] == mask.shape[1] else v) for k, v in inputs.items()}


def linear_schedule(optimizer, total_steps: int, warmup_ratio: float):
    warm = max(1, int(total_steps * warmup_ratio))

    def factor(step: int) -> float:
        if step < warm:
            return (step + 1) / warm
        return max(0.0, (total_steps - step) / max(1, total_steps - warm))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def batches(n: int, batch_size: int, steps: int, seed: int):
    """`steps` batches of indices into range(n): shuffled epochs, deterministic by seed."""
    rng = np.random.default_rng(seed)
    order = rng.permutation(n)
    pos = 0
    for _ in range(steps):
        if pos + batch_size > n:
            order = rng.permutation(n)
            pos = 0
        yield order[pos:pos + batch_size]
        pos += batch_size


def distill(student, tensors: dict[str, torch.Tensor], labels: torch.Tensor, teacher_logits: torch.Tensor | None,
            settings: DistillSettings, steps: int, seed: int = 0,
            on_step: Callable[[int, float], None] | None = None, hard_mask: torch.Tensor | None = None) -> dict:
    """Train `student` on rows given by `tensors` (input_ids etc., (n, seq)), `labels` (n,) and, when given, the teacher's
    logits for the same rows (n, classes). `hard_mask` (n,) bool: rows that take the hard loss (default all); the others
    are learnt from the soft targets alone. Raises FloatingPointError on a NaN/inf loss."""
    torch.manual_seed(seed)
    student.train()
    opt = torch.optim.AdamW(student.parameters(), lr=settings.lr, weight_decay=settings.weight_decay)
    sched = linear_schedule(opt, steps, settings.warmup_ratio)
    soft = LOSSES[settings.soft_loss]
    n = len(labels)
    t0 = time.perf_counter()
    last = float("nan")
    for step, idx in enumerate(batches(n, min(settings.batch_size, n), steps, seed)):
        idx_t = torch.as_tensor(idx)
        inputs = trim_padding({k: v[idx_t] for k, v in tensors.items()})
        logits = student(**inputs).logits
        if hard_mask is None:
            loss = settings.beta_hard * hard_ce(logits, labels[idx_t])
        else:  # rows without a gold label (teacher-labelled augmentations) get the soft loss only
            keep = hard_mask[idx_t]
            loss = settings.beta_hard * (F.cross_entropy(logits[keep], labels[idx_t][keep], reduction="sum")
                                         / max(1, len(idx_t))) if bool(keep.any()) else logits.sum() * 0.0
        if teacher_logits is not None and settings.alpha_soft > 0:
            loss = loss + settings.alpha_soft * soft(logits, teacher_logits[idx_t], settings.temperature)
        if not torch.isfinite(loss):
            raise FloatingPointError(f"loss is {loss.item()} at step {step}")
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(student.parameters(), 1.0)
        opt.step()
        sched.step()
        last = loss.item()
        if on_step:
            on_step(step, last)
    student.eval()
    return {"steps": steps, "final_loss": last, "train_s": time.perf_counter() - t0}


def length_order(tensors: dict[str, torch.Tensor]) -> torch.Tensor:
    """Row order by true length (shortest first), so that batches of similar length trim most of their padding."""
    mask = tensors.get("attention_mask")
    n = len(next(iter(tensors.values())))
    return torch.argsort(mask.sum(1), stable=True) if mask is not None and mask.dim() == 2 else torch.arange(n)


@torch.inference_mode()
def predict_logits(model, tensors: dict[str, torch.Tensor], batch_size: int = 64) -> torch.Tensor:
    """Logits (n, classes) in row order; rows are batched by length and padding trimmed (same values, less work)."""
    model.eval()
    n = len(next(iter(tensors.values())))
    if n == 0:
        return torch.empty(0)
    order = length_order(tensors)
    outs = []
    for i in range(0, n, batch_size):
        rows = order[i:i + batch_size]
        outs.append(model(**trim_padding({k: v[rows] for k, v in tensors.items()})).logits.float())
    out = torch.cat(outs)
    return out[torch.argsort(order)]


def scores(logits: torch.Tensor, labels: torch.Tensor) -> dict[str, float]:
    pred = logits.argmax(-1)
    acc = (pred == labels).float().mean().item()
    f1s = []
    for c in torch.unique(labels):
        tp = ((pred == c) & (labels == c)).sum().item()
        fp = ((pred == c) & (labels != c)).sum().item()
        fn = ((pred != c) & (labels == c)).sum().item()
        f1s.append(0.0 if tp == 0 else 2 * tp / (2 * tp + fp + fn))
    return {"accuracy": acc, "f1_macro": float(np.mean(f1s))}


def steps_for(n_train: int, batch_size: int, epochs: float, steps: int | None) -> int:
    return int(steps) if steps else max(1, math.ceil(epochs * n_train / min(batch_size, max(1, n_train))))
