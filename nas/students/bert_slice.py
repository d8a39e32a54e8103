"""Elastic slices of a BERT-structured encoder (any family in nas/teachers: BERT, RoBERTa, XLM-R, ELECTRA, MPNet,
DistilBERT): a shape selects prefix slices of one set of weights (the teacher's, later the trained supernet's).

A shape is uniform per layer, so every extracted sub-network is a stock config and model of the source's own family
(`AutoModelForSequenceClassification` loads it). Depth keeps evenly spaced teacher layers; width keeps the leading units
of every matrix, embeddings and LayerNorm included. Two views of the same weights:
- `extract_subnet(model, shape)`: a standalone copy (for distillation, latency, export);
- `supernet_forward(model, shape, inputs)`: the same computation on views of the shared weights, so gradients reach them
  (supernet training, fast proxy evaluation). Models are read only through their `Family`."""

from __future__ import annotations

import re

import torch
import torch.nn.functional as F
from transformers.activations import ACT2FN

from nas.compute import on_host
from nas.students.shape import Shape, layer_indices
from nas.teachers import family
from nas.teachers.adapter import attr


def family_of_model(model):
    return family(model.config.model_type)


def shape_config(base, shape: Shape):
    """The config of `shape` sliced from a model with config `base` (same family)."""
    return family(base.model_type).shaped_config(base, shape.layers, shape.hidden, shape.heads, shape.ffn)


def check_shape(base, shape: Shape) -> None:
    """ValueError unless `shape` is a valid prefix of the model described by `base`."""
    shape.check_fits(Shape.of_config(base))


def extract_subnet(model, shape: Shape):
    """A standalone model of `model`'s family holding the prefix slices of its weights for `shape`."""
    base = model.config
    check_shape(base, shape)
    fam = family_of_model(model)
    with on_host():
        student = fam.model_class()(shape_config(base, shape))
    src = model.state_dict()
    idx = layer_indices(shape.layers, Shape.of_config(base).layers)
    layer_key = re.compile(rf"^({re.escape(fam.layer_prefix())})(\d+)(\..*)$")
    new_state = {}
    for key, target in student.state_dict().items():
        m = layer_key.match(key)
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


def size_mb(model: torch.nn.Module) -> float:
    """The model's weights and buffers as saved in fp32 (safetensors), in MB (10^6 bytes)."""
    n = sum(t.numel() * t.element_size() for t in model.state_dict().values())
    return round(n / 1e6, 3)


def _linear(x: torch.Tensor, layer: torch.nn.Linear, n_out: int | None, n_in: int) -> torch.Tensor:
    """x @ W[:n_out, :n_in].T + b[:n_out] on views of `layer`'s parameters (n_out None keeps all outputs)."""
    w = layer.weight[:n_out, :n_in] if n_out is not None else layer.weight[:, :n_in]
    b = None if layer.bias is None else (layer.bias[:n_out] if n_out is not None else layer.bias)
    return F.linear(x, w, b)


def _layer_norm(x: torch.Tensor, ln: torch.nn.LayerNorm) -> torch.Tensor:
    """LayerNorm over the last (sliced) dim with the leading part of the weight and bias."""
    h = x.shape[-1]
    return F.layer_norm(x, (h,), ln.weight[:h], ln.bias[:h], ln.eps)


def positions(fam, base, ids: torch.Tensor) -> torch.Tensor:
    """Position ids of `ids` (batch, seq): 0.. (BERT), or from the padding index + 1 with pads at the padding index
    (RoBERTa, MPNet), as the family's own embeddings number them."""
    if not fam.positions_from_padding:
        return torch.arange(ids.shape[1], device=ids.device)[None]
    pad = attr(base, fam.word).padding_idx
    mask = ids.ne(pad).int()
    return (torch.cumsum(mask, dim=1) * mask).long() + pad


def _embed(fam, base, inputs: dict, h: int, p_hidden: float, train: bool) -> torch.Tensor:
    """The embedding output at width h: the sum of word, position (and token type) embeddings, LayerNorm, dropout; where
    the family projects its embeddings (ELECTRA), they keep their width and the projection's output is sliced."""
    ids = inputs["input_ids"]
    width = None if fam.emb_project is not None and hasattr(base, fam.emb_project.split(".")[0]) else h
    sl = slice(0, width)
    x = F.embedding(ids, attr(base, fam.word).weight[:, sl]) + F.embedding(
        positions(fam, base, ids), attr(base, fam.position).weight[:, sl])
    if fam.token_type is not None:
        tt = inputs.get("token_type_ids")
        x = x + F.embedding(torch.zeros_like(ids) if tt is None else tt, attr(base, fam.token_type).weight[:, sl])
    x = F.dropout(_layer_norm(x, attr(base, fam.emb_ln)), p_hidden, train)
    if width is None:
        proj = attr(base, fam.emb_project)
        x = _linear(x, proj, h, proj.in_features)
    return x


