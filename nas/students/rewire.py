"""Importance rewiring: score heads and FFN neurons (optionally hidden dims) by |gradient| of a unit mask on held-out
train rows and permute them so every prefix slice keeps the most important units; the full model's function is
unchanged."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from nas.students.bert_slice import supernet_forward
from nas.students.shape import Shape
from nas.teachers import family
from nas.teachers.adapter import attr


def importance_scores(model, tensors: dict[str, torch.Tensor], labels: torch.Tensor,
                      idx, teacher_logits: torch.Tensor | None = None, batch_size: int = 32,
                      hidden: bool = False, device: str = "cpu") -> dict[str, torch.Tensor]:
    """Accumulated |d loss / d mask| over the rows `idx` (a held-out slice of train, never dev), masks all ones.

    tensors: input_ids etc. (n, seq) for the whole dataset; labels (n,); teacher_logits (n, classes) optional: the loss is
    KL(teacher || model) at temperature 1 when given, else cross-entropy against `labels`. Dropout is off. Give
    teacher_logits only when `model` is not that teacher (e.g. a supernet being re-rooted at an assistant): at the
    teacher itself the KL sits at its minimum and every gradient, hence every score, is ~0.
    Returns "head" (layers, heads), "ffn" (layers, ffn) and, when `hidden`, "hidden" (hidden,) summed over the embedding
    output and every layer's output. Higher = more important. `model` must be on `device`; the masks and each batch are
    made there, the scores are returned on the CPU.
    """
    cfg = model.config
    full = Shape.of_config(cfg)
    n_layers = full.layers
    masks = {"head": torch.ones(n_layers, full.heads, device=device), "ffn": torch.ones(n_layers, full.ffn, device=device)}
    if hidden:
        masks["hidden"] = torch.ones(n_layers + 1, full.hidden, device=device)
    masks = {k: m.requires_grad_() for k, m in masks.items()}
    acc = {k: torch.zeros_like(m) for k, m in masks.items()}
    idx = torch.as_tensor(np.asarray(idx), dtype=torch.long, device="cpu")
    for i in range(0, len(idx), batch_size):
        b = idx[i:i + batch_size]
        logits, _ = supernet_forward(model, full, {k: v[b].to(device) for k, v in tensors.items()}, masks=masks)
        if teacher_logits is not None:
            loss = F.kl_div(F.log_softmax(logits, -1), F.log_softmax(teacher_logits[b].float().to(device), -1),
                            reduction="batchmean", log_target=True)
        else:
            loss = F.cross_entropy(logits, labels[b].to(device))
        # autograd.grad, not backward: only the masks' gradients are wanted, the parameters' .grad stay untouched
        for k, g in zip(masks, torch.autograd.grad(loss, list(masks.values()))):
            acc[k] += g.abs()
    if hidden:
        acc["hidden"] = acc["hidden"].sum(0)
    return {k: v.cpu() for k, v in acc.items()}


@torch.no_grad()
def permute_units(model, head_order: torch.Tensor, ffn_order: torch.Tensor,
                  hidden_order: torch.Tensor | None = None):
    """Reorder units in place without changing the model's function (any family in nas/teachers).

    head_order (layers, heads): new head i of layer l is old head head_order[l, i] (q/k/v output rows per head block, the
    attention output's input columns); where one relative-position bias is shared by every layer (MPNet), every layer
    must get the same order, and the bias's head columns follow it. ffn_order (layers, ffn): the FFN's first matrix's
    rows + bias, its second's columns. hidden_order (hidden,) or None: one permutation of the residual stream applied to
    everything that touches it (embeddings or their projection, every LayerNorm, every matrix's hidden side, the head);
    LayerNorm is permutation-equivariant, so the function is unchanged up to float summation order.
    """
    fam = family(model.config.model_type)
    full = Shape.of_config(model.config)
    d = full.hidden // full.heads
    base = attr(model, fam.base)
    layers = [{name: attr(layer, path) for name, path in fam.layer.items()} for layer in attr(base, fam.layers)]
    for li, part in enumerate(layers):
        rows = (head_order[li].long()[:, None] * d + torch.arange(d, device="cpu")).reshape(-1)
        for name in ("q", "k", "v"):
            part[name].weight.copy_(part[name].weight[rows])
            part[name].bias.copy_(part[name].bias[rows])
        part["o"].weight.copy_(part["o"].weight[:, rows])
        fo = ffn_order[li].long()
        part["ffn_in"].weight.copy_(part["ffn_in"].weight[fo])
        part["ffn_in"].bias.copy_(part["ffn_in"].bias[fo])
        part["ffn_out"].weight.copy_(part["ffn_out"].weight[:, fo])
    if fam.rel_bias is not None:
        if not all(torch.equal(head_order[0], o) for o in head_order):
            raise ValueError(f"{fam.description} shares one relative-position bias across layers: every layer needs "
                             "the same head order")
        bias = attr(base, fam.rel_bias)
        bias.weight.copy_(bias.weight[:, head_order[0].long()])
    if hidden_order is not None:
        permute_hidden(model, fam, base, layers, hidden_order.long())
    return model


def permute_hidden(model, fam, base, layers: list[dict], p: torch.Tensor) -> None:
    """`permute_units`' hidden permutation `p`: the residual stream's dims, wherever they are read or written."""

    def cols(lin):  # hidden is the input side
        lin.weight.copy_(lin.weight[:, p])

    def rows_(mod):  # hidden is the output side (Linear) or the only side (LayerNorm)
        mod.weight.copy_(mod.weight[p])
        mod.bias.copy_(mod.bias[p])

    if fam.emb_project is not None and hasattr(base, fam.emb_project):
        rows_(attr(base, fam.emb_project))  # the embeddings keep their own width; their projection writes the stream
    else:
        for path in (fam.word, fam.position, fam.token_type):
            if path is not None:
                cols(attr(base, path))
        rows_(attr(base, fam.emb_ln))
    for part in layers:
        for name in ("q", "k", "v", "ffn_in"):
            cols(part[name])
        for name in ("o", "attn_ln", "ffn_out", "out_ln"):
            rows_(part[name])
    dense = attr(model, fam.head_dense)
    cols(dense)
    rows_(dense)
    cols(attr(model, fam.head_out))


def rewire(model, tensors: dict[str, torch.Tensor], labels: torch.Tensor, idx,
           teacher_logits: torch.Tensor | None = None, batch_size: int = 32,
           reorder_hidden: bool = False, device: str = "cpu"):
    """Score heads and FFN neurons (and hidden dims when `reorder_hidden`) with `importance_scores` on rows `idx` (on
    `device`) and permute `model` in place so that, in every layer, the most important units come first. Returns
    `model` on the CPU, whose outputs are unchanged (up to float summation order)."""
    model.to(device)
    s = importance_scores(model, tensors, labels, idx, teacher_logits, batch_size, hidden=reorder_hidden, device=device)
    model.to("cpu")
    if family(model.config.model_type).rel_bias is not None:  # one head order for every layer (a shared bias)
        s["head"] = s["head"].sum(0, keepdim=True).expand_as(s["head"]).contiguous()
    order = {k: torch.argsort(v, dim=-1, descending=True, stable=True) for k, v in s.items()}
    return permute_units(model, order["head"], order["ffn"], order.get("hidden"))
