"""The distillation loop: settings, batches, schedule, one optimiser step, the intermediate losses against a teacher's
forward, and the learning rate by student size."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F

from nas.compute import CPU, Compute, device_of
from nas.distill.losses import LOSSES, attention_kl, hard_ce, hidden_mse, relevance_kl


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
    hidden_weight: float = 0.0  # hidden-state MSE against the teacher layer `layer_map` matches each student layer to
    attention_weight: float = 0.0  # attention-map KL (needs eager attention in both models)
    layer_map: str = "sliced"  # teacher layer each student layer's hidden/attention loss targets: sliced | uniform
    relevance_weight: float = 0.0  # KL to an auxiliary non-network teacher's probabilities (`aux_probs`)
    hinge_weight: float = 0.0  # pair task: hinge on (query, positive, negative) triples
    hinge_margin: float = 0.7
    class_weights: tuple | None = None  # a weight per class in the hard loss (the teacher's fine-tuning on skewed labels)
    # 1 - cosine between the student's mean-pooled final hidden state, through its `embedding_projection`, and a
    # per-row target (`distill`'s teacher_embeddings: a teacher's pooled states, whatever its tokenizer)
    embedding_weight: float = 0.0
    # > 0: batches of similar length, drawn from pools of this many batches (`batches`); less padding to compute
    length_groups: int = 0

    def __repr__(self) -> str:
        """The dataclass's repr (what keys a final's checkpoint and weights), less the settings added since at their
        defaults: a run that leaves them off keeps the key it had before they existed."""
        later = {"length_groups": 0}
        shown = [f"{k}={getattr(self, k)!r}" for k in self.__dataclass_fields__
                 if k not in later or getattr(self, k) != later[k]]
        return f"{type(self).__name__}({', '.join(shown)})"

    @classmethod
    def from_dict(cls, d: dict) -> "DistillSettings":
        """Settings from a dict with unknown keys dropped (search spaces carry keys for other stages, e.g. epochs)."""
        known = cls.__dataclass_fields__
        return cls(**{k: (type(getattr(cls, k))(v) if isinstance(getattr(cls, k), (int, float)) else v)
                      for k, v in d.items() if k in known})


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


def mean_pool(hidden: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """(batch, seq, d) hidden states averaged over each row's real tokens (`mask` (batch, seq); None: all): (batch, d)
    in fp32. The per-example summary two models with different tokenizers share (a sentence embedding)."""
    if mask is None:
        return hidden.float().mean(1)
    m = mask.to(torch.float32).unsqueeze(-1)
    return (hidden.float() * m).sum(1) / m.sum(1).clamp_min(1.0)


def linear_schedule(optimizer, total_steps: int, warmup_ratio: float):
    warm = max(1, int(total_steps * warmup_ratio))

    def factor(step: int) -> float:
        if step < warm:
            return (step + 1) / warm
        return max(0.0, (total_steps - step) / max(1, total_steps - warm))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def batches(n: int, batch_size: int, steps: int, seed: int, lengths: np.ndarray | None = None, pool: int = 0):
    """`steps` batches of indices into range(n): shuffled epochs, deterministic by seed. With `lengths` (n,) (tokens per
    row) and `pool` > 0, each epoch's batches are `length_grouped`: every row still once an epoch, the batches' order
    shuffled, but each batch of rows of similar length, so that trimming the padding leaves less to compute."""
    if lengths is not None and pool > 0:
        yield from _grouped_batches(np.asarray(lengths), batch_size, steps, seed, pool)
        return
    rng = np.random.default_rng(seed)
    order = rng.permutation(n)
    pos = 0
    for _ in range(steps):
        if pos + batch_size > n:
            order = rng.permutation(n)
            pos = 0
        yield order[pos:pos + batch_size]
        pos += batch_size


def length_grouped(order: np.ndarray, lengths: np.ndarray, batch_size: int, pool: int, rng) -> list[np.ndarray]:
    """One epoch's batches of the shuffled rows `order` (a multiple of batch_size long): cut into pools of `pool` batches,
    each pool sorted by length (longest first) and cut into batches, then all the epoch's batches in a random order (as
    Hugging Face's group_by_length sampler; the pools keep the rows that share a batch random beyond their length)."""
    out, size = [], batch_size * pool
    for i in range(0, len(order), size):
        chunk = order[i:i + size]
        chunk = chunk[np.argsort(-lengths[chunk], kind="stable")]
        out.extend(chunk[j:j + batch_size] for j in range(0, len(chunk), batch_size))
    return [out[k] for k in rng.permutation(len(out))]