def supernet_forward(model, shape: Shape, inputs: dict[str, torch.Tensor], output_hidden_states: bool = False,
                     train: bool = False, masks: dict[str, torch.Tensor] | None = None
                     ) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """What `extract_subnet(model, shape)(**inputs)` computes (eager attention), on views of `model`'s parameters.

    inputs: input_ids (batch, seq) int64, optional attention_mask (batch, seq) 1 = token / 0 = padding, optional
    token_type_ids (batch, seq). `train` turns dropout on with the config's probabilities (whatever `model.training` is).
    masks (importance scoring, full width only): "head" (layers, heads) scales each head's context, "ffn" (layers, ffn)
    scales the activations after the activation function, "hidden" (layers + 1, hidden) scales the embedding output and
    each layer's output. Returns logits (batch, num_labels) and, when asked, hidden states: shape.layers + 1 tensors
    (batch, seq, shape.hidden), the embedding output first (Hugging Face's `output_hidden_states` order); else [].
    """
    cfg = model.config
    check_shape(cfg, shape)
    fam = family_of_model(model)
    h, a, f = shape.hidden, shape.heads, shape.ffn
    d = h // a
    p_hidden, p_attn, p_cls = (p if train else 0.0 for p in fam.dropouts(cfg))
    act = ACT2FN[fam.activation(cfg)]
    masks = masks or {}
    base = attr(model, fam.base)

    ids = inputs["input_ids"]
    bsz, seq = ids.shape
    x = _embed(fam, base, inputs, h, p_hidden, train)
    if "hidden" in masks:
        x = x * masks["hidden"][0, :h]
    hidden_states = [x] if output_hidden_states else []

    am = inputs.get("attention_mask")
    # Hugging Face's eager mask: 0 on kept keys, the dtype's most negative value on padded ones, (batch, 1, 1, seq)
    add_mask = None if am is None else torch.where(am.bool(), 0.0, torch.finfo(x.dtype).min).to(x.dtype)[:, None, None, :]
    if fam.rel_bias is not None:  # MPNet: one relative-position bias for every layer, its first `a` heads
        pos = torch.arange(seq, device=ids.device)
        buckets = attr(base, fam.rel_bias.rsplit(".", 1)[0]).relative_position_bucket(pos[None, :] - pos[:, None])
        bias = F.embedding(buckets, attr(base, fam.rel_bias).weight[:, :a]).permute(2, 0, 1)[None]  # (1, a, seq, seq)
        add_mask = bias if add_mask is None else bias + add_mask

    layers = attr(base, fam.layers)
    for j, li in enumerate(layer_indices(shape.layers, len(layers))):
        part = {name: attr(layers[li], path) for name, path in fam.layer.items()}
        q = _linear(x, part["q"], h, h).view(bsz, seq, a, d).transpose(1, 2)  # (batch, heads, seq, head_dim)
        k = _linear(x, part["k"], h, h).view(bsz, seq, a, d).transpose(1, 2)
        v = _linear(x, part["v"], h, h).view(bsz, seq, a, d).transpose(1, 2)
        scores = torch.matmul(q, k.transpose(2, 3)) * d ** -0.5  # (batch, heads, seq, seq)
        if add_mask is not None:
            scores = scores + add_mask
        probs = F.dropout(F.softmax(scores, dim=-1), p_attn, train)
        ctx = torch.matmul(probs, v)  # (batch, heads, seq, head_dim)
        if "head" in masks:
            ctx = ctx * masks["head"][j, :a, None, None]
        ctx = ctx.transpose(1, 2).reshape(bsz, seq, h)
        out = _linear(ctx, part["o"], h, h)
        x = _layer_norm((F.dropout(out, p_hidden, train) if fam.attn_out_dropout else out) + x, part["attn_ln"])
        inter = act(_linear(x, part["ffn_in"], f, h))  # (batch, seq, ffn)
        if "ffn" in masks:
            inter = inter * masks["ffn"][j, :f]
        x = _layer_norm(F.dropout(_linear(inter, part["ffn_out"], h, f), p_hidden, train) + x, part["out_ln"])
        if "hidden" in masks:
            x = x * masks["hidden"][j + 1, :h]
        if output_hidden_states:
            hidden_states.append(x)

    first = x[:, 0]  # [CLS] / <s>
    if fam.head_dropout_first:
        first = F.dropout(first, p_cls, train)
    pooled = ACT2FN[fam.head_act](_linear(first, attr(model, fam.head_dense), h, h))  # (batch, hidden)
    logits = _linear(F.dropout(pooled, p_cls, train), attr(model, fam.head_out), None, h)
    return logits, hidden_states
