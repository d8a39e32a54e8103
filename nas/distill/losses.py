"""Distillation losses: plain functions whose docstrings give the tensor shapes, and `LOSSES`, the registry a
configuration composes losses from by name with weights (TextBrewer's way). Its entries:

- `soft_kl` (KL with temperature) and `soft_mse` (MSE on logits): the soft losses `DistillSettings.soft_loss` names;
- `hard_ce`: cross-entropy against gold labels; `hinge`: pairwise hinge for (query, positive, negative) triples;
- `relevance_kl`: KL to an auxiliary non-neural teacher's probabilities;
- `hidden_mse`, `attention_kl`: hidden-state and attention-map losses against the teacher layer each student layer
  is matched to.

Adding one: a function here and one line in LOSSES (docs/ARCHITECTURE.md shows an example)."""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F

from nas.students.shape import matched_layers


def soft_kl(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float = 2.0) -> torch.Tensor:
    """KL(teacher || student) on temperature-softened distributions, scaled by T^2. logits: (batch, classes)."""
    t = temperature
    return F.kl_div(F.log_softmax(student_logits / t, -1), F.log_softmax(teacher_logits / t, -1),
                    reduction="batchmean", log_target=True) * t * t


def soft_mse(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """MSE between raw logits (Tencent's query-doc recipe). logits: (batch, classes)."""
    return F.mse_loss(student_logits, teacher_logits)


def hard_ce(student_logits: torch.Tensor, labels: torch.Tensor, weight: torch.Tensor | None = None) -> torch.Tensor:
    """Cross-entropy against gold labels. logits: (batch, classes); labels: (batch,) int64; `weight` (classes,): a
    weight per class (imbalanced labels)."""
    return F.cross_entropy(student_logits, labels, weight=weight)


def hinge(pos_scores: torch.Tensor, neg_scores: torch.Tensor, margin: float = 0.7) -> torch.Tensor:
    """Pairwise hinge for (query, positive, negative) triples: mean(max(0, margin - s+ + s-)). scores: (batch,)."""
    return F.relu(margin - pos_scores + neg_scores).mean()


def relevance_kl(student_logits: torch.Tensor, aux_probs: torch.Tensor) -> torch.Tensor:
    """KL(aux || student) against an auxiliary teacher that is not a network (e.g. gradient-boosted trees on lexical
    features): aux_probs (batch, classes), rows summing to 1; student_logits (batch, classes)."""
    p = aux_probs.clamp_min(1e-8)
    return (p * (p.log() - F.log_softmax(student_logits, -1))).sum(-1).mean()


def attention_kl(student_attn, teacher_attn, n_teacher_layers: int, attention_mask: torch.Tensor | None = None,
                 layer_map: str = "sliced") -> torch.Tensor:
    """Attention-map loss: for each student layer j and the teacher layer it was sliced from (`layer_indices`), the
    head-averaged attention distributions of each real query token, KL(teacher || student), averaged over tokens and
    layers. Averaging over heads makes it defined whatever the two head counts are.

    student_attn: shape.layers tensors (batch, heads_s, seq, seq); teacher_attn: n_teacher_layers tensors
    (batch, heads_t, seq, seq), rows already softmax-normalised (eager attention); attention_mask (batch, seq).
    layer_map "uniform": TinyBERT's layer mapping instead (`nas.supernet.matched_layers`).
    """
    from nas.students.shape import matched_layers

    idx = matched_layers(len(student_attn), n_teacher_layers, layer_map)
    total = student_attn[0].new_zeros(())
    for j, i in enumerate(idx):
        s = student_attn[j].mean(1).clamp_min(1e-8)  # (batch, seq, seq)
        t = teacher_attn[i].mean(1).clamp_min(1e-8)
        kl = (t * (t.log() - s.log())).sum(-1)  # (batch, seq): one distribution per query token
        if attention_mask is None:
            total = total + kl.mean()
        else:
            w = attention_mask.to(kl.dtype)
            total = total + (kl * w).sum() / w.sum().clamp_min(1)
    return total / len(idx)


def hidden_mse(student_hidden: list[torch.Tensor], teacher_hidden: list[torch.Tensor], n_teacher_layers: int,
               attention_mask: torch.Tensor | None = None, layer_map: str = "sliced",
               projection: Callable[[torch.Tensor], torch.Tensor] | None = None) -> torch.Tensor:
    """Mean over matched layers of the MSE between student and teacher hidden states, padded tokens left out.

    student_hidden: shape.layers + 1 tensors (batch, seq, h), embedding output first; teacher_hidden: n_teacher_layers + 1
    tensors (batch, seq, H >= h). Student embedding output <-> teacher embedding output; student layer j <-> the teacher
    layer it was sliced from (`layer_indices`), so output j + 1 <-> teacher output idx[j] + 1. Teacher states are sliced
    to their leading h dims, the dims the student keeps. attention_mask: (batch, seq), 1 = token. layer_map "uniform"
    matches student layer j to TinyBERT's teacher layer instead (`matched_layers`). `projection` (h -> H, e.g. a
    torch.nn.Linear; TinyBERT's W_h): a student that was not sliced from the teacher (a student initialiser) is compared
    through it with the teacher's full states instead, in fp32, one projection shared by every layer.
    """
    idx = matched_layers(len(student_hidden) - 1, n_teacher_layers, layer_map)
    pairs = [(student_hidden[0], teacher_hidden[0])] + [(student_hidden[j + 1], teacher_hidden[i + 1])
                                                         for j, i in enumerate(idx)]
    w = None if attention_mask is None else attention_mask.to(student_hidden[0].dtype)[..., None]  # (batch, seq, 1)
    total = student_hidden[0].new_zeros(())
    for s, t in pairs:
        if projection is not None:
            s, t = projection(s).float(), t.float()
        sq = (s - t[..., :s.shape[-1]]) ** 2  # (batch, seq, h)
        total = total + (sq.mean() if w is None else (sq * w).sum() / (w.sum() * s.shape[-1]).clamp_min(1))
    return total / len(pairs)


LOSSES: dict[str, Callable[..., torch.Tensor]] = {"soft_kl": soft_kl, "soft_mse": soft_mse, "hard_ce": hard_ce,
                                                  "hinge": hinge, "relevance_kl": relevance_kl,
                                                  "attention_kl": attention_kl, "hidden_mse": hidden_mse}
SOFT_LOSSES = ("soft_kl", "soft_mse")  # the entries that compare student and teacher logits
