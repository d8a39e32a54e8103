"""Supernet training by the sandwich rule.

Each step draws one batch and runs the largest shape of the space, the smallest, and `n_random` random ones through
`supernet_forward`; each is distilled from the teacher (soft KL on precomputed teacher logits + hard CE + hidden-state MSE
against the teacher's matching layer, sliced to the shape's hidden size). Gradients of all shapes are summed, then one
clipped AdamW step with linear warm-up/decay. A checkpoint (model, optimizer, scheduler, step, RNG) is written atomically
every `checkpoint_every` steps; a run started on an existing checkpoint continues from it."""

from __future__ import annotations

import copy
import itertools
import pathlib
import time
from typing import Callable

import numpy as np
import torch

from nas.compute import CPU, Compute
from nas.distill.loop import (DistillSettings, batches, linear_schedule, optimizer_update, row_lengths,
                             trim_padding)
from nas.distill.losses import LOSSES, hard_ce, hidden_mse
from nas.paths import save_atomic
from nas.search.space import all_shapes, sample_shape
from nas.spec.space import StudentSpace
from nas.students.bert_slice import check_shape, supernet_forward
from nas.students.shape import Shape


def _size_key(s: Shape) -> tuple:
    return (s.layers, s.hidden, s.ffn, s.heads)


def largest_shape(space: StudentSpace) -> Shape:
    """The valid shape with the most layers, then hidden, then FFN, then heads."""
    shapes = all_shapes(space)
    if not shapes:
        raise ValueError("the space holds no valid shape (no hidden size divisible by any heads choice)")
    return max(shapes, key=_size_key)


def smallest_shape(space: StudentSpace) -> Shape:
    """The valid shape with the fewest layers, then hidden, then FFN, then heads."""
    shapes = all_shapes(space)
    if not shapes:
        raise ValueError("the space holds no valid shape (no hidden size divisible by any heads choice)")
    return min(shapes, key=_size_key)


def sandwich_shapes(space: StudentSpace, rng: np.random.Generator, n_random: int = 2) -> list[Shape]:
    """[largest, smallest, n_random shapes drawn by `sample_shape`] (a random one may repeat either end)."""
    return [largest_shape(space), smallest_shape(space)] + [sample_shape(space, rng) for _ in range(n_random)]


def sandwich_backward(model, shapes: list[Shape], inputs: dict[str, torch.Tensor], t_logits: torch.Tensor,
                      y: torch.Tensor, t_hidden: list[torch.Tensor] | None, n_teacher_layers: int,
                      settings: DistillSettings, hidden_weight: float, dropout: bool, step: int,
                      compute: Compute = CPU, scaler=None) -> dict[str, float]:
    """Backward the loss of each shape of one sandwich on one batch (gradients add up in the shared weights), forward
    and loss in `compute`'s precision; returns each shape's loss. t_logits (batch, classes); y (batch,); t_hidden: the
    teacher's hidden states or None; all on the compute device."""
    soft = LOSSES[settings.soft_loss]
    out = {}
    for shape in shapes:
        with compute.autocast():
            logits, hidden = supernet_forward(model, shape, inputs, output_hidden_states=t_hidden is not None,
                                              train=dropout)
            loss = settings.beta_hard * hard_ce(logits, y)
            if settings.alpha_soft > 0:
                loss = loss + settings.alpha_soft * soft(logits, t_logits, settings.temperature)
            if t_hidden is not None:
                loss = loss + hidden_weight * hidden_mse(hidden, t_hidden, n_teacher_layers, inputs.get("attention_mask"))
        if not torch.isfinite(loss):
            raise FloatingPointError(f"loss is {loss.item()} at step {step} for shape {shape.key}")
        (scaler.scale(loss) if scaler is not None else loss).backward()
        out[shape.key] = loss.item()
    return out


def restore(ckpt: dict | None, model, opt, sched, seed: int) -> tuple[int, list[float]]:
    """Model, optimizer, scheduler and RNG from a checkpoint (or a fresh seed); returns (steps done, losses so far)."""
    if ckpt is None:
        torch.manual_seed(seed)
        return 0, []
    model.load_state_dict(ckpt["model"])
    opt.load_state_dict(ckpt["optimizer"])
    sched.load_state_dict(ckpt["scheduler"])
    torch.set_rng_state(ckpt["torch_rng"])
    if "cuda_rng" in ckpt and torch.cuda.is_available():
        torch.cuda.set_rng_state(ckpt["cuda_rng"])
    return ckpt["step"], list(ckpt["losses"])


def load_checkpoint(path: pathlib.Path | None, meta: dict) -> dict | None:
    """The checkpoint at `path` (on the CPU) when there is one; ValueError when it is from another run."""
    # weights_only: a checkpoint is tensors and plain numbers; nothing read from disk is unpickled as code
    ckpt = torch.load(path, weights_only=True, map_location="cpu") if path and path.is_file() else None
    if ckpt is not None and ckpt["meta"] != meta:
        raise ValueError(f"checkpoint {path} is from another run: {ckpt['meta']} != {meta}")
    return ckpt


def frozen_teacher(model, teacher, hidden_weight: float, ckpt: dict | None):
    """The model whose hidden states are matched: `teacher`, or (None, with a hidden loss) a frozen copy of `model`
    before its first step (restored from the checkpoint on a resume). Returns (teacher or None, whether it is our copy)."""
    if teacher is model:
        raise ValueError("teacher must be a separate frozen copy, not the model being trained")
    own = teacher is None and hidden_weight > 0
    if own:
        teacher = copy.deepcopy(model)
        if ckpt is not None:
            teacher.load_state_dict(ckpt["teacher"])
    if teacher is not None:
        teacher.eval().requires_grad_(False)
    return teacher, own


