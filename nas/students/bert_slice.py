"""Elastic BERT: a shape selects prefix slices of one set of weights (the teacher's, later the trained supernet's).

A shape is uniform per layer, so every extracted sub-network is a stock `BertConfig` and a plain
`BertForSequenceClassification`. Depth keeps evenly spaced teacher layers; width keeps the leading units of every
matrix, embeddings and LayerNorm included. Two views of the same weights:
- `extract_subnet(model, shape)`: a standalone copy (for distillation, latency, export);
- `supernet_forward(model, shape, inputs)`: the same computation on views of the shared weights, so gradients reach them
  (supernet training, fast proxy evaluation)."""

from __future__ import annotations

import re

import torch
import torch.nn.functional as F
from transformers import BertConfig, BertForSequenceClassification
from transformers.activations import ACT2FN

from nas.compute import on_host
from nas.students.shape import Shape, layer_indices


def shape_config(base: BertConfig, shape: Shape) -> BertConfig:
    cfg = BertConfig.from_dict(base.to_dict())
    cfg.num_hidden_layers = shape.layers
    cfg.hidden_size = shape.hidden
    cfg.num_attention_heads = shape.heads
    cfg.intermediate_size = shape.ffn
    cfg._attn_implementation = "eager"
    cfg.architectures = ["BertForSequenceClassification"]
    return cfg


def check_shape(base: BertConfig, shape: Shape) -> None:
    """ValueError unless `shape` is a valid prefix of the model described by `base`."""
    if not shape.is_valid():
        raise ValueError(f"hidden {shape.hidden} is not divisible by heads {shape.heads}")
    big = Shape.of_config(base)
    if not shape.fits_in(big):
        raise ValueError(f"shape {shape.key} exceeds the source model {big.key}")


_LAYER = re.compile(r"^(bert\.encoder\.layer\.)(\d+)(\..*)$")


def extract_subnet(model: BertForSequenceClassification, shape: Shape) -> BertForSequenceClassification:
    """A standalone model holding the prefix slices of `model`'s weights for `shape`."""
    base = model.config
    check_shape(base, shape)
    with on_host():
        student = BertForSequenceClassification(shape_config(base, shape))
    src = model.state_dict()
    idx = layer_indices(shape.layers, base.num_hidden_layers)
    new_state = {}
    for key, target in student.state_dict().items():
        m = _LAYER.match(key)
        src_key = f"{m.group(1)}{idx[int(m.group(2))]}{m.group(3)}" if m else key
        if src_key not in src:
            new_state[key] = target  # e.g. position_ids buffers the source lacks
            continue
        t = src[src_key]
        new_state[key] = t[tuple(slice(0, n) for n in target.shape)].clone() if target.dim() else t.clone()
    student.load_state_dict(new_state)
    return student.eval()


