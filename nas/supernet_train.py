"""Supernet training by the sandwich rule, and fast proxy evaluation of a shape with inherited weights.

Each step draws one batch and runs the largest shape of the space, the smallest, and `n_random` random ones through
`supernet_forward`; each is distilled from the teacher (soft KL on precomputed teacher logits + hard CE + hidden-state MSE
against the teacher's matching layer, sliced to the shape's hidden size). Gradients of all shapes are summed, then one
clipped AdamW step with linear warm-up/decay. A checkpoint (model, optimizer, scheduler, step, RNG) is written atomically
every `checkpoint_every` steps; a run started on an existing checkpoint continues from it.
"""

from __future__ import annotations

import copy
import itertools
import os
import pathlib
import time
from typing import Callable

import numpy as np
import torch

from nas.distill import LOSSES, DistillSettings, batches, hard_ce, length_order, linear_schedule, trim_padding
from nas.search.space import all_shapes, sample_shape
from nas.spec import StudentSpace
from nas.supernet import Shape, check_shape, matched_layers, supernet_forward


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


def hidden_mse(student_hidden: list[torch.Tensor], teacher_hidden: list[torch.Tensor], n_teacher_layers: int,
               attention_mask: torch.Tensor | None = None, layer_map: str = "sliced") -> torch.Tensor:
    """Mean over matched layers of the MSE between student and teacher hidden states, padded tokens left out.

    student_hidden: shape.layers + 1 tensors (batch, seq, h), embedding output first; teacher_hidden: n_teacher_layers + 1
    tensors (batch, seq, H >= h). Student embedding output <-> teacher embedding output; student layer j <-> the teacher
    layer it was sliced from (`layer_indices`), so output j + 1 <-> teacher output idx[j] + 1. Teacher states are sliced
    to their leading h dims, the dims the student keeps. attention_mask: (batch, seq), 1 = token. layer_map "uniform"
    matches student layer j to TinyBERT's teacher layer instead (`matched_layers`).
    """
    idx = matched_layers(len(student_hidden) - 1, n_teacher_layers, layer_map)
    pairs = [(student_hidden[0], teacher_hidden[0])] + [(student_hidden[j + 1], teacher_hidden[i + 1])
                                                         for j, i in enumerate(idx)]
    w = None if attention_mask is None else attention_mask.to(student_hidden[0].dtype)[..., None]  # (batch, seq, 1)
    total = student_hidden[0].new_zeros(())
    for s, t in pairs:
        sq = (s - t[..., :s.shape[-1]]) ** 2  # (batch, seq, h)
        total = total + (sq.mean() if w is None else (sq * w).sum() / (w.sum() * s.shape[-1]).clamp_min(1))
    return total / len(pairs)