def train_supernet(model, teacher_logits: torch.Tensor, tensors: dict[str, torch.Tensor], labels: torch.Tensor,
                   train_idx, space: StudentSpace, steps: int, settings: DistillSettings, n_random: int = 2,
                   hidden_weight: float = 1.0, seed: int = 0, teacher=None, dropout: bool = True,
                   checkpoint_path: str | pathlib.Path | None = None, checkpoint_every: int = 100,
                   on_step: Callable[[int, float], None] | None = None, compute: Compute = CPU) -> dict:
    """Train the shared weights of `model` (a rewired teacher of any family in nas/teachers) in place by the sandwich rule.

    tensors: input_ids etc. (n, seq) and labels (n,) for the whole dataset; teacher_logits (n, classes) precomputed on the
    same rows; train_idx: the rows to train on. Loss per shape = alpha_soft * soft(T) + beta_hard * CE + hidden_weight *
    `hidden_mse`; the sandwich's losses are summed. `teacher` is the model whose hidden states are matched; None takes a
    frozen copy of `model` before the first step (the rewired teacher: its hidden dims are in the supernet's order) and
    keeps it in the checkpoint. on_step(step, loss) gets the absolute 0-based step and the mean loss over the sandwich.
    Shapes of step s come from default_rng((seed, s)), batches from `distill.batches(seed)`, so a resumed run replays
    exactly what an uninterrupted one would. Each batch is moved to `compute`'s device and trained in its precision;
    the model comes back to the CPU at the end. Raises FloatingPointError on a NaN/inf loss, ValueError on a shape larger
    than `model` or a checkpoint from another run.
    Returns {"steps", "resumed_from", "final_loss", "losses" (per step), "shape_losses" (last step, by shape key),
    "train_s", "step_s"}.
    """
    cfg = model.config
    for s in (largest_shape(space), smallest_shape(space)):
        check_shape(cfg, s)
    train_idx = torch.as_tensor(np.asarray(train_idx), dtype=torch.long, device="cpu")
    ckpt_path = pathlib.Path(checkpoint_path) if checkpoint_path else None
    meta = {"seed": seed, "steps": steps, "n_random": n_random, "batch_size": settings.batch_size, "n": len(train_idx),
            **({"length_groups": settings.length_groups} if settings.length_groups > 0 else {})}
    ckpt = load_checkpoint(ckpt_path, meta)
    teacher, own_teacher = frozen_teacher(model, teacher, hidden_weight, ckpt)
    dev = compute.device
    model.to(dev)
    if teacher is not None:
        teacher.to(dev)
        full_teacher = Shape.of_config(teacher.config)
    opt = torch.optim.AdamW(model.parameters(), lr=settings.lr, weight_decay=settings.weight_decay)
    sched = linear_schedule(opt, steps, settings.warmup_ratio)
    scaler = compute.scaler()
    start, losses = restore(ckpt, model, opt, sched, seed)

    def save(step_done: int) -> None:
        state = {"meta": meta, "step": step_done, "model": model.state_dict(), "optimizer": opt.state_dict(),
                 "scheduler": sched.state_dict(), "torch_rng": torch.get_rng_state(), "losses": losses,
                 **({"cuda_rng": torch.cuda.get_rng_state()} if compute.cuda else {})}
        if own_teacher:
            state["teacher"] = teacher.state_dict()
        save_atomic(state, ckpt_path)

    bs = min(settings.batch_size, len(train_idx))
    t0 = time.perf_counter()
    shape_losses: dict[str, float] = {}
    model.train(dropout)
    lengths = row_lengths(tensors)[train_idx.numpy()] if settings.length_groups > 0 else None
    order = batches(len(train_idx), bs, steps, seed, lengths, settings.length_groups)
    for step, pos in enumerate(itertools.islice(order, start, None), start):
        rows = train_idx[torch.as_tensor(pos, device="cpu")]
        inputs = compute.to_device(trim_padding({k: v[rows] for k, v in tensors.items()}))
        t_hidden = None
        if hidden_weight > 0:
            with torch.no_grad(), compute.autocast():
                _, t_hidden = supernet_forward(teacher, full_teacher, inputs, output_hidden_states=True)
        opt.zero_grad(set_to_none=True)
        shapes = sandwich_shapes(space, np.random.default_rng((seed, step)), n_random)
        targets = compute.to_device({"soft": teacher_logits[rows].float(), "y": labels[rows]})
        shape_losses = sandwich_backward(model, shapes, inputs, targets["soft"], targets["y"], t_hidden,
                                         teacher.config.num_hidden_layers if t_hidden is not None else 0, settings,
                                         hidden_weight, dropout, step, compute, scaler)
        optimizer_update(model, opt, sched, scaler)
        losses.append(float(np.mean(list(shape_losses.values()))))
        if on_step:
            on_step(step, losses[-1])
        if ckpt_path and ((step + 1) % checkpoint_every == 0 or step + 1 == steps):
            save(step + 1)
    model.eval().to("cpu")
    if teacher is not None:
        teacher.to("cpu")
    train_s = time.perf_counter() - t0
    done = max(0, steps - start)
    return {"steps": steps, "resumed_from": start, "final_loss": losses[-1] if losses else float("nan"),
            "losses": losses, "shape_losses": shape_losses, "train_s": train_s, "step_s": train_s / max(1, done)}
