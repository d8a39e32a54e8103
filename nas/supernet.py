"""Elastic BERT: a shape selects prefix slices of one set of weights (the teacher's, later the trained supernet's).

A shape is (layers, hidden, heads, ffn), uniform per layer, so every extracted sub-network is a stock `BertConfig` and a
plain `BertForSequenceClassification`. Depth keeps evenly spaced teacher layers; width keeps the leading units of every
matrix, embeddings and LayerNorm included.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass

import numpy as np
import torch
from transformers import BertConfig, BertForSequenceClassification


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
    def of_config(cls, cfg) -> "Shape":
        return cls(cfg.num_hidden_layers, cfg.hidden_size, cfg.num_attention_heads, cfg.intermediate_size)

    def is_valid(self) -> bool:
        return self.hidden % self.heads == 0


def layer_indices(n_student: int, n_teacher: int) -> list[int]:
    """Evenly spaced teacher layers, first and last included; a 1-layer student keeps the first layer, which was trained
    on embeddings as input."""
    if n_student >= n_teacher:
        return list(range(n_teacher))
    if n_student == 1:
        return [0]
    return [int(round(x)) for x in np.linspace(0, n_teacher - 1, n_student)]


def shape_config(base: BertConfig, shape: Shape) -> BertConfig:
    cfg = BertConfig.from_dict(base.to_dict())
    cfg.num_hidden_layers = shape.layers
    cfg.hidden_size = shape.hidden
    cfg.num_attention_heads = shape.heads
    cfg.intermediate_size = shape.ffn
    cfg._attn_implementation = "eager"
    cfg.architectures = ["BertForSequenceClassification"]
    return cfg


_LAYER = re.compile(r"^(bert\.encoder\.layer\.)(\d+)(\..*)$")


def extract_subnet(model: BertForSequenceClassification, shape: Shape) -> BertForSequenceClassification:
    """A standalone model holding the prefix slices of `model`'s weights for `shape`."""
    base = model.config
    if not shape.is_valid():
        raise ValueError(f"hidden {shape.hidden} is not divisible by heads {shape.heads}")
    big = Shape.of_config(base)
    if shape.layers > big.layers or shape.hidden > big.hidden or shape.heads > big.heads or shape.ffn > big.ffn:
        raise ValueError(f"shape {shape.key} exceeds the source model {big.key}")
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