def _save_atomic(obj: dict, path: pathlib.Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def train_supernet(model, teacher_logits: torch.Tensor, tensors: dict[str, torch.Tensor], labels: torch.Tensor,
                   train_idx, space: StudentSpace, steps: int, settings: DistillSettings, n_random: int = 2,
                   hidden_weight: float = 1.0, seed: int = 0, teacher=None, dropout: bool = True,
                   checkpoint_path: str | pathlib.Path | None = None, checkpoint_every: int = 100,
                   on_step: Callable[[int, float], None] | None = None) -> dict:
    """Train the shared weights of `model` (a rewired `BertForSequenceClassification`) in place by the sandwich rule.

    tensors: input_ids etc. (n, seq) and labels (n,) for the whole dataset; teacher_logits (n, classes) precomputed on the
    same rows; train_idx: the rows to train on. Loss per shape = alpha_soft * soft(T) + beta_hard * CE + hidden_weight *
    `hidden_mse`; the sandwich's losses are summed. `teacher` is the model whose hidden states are matched; None takes a
    frozen copy of `model` before the first step (the rewired teacher: its hidden dims are in the supernet's order) and
    keeps it in the checkpoint. on_step(step, loss) gets the absolute 0-based step and the mean loss over the sandwich.
    Shapes of step s come from default_rng((seed, s)), batches from `distill.batches(seed)`, so a resumed run replays
    exactly what an uninterrupted one would. Raises FloatingPointError on a NaN/inf loss, ValueError on a shape larger
    than `model` or a checkpoint from another run.
    Returns {"steps", "resumed_from", "final_loss", "losses" (per step), "shape_losses" (last step, by shape key),
    "train_s", "step_s"}.
    """
    cfg = model.config
    for s in (largest_shape(space), smallest_shape(space)):
        check_shape(cfg, s)
    train_idx = torch.as_tensor(np.asarray(train_idx), dtype=torch.long)
    ckpt_path = pathlib.Path(checkpoint_path) if checkpoint_path else None
    meta = {"seed": seed, "steps": steps, "n_random": n_random, "batch_size": settings.batch_size, "n": len(train_idx)}
    # weights_only: a checkpoint is tensors and plain numbers; nothing read from disk is unpickled as code
    ckpt = torch.load(ckpt_path, weights_only=True) if ckpt_path and ckpt_path.is_file() else None
    if ckpt is not None and ckpt["meta"] != meta:
        raise ValueError(f"checkpoint {ckpt_path} is from another run: {ckpt['meta']} != {meta}")

    if teacher is model:
        raise ValueError("teacher must be a separate frozen copy, not the model being trained")
    own_teacher = teacher is None and hidden_weight > 0
    if own_teacher:
        teacher = copy.deepcopy(model)
        if ckpt is not None:
            teacher.load_state_dict(ckpt["teacher"])
    if teacher is not None:
        teacher.eval().requires_grad_(False)
        full_teacher = Shape.of_config(teacher.config)

    opt = torch.optim.AdamW(model.parameters(), lr=settings.lr, weight_decay=settings.weight_decay)
    sched = linear_schedule(opt, steps, settings.warmup_ratio)
    start, losses = 0, []
    if ckpt is not None:
        model.load_state_dict(ckpt["model"])
        opt.load_state_dict(ckpt["optimizer"])
        sched.load_state_dict(ckpt["scheduler"])
        torch.set_rng_state(ckpt["torch_rng"])
        start, losses = ckpt["step"], list(ckpt["losses"])
    else:
        torch.manual_seed(seed)

    def save(step_done: int) -> None:
        state = {"meta": meta, "step": step_done, "model": model.state_dict(), "optimizer": opt.state_dict(),
                 "scheduler": sched.state_dict(), "torch_rng": torch.get_rng_state(), "losses": losses}
        if own_teacher:
            state["teacher"] = teacher.state_dict()
        _save_atomic(state, ckpt_path)

    soft = LOSSES[settings.soft_loss]
    bs = min(settings.batch_size, len(train_idx))
    t0 = time.perf_counter()
    shape_losses: dict[str, float] = {}
    model.train(dropout)
    for step, pos in enumerate(itertools.islice(batches(len(train_idx), bs, steps, seed), start, None), start):
        rows = train_idx[torch.as_tensor(pos)]
        inputs = trim_padding({k: v[rows] for k, v in tensors.items()})
        t_logits, y = teacher_logits[rows].float(), labels[rows]
        t_hidden = None
        if hidden_weight > 0:
            with torch.no_grad():
                _, t_hidden = supernet_forward(teacher, full_teacher, inputs, output_hidden_states=True)
        opt.zero_grad(set_to_none=True)
        shape_losses = {}
        for shape in sandwich_shapes(space, np.random.default_rng((seed, step)), n_random):
            logits, hidden = supernet_forward(model, shape, inputs, output_hidden_states=t_hidden is not None,
                                              train=dropout)
            loss = settings.beta_hard * hard_ce(logits, y)
            if settings.alpha_soft > 0:
                loss = loss + settings.alpha_soft * soft(logits, t_logits, settings.temperature)
            if t_hidden is not None:
                loss = loss + hidden_weight * hidden_mse(hidden, t_hidden, teacher.config.num_hidden_layers,
                                                         inputs.get("attention_mask"))
            if not torch.isfinite(loss):
                raise FloatingPointError(f"loss is {loss.item()} at step {step} for shape {shape.key}")
            loss.backward()  # gradients of the sandwich's shapes add up in the shared weights
            shape_losses[shape.key] = loss.item()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        losses.append(float(np.mean(list(shape_losses.values()))))
        if on_step:
            on_step(step, losses[-1])
        if ckpt_path and ((step + 1) % checkpoint_every == 0 or step + 1 == steps):
            save(step + 1)
    model.eval()
    train_s = time.perf_counter() - t0
    done = max(0, steps - start)
    return {"steps": steps, "resumed_from": start, "final_loss": losses[-1] if losses else float("nan"),
            "losses": losses, "shape_losses": shape_losses, "train_s": train_s, "step_s": train_s / max(1, done)}


def _by_length(shape_fn, tensors: dict[str, torch.Tensor], idx, batch_size: int) -> torch.Tensor:
    """`shape_fn(batch)` over rows `idx` in length-sorted batches with padding trimmed, rows back in `idx` order."""
    idx = torch.as_tensor(np.asarray(idx), dtype=torch.long)
    if len(idx) == 0:
        raise ValueError("no rows to evaluate")
    sub = {k: v[idx] for k, v in tensors.items()}
    order = length_order(sub)
    with torch.inference_mode():
        out = torch.cat([shape_fn(trim_padding({k: v[order[i:i + batch_size]] for k, v in sub.items()}))
                         for i in range(0, len(idx), batch_size)])
    return out[torch.argsort(order)]


def shape_logits(model, shape: Shape, tensors: dict[str, torch.Tensor], idx, batch_size: int = 64) -> torch.Tensor:
    """Logits (len(idx), classes) of `shape` with inherited weights on rows `idx`; tensors (n, seq)."""
    return _by_length(lambda b: supernet_forward(model, shape, b)[0], tensors, idx, batch_size)


def shape_features(model, shape: Shape, tensors: dict[str, torch.Tensor], idx, batch_size: int = 64) -> torch.Tensor:
    """Sentence features (len(idx), 2 * shape.hidden) of `shape` with inherited weights: the last layer's [CLS] state
    and the mean of its token states (padding excluded)."""
    def features(b):
        h = supernet_forward(model, shape, b, output_hidden_states=True)[1][-1]
        m = b["attention_mask"][..., None].to(h.dtype) if "attention_mask" in b else torch.ones_like(h[..., :1])
        return torch.cat([h[:, 0], (h * m).sum(1) / m.sum(1).clamp_min(1)], 1)

    return _by_length(features, tensors, idx, batch_size)


def probe_logits(model, shape: Shape, tensors: dict[str, torch.Tensor], labels: torch.Tensor, fit_idx, idx,
                 c: float = 1.0) -> torch.Tensor:
    """A `probe` proxy: log-probabilities (len(idx), classes) of a logistic regression fitted on the sub-network's
    inherited sentence features (`shape_features`) of train rows `fit_idx`, applied to rows `idx`. Unlike the inherited
    classifier head, which every sub-network shares with the largest, the probe reads what the shape's own
    representation knows; rows `fit_idx` must not include `idx`."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    fit_idx = np.asarray(fit_idx)
    if len(np.intersect1d(fit_idx, np.asarray(idx))):
        raise ValueError("probe rows overlap the rows it is evaluated on")
    y = labels[torch.as_tensor(fit_idx, dtype=torch.long)].numpy()
    x_fit = shape_features(model, shape, tensors, fit_idx).numpy()
    scaler = StandardScaler().fit(x_fit)
    clf = LogisticRegression(C=c, max_iter=2000).fit(scaler.transform(x_fit), y)
    proba = clf.predict_proba(scaler.transform(shape_features(model, shape, tensors, idx).numpy()))
    logp = np.log(np.clip(proba, 1e-12, 1.0))  # finite: a saturated class must not turn into -inf downstream (AUC)
    n_classes = int(labels.max()) + 1
    out = torch.full((len(logp), n_classes), -1e9, dtype=torch.float32)
    out[:, torch.as_tensor(clf.classes_, dtype=torch.long)] = torch.as_tensor(logp, dtype=torch.float32)
    return out


def evaluate_shape(model, shape: Shape, tensors: dict[str, torch.Tensor], labels: torch.Tensor, idx,
                   batch_size: int = 64) -> float:
    """Accuracy of `shape` with inherited weights (a `proxy` metric) on rows `idx`; tensors (n, seq), labels (n,)."""
    logits = shape_logits(model, shape, tensors, idx, batch_size)
    return float((logits.argmax(-1) == labels[torch.as_tensor(np.asarray(idx), dtype=torch.long)]).float().mean())


__all__ = ["sandwich_shapes", "largest_shape", "smallest_shape", "hidden_mse", "train_supernet", "shape_logits",
           "shape_features", "probe_logits", "evaluate_shape"]