def count_parameters(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def _linear(x: torch.Tensor, layer: torch.nn.Linear, n_out: int | None, n_in: int) -> torch.Tensor:
    """x @ W[:n_out, :n_in].T + b[:n_out] on views of `layer`'s parameters (n_out None keeps all outputs)."""
    w = layer.weight[:n_out, :n_in] if n_out is not None else layer.weight[:, :n_in]
    b = None if layer.bias is None else (layer.bias[:n_out] if n_out is not None else layer.bias)
    return F.linear(x, w, b)


def _layer_norm(x: torch.Tensor, ln: torch.nn.LayerNorm) -> torch.Tensor:
    """LayerNorm over the last (sliced) dim with the leading part of the weight and bias."""
    h = x.shape[-1]
    return F.layer_norm(x, (h,), ln.weight[:h], ln.bias[:h], ln.eps)


def supernet_forward(model: BertForSequenceClassification, shape: Shape, inputs: dict[str, torch.Tensor],
                     output_hidden_states: bool = False, train: bool = False,
                     masks: dict[str, torch.Tensor] | None = None) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """What `extract_subnet(model, shape)(**inputs)` computes (eager attention), on views of `model`'s parameters.

    inputs: input_ids (batch, seq) int64, optional attention_mask (batch, seq) 1 = token / 0 = padding, optional
    token_type_ids (batch, seq). `train` turns dropout on with the config's probabilities (whatever `model.training` is).
    masks (importance scoring, full width only): "head" (layers, heads) scales each head's context, "ffn" (layers, ffn)
    scales the activations after GELU, "hidden" (layers + 1, hidden) scales the embedding output and each layer's output.
    Returns logits (batch, num_labels) and, when asked, hidden states: shape.layers + 1 tensors (batch, seq, shape.hidden),
    the embedding output first (Hugging Face's `output_hidden_states` order); else an empty list.
    """
    cfg = model.config
    check_shape(cfg, shape)
    h, a, f = shape.hidden, shape.heads, shape.ffn
    d = h // a
    p_hidden = cfg.hidden_dropout_prob if train else 0.0
    p_attn = cfg.attention_probs_dropout_prob if train else 0.0
    p_cls = cfg.classifier_dropout if cfg.classifier_dropout is not None else cfg.hidden_dropout_prob
    p_cls = p_cls if train else 0.0
    act = ACT2FN[cfg.hidden_act]
    masks = masks or {}
    bert = model.bert

    ids = inputs["input_ids"]
    bsz, seq = ids.shape
    emb = bert.embeddings
    tt = inputs.get("token_type_ids")
    tt = torch.zeros_like(ids) if tt is None else tt
    pos = torch.arange(seq, device=ids.device)
    x = (F.embedding(ids, emb.word_embeddings.weight[:, :h]) + F.embedding(tt, emb.token_type_embeddings.weight[:, :h])
         + F.embedding(pos, emb.position_embeddings.weight[:, :h])[None])
    x = F.dropout(_layer_norm(x, emb.LayerNorm), p_hidden, train)
    if "hidden" in masks:
        x = x * masks["hidden"][0, :h]
    hidden_states = [x] if output_hidden_states else []

    am = inputs.get("attention_mask")
    # Hugging Face's eager mask: 0 on kept keys, the dtype's most negative value on padded ones, (batch, 1, 1, seq)
    add_mask = None if am is None else torch.where(am.bool(), 0.0, torch.finfo(x.dtype).min).to(x.dtype)[:, None, None, :]

    for j, li in enumerate(layer_indices(shape.layers, cfg.num_hidden_layers)):
        layer = bert.encoder.layer[li]
        sa = layer.attention.self
        q = _linear(x, sa.query, h, h).view(bsz, seq, a, d).transpose(1, 2)  # (batch, heads, seq, head_dim)
        k = _linear(x, sa.key, h, h).view(bsz, seq, a, d).transpose(1, 2)
        v = _linear(x, sa.value, h, h).view(bsz, seq, a, d).transpose(1, 2)
        scores = torch.matmul(q, k.transpose(2, 3)) * d ** -0.5  # (batch, heads, seq, seq)
        if add_mask is not None:
            scores = scores + add_mask
        probs = F.dropout(F.softmax(scores, dim=-1), p_attn, train)
        ctx = torch.matmul(probs, v)  # (batch, heads, seq, head_dim)
        if "head" in masks:
            ctx = ctx * masks["head"][j, :a, None, None]
        ctx = ctx.transpose(1, 2).reshape(bsz, seq, h)
        out = layer.attention.output
        x = _layer_norm(F.dropout(_linear(ctx, out.dense, h, h), p_hidden, train) + x, out.LayerNorm)
        inter = act(_linear(x, layer.intermediate.dense, f, h))  # (batch, seq, ffn)
        if "ffn" in masks:
            inter = inter * masks["ffn"][j, :f]
        x = _layer_norm(F.dropout(_linear(inter, layer.output.dense, h, f), p_hidden, train) + x, layer.output.LayerNorm)
        if "hidden" in masks:
            x = x * masks["hidden"][j + 1, :h]
        if output_hidden_states:
            hidden_states.append(x)

    pooled = torch.tanh(_linear(x[:, 0], bert.pooler.dense, h, h))  # (batch, hidden)
    logits = _linear(F.dropout(pooled, p_cls, train), model.classifier, None, h)
    return logits, hidden_states
