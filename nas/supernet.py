"""Elastic BERT: a shape selects prefix slices of one set of weights (the teacher's, later the trained supernet's).

A shape is (layers, hidden, heads, ffn), uniform per layer, so every extracted sub-network is a stock `BertConfig` and a
plain `BertForSequenceClassification`. Depth keeps evenly spaced teacher layers; width keeps the leading units of every
matrix, embeddings and LayerNorm included.

Three views of the same weights:
- `extract_subnet(model, shape)`: a standalone copy (for distillation, latency, export);
- `supernet_forward(model, shape, inputs)`: the same computation on views of the shared weights, so gradients reach them
  (supernet training, fast proxy evaluation);
- `rewire(model, ...)`: permutes heads and FFN neurons (optionally hidden dims) by importance, so every prefix slice keeps
  the most important units; the full model's function is unchanged.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass

import numpy as np
import torch
import torch.nn.functional as F
from transformers import BertConfig, BertForSequenceClassification
from transformers.activations import ACT2FN


@dataclass(frozen=True, order=True)
class Shape:
    layers: int
    hidden: int
    heads: int
    ffn: int

    @property
    def key(self) -> str:
        return f"L{self.layers}-H{self.hidden}-A{self.heads}-F{self.ffn}"

    def as_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "Shape":
        return cls(int(d["layers"]), int(d["hidden"]), int(d["heads"]), int(d["ffn"]))

    @classmethod
    def from_key(cls, key: str) -> "Shape":
        """The inverse of `key`: "L2-H128-A4-F512" -> Shape(2, 128, 4, 512)."""
        m = re.fullmatch(r"L(\d+)-H(\d+)-A(\d+)-F(\d+)", key.strip())
        if m is None:
            raise ValueError(f"{key!r} is not a shape key like L2-H128-A4-F512")
        return cls(*(int(g) for g in m.groups()))

    @classmethod
    def of_config(cls, cfg) -> "Shape":
        return cls(cfg.num_hidden_layers, cfg.hidden_size, cfg.num_attention_heads, cfg.intermediate_size)

    def is_valid(self) -> bool:
        return self.hidden % self.heads == 0

    def fits_in(self, other: "Shape") -> bool:
        """Whether this shape is a prefix slice of `other` on every axis (so it can be extracted from it)."""
        return (self.layers <= other.layers and self.hidden <= other.hidden and self.heads <= other.heads
                and self.ffn <= other.ffn)

    def encoder_weights(self) -> int:
        """Weights of the transformer layers (attention 4·H², FFN 2·H·F per layer; biases and embeddings left out)."""
        return self.layers * (4 * self.hidden * self.hidden + 2 * self.hidden * self.ffn)

    def share_of(self, teacher: "Shape") -> float:
        """This shape's share of `teacher`'s encoder weights, in (0, 1]."""
        return min(1.0, self.encoder_weights() / teacher.encoder_weights())


def layer_indices(n_student: int, n_teacher: int) -> list[int]:
    """Evenly spaced teacher layers, first and last included; a 1-layer student keeps the first layer, which was trained
    on embeddings as input."""
    if n_student >= n_teacher:
        return list(range(n_teacher))
    if n_student == 1:
        return [0]
    return [int(round(x)) for x in np.linspace(0, n_teacher - 1, n_student)]


def matched_layers(n_student: int, n_teacher: int, layer_map: str = "sliced") -> list[int]:
    """The teacher layer whose output each student layer is matched to by the hidden-state and attention losses.
    "sliced": the layer it was sliced from (`layer_indices`); "uniform": TinyBERT's g(m) = m * N / M, so the last student
    layer always learns the teacher's last layer (a 1-layer student matches the teacher's top, not its first layer)."""
    if layer_map == "sliced":
        return layer_indices(n_student, n_teacher)
    if layer_map == "uniform":
        return [max(0, int(round((j + 1) * n_teacher / n_student)) - 1) for j in range(n_student)]
    raise ValueError(f"layer_map must be sliced or uniform, got {layer_map!r}")


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


# -- elastic forward ----------------------------------------------------------------------------------------------------
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


# -- importance rewiring ------------------------------------------------------------------------------------------------
def importance_scores(model: BertForSequenceClassification, tensors: dict[str, torch.Tensor], labels: torch.Tensor,
                      idx, teacher_logits: torch.Tensor | None = None, batch_size: int = 32,
                      hidden: bool = False) -> dict[str, torch.Tensor]:
    """Accumulated |d loss / d mask| over the rows `idx` (a held-out slice of train, never dev), masks all ones.

    tensors: input_ids etc. (n, seq) for the whole dataset; labels (n,); teacher_logits (n, classes) optional: the loss is
    KL(teacher || model) at temperature 1 when given, else cross-entropy against `labels`. Dropout is off. Give
    teacher_logits only when `model` is not that teacher (e.g. a supernet being re-rooted at an assistant): at the
    teacher itself the KL sits at its minimum and every gradient, hence every score, is ~0.
    Returns "head" (layers, heads), "ffn" (layers, ffn) and, when `hidden`, "hidden" (hidden,) summed over the embedding
    output and every layer's output. Higher = more important.
    """
    cfg = model.config
    full = Shape.of_config(cfg)
    n_layers = cfg.num_hidden_layers
    masks = {"head": torch.ones(n_layers, full.heads), "ffn": torch.ones(n_layers, full.ffn)}
    if hidden:
        masks["hidden"] = torch.ones(n_layers + 1, full.hidden)
    masks = {k: m.requires_grad_() for k, m in masks.items()}
    acc = {k: torch.zeros_like(m) for k, m in masks.items()}
    idx = torch.as_tensor(np.asarray(idx), dtype=torch.long)
    for i in range(0, len(idx), batch_size):
        b = idx[i:i + batch_size]
        logits, _ = supernet_forward(model, full, {k: v[b] for k, v in tensors.items()}, masks=masks)
        if teacher_logits is not None:
            loss = F.kl_div(F.log_softmax(logits, -1), F.log_softmax(teacher_logits[b].float(), -1),
                            reduction="batchmean", log_target=True)
        else:
            loss = F.cross_entropy(logits, labels[b])
        # autograd.grad, not backward: only the masks' gradients are wanted, the parameters' .grad stay untouched
        for k, g in zip(masks, torch.autograd.grad(loss, list(masks.values()))):
            acc[k] += g.abs()
    if hidden:
        acc["hidden"] = acc["hidden"].sum(0)
    return acc


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
        rows = (head_order[li].long()[:, None] * d + torch.arange(d)).reshape(-1)
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
           reorder_hidden: bool = False) -> BertForSequenceClassification:
    """Score heads and FFN neurons (and hidden dims when `reorder_hidden`) with `importance_scores` on rows `idx` and
    permute `model` in place so that, in every layer, the most important units come first. Returns `model`, whose
    outputs are unchanged (up to float summation order)."""
    s = importance_scores(model, tensors, labels, idx, teacher_logits, batch_size, hidden=reorder_hidden)
    order = {k: torch.argsort(v, dim=-1, descending=True, stable=True) for k, v in s.items()}
    return permute_units(model, order["head"], order["ffn"], order.get("hidden"))