def _grouped_batches(lengths: np.ndarray, batch_size: int, steps: int, seed: int, pool: int):
    rng = np.random.default_rng(seed)
    made, n = 0, len(lengths)
    while made < steps:
        order = rng.permutation(n)
        for idx in length_grouped(order[:n // batch_size * batch_size], lengths, batch_size, pool, rng):
            if made == steps:
                return
            yield idx
            made += 1


def row_lengths(tensors: dict[str, torch.Tensor]) -> np.ndarray | None:
    """Tokens per row (the attention mask's sum), or None where the inputs carry no mask."""
    mask = tensors.get("attention_mask")
    return None if mask is None or mask.dim() != 2 else mask.sum(1).numpy()


STOP = object()  # what an `on_step` callback returns to end the training after this step


def distill(student, tensors: dict[str, torch.Tensor], labels: torch.Tensor, teacher_logits: torch.Tensor | None,
            settings: DistillSettings, steps: int, seed: int = 0,
            on_step: Callable[[int, float], None] | None = None, hard_mask: torch.Tensor | None = None,
            teacher=None, aux_probs: torch.Tensor | None = None, compute: Compute = CPU, accumulate: int = 1,
            checkpoint=None, teacher_embeddings: torch.Tensor | None = None,
            teacher_input_map: torch.Tensor | None = None) -> dict:
    """Train `student` on rows given by `tensors` (input_ids etc., (n, seq)), `labels` (n,) and, when given, the teacher's
    logits for the same rows (n, classes). `hard_mask` (n,) bool: rows that take the hard loss (default all); the others
    are learnt from the soft targets alone. `teacher` (a model the student was sliced from) is run on each batch when
    the hidden-state or attention losses have weight; `aux_probs` (n, classes) are an auxiliary teacher's probabilities
    for the relevance loss. The data stay on the CPU; each batch is moved to `compute`'s device and trained in its
    precision; models go back where they were at the end. `accumulate` splits every batch into that many micro-batches
    whose gradients add up (same effective batch, less memory: the retry after an out-of-memory error). `on_step`
    returning STOP ends the training after that step. `checkpoint` (nas/distill/resume.py's TrainCheckpoint): the run
    continues from its saved state and saves it as it goes. `teacher_embeddings` (n, d): the embedding loss's targets
    (settings.embedding_weight > 0; the student then carries an `embedding_projection` module from its hidden size to
    d, trained with it). `teacher_input_map`: `teacher` reads other token ids than the student, the same tokens
    (nas/teachers/align.py: student id -> teacher id); its inputs are the student's mapped. Raises FloatingPointError
    on a NaN/inf loss."""
    torch.manual_seed(seed)
    if settings.embedding_weight > 0 and (teacher_embeddings is None or not hasattr(student, "embedding_projection")):
        raise ValueError("the embedding loss needs teacher_embeddings and the student's embedding_projection")
    inner = settings.hidden_weight > 0 or settings.attention_weight > 0
    if inner and teacher is None:
        raise ValueError("hidden/attention losses need the teacher model")
    if settings.relevance_weight > 0 and aux_probs is None:
        raise ValueError("the relevance loss needs aux_probs")
    if settings.attention_weight > 0:
        for m in (student, teacher):
            if m.config._attn_implementation != "eager":
                m.set_attn_implementation("eager")
    homes = (device_of(student), device_of(teacher) if teacher is not None else None)
    if teacher is not None:
        teacher.eval().to(compute.device)
    student.train().to(compute.device)
    opt = torch.optim.AdamW(student.parameters(), lr=settings.lr, weight_decay=settings.weight_decay)
    sched = linear_schedule(opt, steps, settings.warmup_ratio)
    scaler = compute.scaler()
    n = len(labels)
    t0 = time.perf_counter()
    last = float("nan")
    start = checkpoint.restore(student, opt, sched, scaler, steps) if checkpoint else 0
    lengths = row_lengths(tensors) if settings.length_groups > 0 else None
    for step, idx in enumerate(batches(n, min(settings.batch_size, n), steps, seed, lengths, settings.length_groups)):
        if step < start:  # taken before the checkpoint: the same batches are replayed from the seed, not trained
            continue
        opt.zero_grad(set_to_none=True)
        last = 0.0
        for part in (np.array_split(idx, accumulate) if accumulate > 1 else [idx]):
            rows = torch.as_tensor(part, device="cpu")
            batch = {"labels": labels[rows], **({"soft": teacher_logits[rows]} if teacher_logits is not None else {}),
                     **({"hard": hard_mask[rows]} if hard_mask is not None else {}),
                     **({"aux": aux_probs[rows]} if settings.relevance_weight > 0 else {}),
                     **({"emb": teacher_embeddings[rows]} if settings.embedding_weight > 0 else {})}
            inputs = compute.to_device(trim_padding({k: v[rows] for k, v in tensors.items()}))
            with compute.autocast():
                loss = batch_loss(student, teacher, inputs, compute.to_device(batch), settings, teacher_input_map)
            if not torch.isfinite(loss):
                raise FloatingPointError(f"loss is {loss.item()} at step {step}")
            share = len(part) / len(idx)  # micro-batch losses are means: weighted, they add up to the batch's
            scaler.scale(loss * share if accumulate > 1 else loss).backward()
            last += loss.item() * share
        optimizer_update(student, opt, sched, scaler)
        if on_step and on_step(step, last) is STOP:  # the caller stops it early (the teacher's early stopping on dev)
            steps = step + 1
            break
        if checkpoint:  # after on_step: its state (the best weights on dev) is part of the run's
            checkpoint.maybe_save(step + 1, steps, student, opt, sched, scaler)
    student.eval().to(homes[0])
    if teacher is not None:
        teacher.to(homes[1])
    return {"steps": steps, "final_loss": last, "train_s": time.perf_counter() - t0}


def batch_loss(student, teacher, inputs: dict[str, torch.Tensor], batch: dict[str, torch.Tensor],
               settings: DistillSettings, teacher_input_map: torch.Tensor | None = None) -> torch.Tensor:
    """The weighted distillation loss of one batch. batch: labels (b,), soft (b, classes) the teacher's logits, hard
    (b,) bool the rows with a gold label, aux (b, classes) an auxiliary teacher's probabilities; each optional but
    labels; emb (b, d) the embedding loss's targets."""
    inner = settings.hidden_weight > 0 or settings.attention_weight > 0
    if inner or "emb" in batch:
        out = student(**inputs, output_hidden_states=settings.hidden_weight > 0 or "emb" in batch,
                      output_attentions=settings.attention_weight > 0)
        logits = out.logits
    else:
        logits = student(**inputs).logits
    y = batch["labels"]
    if "hard" not in batch:
        weight = logits.new_tensor(settings.class_weights) if settings.class_weights else None
        loss = settings.beta_hard * hard_ce(logits, y, weight)
    else:  # rows without a gold label (teacher-labelled augmentations) get the soft loss only
        keep = batch["hard"]
        loss = settings.beta_hard * (F.cross_entropy(logits[keep], y[keep], reduction="sum")
                                     / max(1, len(y))) if bool(keep.any()) else logits.sum() * 0.0
    if "soft" in batch and settings.alpha_soft > 0:
        loss = loss + settings.alpha_soft * LOSSES[settings.soft_loss](logits, batch["soft"], settings.temperature)
    if settings.relevance_weight > 0:
        loss = loss + settings.relevance_weight * relevance_kl(logits, batch["aux"])
    if inner:
        loss = loss + inner_losses(out, teacher, inputs, settings, teacher_input_map,
                                   getattr(student, "hidden_projection", None))
    if "emb" in batch:
        pooled = student.embedding_projection(mean_pool(out.hidden_states[-1], inputs.get("attention_mask")))
        cos = F.cosine_similarity(pooled.float(), batch["emb"].float(), dim=-1)
        loss = loss + settings.embedding_weight * (1.0 - cos).mean()
    return loss


def optimizer_update(model, opt, sched, scaler=None) -> None:
    """Unscale (fp16), clip the gradient norm at 1, step the optimizer and the schedule."""
    if scaler is not None and scaler.is_enabled():
        scaler.unscale_(opt)
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    if scaler is not None and scaler.is_enabled():
        scaler.step(opt)
        scaler.update()
    else:
        opt.step()
    sched.step()


def optimizer_step(model, opt, sched, loss: torch.Tensor, step: int) -> float:
    """One update: refuse a NaN/inf loss (FloatingPointError), backward, clip the gradient norm at 1, step."""
    if not torch.isfinite(loss):
        raise FloatingPointError(f"loss is {loss.item()} at step {step}")
    opt.zero_grad(set_to_none=True)
    loss.backward()
    optimizer_update(model, opt, sched)
    return loss.item()


def inner_losses(student_out, teacher, inputs: dict[str, torch.Tensor], settings: DistillSettings,
                 teacher_input_map: torch.Tensor | None = None, projection=None) -> torch.Tensor:
    """Weighted hidden-state MSE + attention KL of one batch against the teacher's forward on the same batch (its ids
    through `teacher_input_map` where it reads other ids for the same tokens). `projection`: the student's
    `hidden_projection` (a student initialiser's hidden size -> the teacher's; `hidden_mse`), where it has one."""
    if teacher_input_map is not None:
        from nas.teachers.align import teacher_inputs

        inputs = teacher_inputs(inputs, teacher_input_map)
    with torch.no_grad():
        t_out = teacher(**inputs, output_hidden_states=settings.hidden_weight > 0,
                        output_attentions=settings.attention_weight > 0)
    n_teacher = teacher.config.num_hidden_layers
    mask = inputs.get("attention_mask")
    loss = student_out.logits.new_zeros(())
    if settings.hidden_weight > 0:
        loss = loss + settings.hidden_weight * hidden_mse(list(student_out.hidden_states), list(t_out.hidden_states),
                                                          n_teacher, mask, settings.layer_map, projection)
    if settings.attention_weight > 0:
        loss = loss + settings.attention_weight * attention_kl(list(student_out.attentions), list(t_out.attentions),
                                                               n_teacher, mask, settings.layer_map)
    return loss


def lr_by_size(lr_small: float, lr_teacher_size: float | None, share: float) -> float:
    """Learning rate for a student holding `share` (0..1] of the teacher's encoder weights: geometric interpolation from
    `lr_small` (a student with almost nothing of the teacher: it must relearn the task) to `lr_teacher_size` (a student
    that keeps nearly all of the teacher: gentle fine-tuning, as for BERT itself). None: `lr_small` for every size.
    Measured on all of Rotten Tomatoes: a 4-layer 384-wide slice of MiniLM distilled at 1e-3 ends at 0.776 dev, at 1e-4
    at 0.833, while 1-layer 128-wide students need ~1e-3 (docs/BENCHMARKS.md, issue 3)."""
    if lr_teacher_size is None:
        return lr_small
    s = min(1.0, max(0.0, float(share)))
    return float(math.exp((1.0 - s) * math.log(lr_small) + s * math.log(lr_teacher_size)))


def steps_for(n_train: int, batch_size: int, epochs: float, steps: int | None) -> int:
    return int(steps) if steps else max(1, math.ceil(epochs * n_train / min(batch_size, max(1, n_train))))
