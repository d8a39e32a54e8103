"""Importance rewiring: score heads and FFN neurons (optionally hidden dims) by |gradient| of a unit mask on held-out
train rows and permute them so every prefix slice keeps the most important units; the full model's function is
unchanged."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from transformers import BertForSequenceClassification

from nas.students.bert_slice import supernet_forward
from nas.students.shape import Shape


def importance_scores(model: BertForSequenceClassification, tensors: dict[str, torch.Tensor], labels: torch.Tensor,
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
    n_layers = cfg.num_hidden_layers
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
def permute_units(model: BertForSequenceClassification, head_order: torch.Tensor, ffn_order: torch.Tensor,
                  hidden_order: torch.Tensor | None = None) -> BertForSequenceClassification:
    """Reorder units in place without changing the model's function.

    head_order (layers, heads): new head i of layer l is old head head_order[l, i] (q/k/v output rows per head block, the
    attention output dense's input columns). ffn_order (layers, ffn): intermediate dense rows + bias, output dense columns.
    hidden_order (hidden,) or None: one permutation of the residual stream applied to everything that touches it
    (embeddings, every LayerNorm, every matrix's hidden side, pooler, classifier); LayerNorm is permutation-equivariant,
    so the function is unchanged up to float summation order.
    """
    cfg = model.config
    d = cfg.hidden_size // cfg.num_attention_heads
    for li, layer in enumerate(model.bert.encoder.layer):
        sa, attn_out = layer.attention.self, layer.attention.output.dense
        rows = (head_order[li].long()[:, None] * d + torch.arange(d, device="cpu")).reshape(-1)
        for lin in (sa.query, sa.key, sa.value):
            lin.weight.copy_(lin.weight[rows])
            lin.bias.copy_(lin.bias[rows])
        attn_out.weight.copy_(attn_out.weight[:, rows])
        fo = ffn_order[li].long()
        layer.intermediate.dense.weight.copy_(layer.intermediate.dense.weight[fo])
        layer.intermediate.dense.bias.copy_(layer.intermediate.dense.bias[fo])
        layer.output.dense.weight.copy_(layer.output.dense.weight[:, fo])
    if hidden_order is None:
        return model
    p = hidden_order.long()

    def cols(lin):  # hidden is the input side
        lin.weight.copy_(lin.weight[:, p])

    def rows_(mod):  # hidden is the output side (Linear) or the only side (LayerNorm)
        mod.weight.copy_(mod.weight[p])
        mod.bias.copy_(mod.bias[p])

    emb = model.bert.embeddings
    for e in (emb.word_embeddings, emb.position_embeddings, emb.token_type_embeddings):
        cols(e)
    rows_(emb.LayerNorm)
    for layer in model.bert.encoder.layer:
        sa = layer.attention.self
        for lin in (sa.query, sa.key, sa.value, layer.intermediate.dense):
            cols(lin)
        for mod in (layer.attention.output.dense, layer.attention.output.LayerNorm, layer.output.dense,
                    layer.output.LayerNorm):
            rows_(mod)
    cols(model.bert.pooler.dense)
    rows_(model.bert.pooler.dense)
    cols(model.classifier)
    return model


def rewire(model: BertForSequenceClassification, tensors: dict[str, torch.Tensor], labels: torch.Tensor, idx,
           teacher_logits: torch.Tensor | None = None, batch_size: int = 32,
           reorder_hidden: bool = False, device: str = "cpu") -> BertForSequenceClassification:
    """Score heads and FFN neurons (and hidden dims when `reorder_hidden`) with `importance_scores` on rows `idx` (on
    `device`) and permute `model` in place so that, in every layer, the most important units come first. Returns
    `model` on the CPU, whose outputs are unchanged (up to float summation order)."""
    model.to(device)
    s = importance_scores(model, tensors, labels, idx, teacher_logits, batch_size, hidden=reorder_hidden, device=device)
    model.to("cpu")
    order = {k: torch.argsort(v, dim=-1, descending=True, stable=True) for k, v in s.items()}
    return permute_units(model, order["head"], order["ffn"], order.get("hidden"))
