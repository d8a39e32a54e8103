"""A student shape (layers, hidden, heads, FFN; uniform per layer) and which teacher layers it keeps. No torch here:
the spec, the search and the latency predictor use shapes without loading a model."""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass
from typing import ClassVar

import numpy as np


@dataclass(frozen=True, order=True)
class Shape:
    family: ClassVar[str] = "bert"  # the student family (nas/students); other families' shapes are `arch.Arch`
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
        """The shape of a transformers config of any family in nas/teachers (each names the axes its own way); another
        family's (a teacher that is only distilled from) by BERT's names."""
        from nas.teachers import FAMILIES, family

        return cls(*family(cfg.model_type if cfg.model_type in FAMILIES else "bert").shape_of(cfg))

    def is_valid(self) -> bool:
        return self.hidden % self.heads == 0

    def check_fits(self, big: "Shape") -> None:
        """ValueError unless this shape is valid and a prefix slice of `big` (what it would be extracted from)."""
        if not self.is_valid():
            raise ValueError(f"hidden {self.hidden} is not divisible by heads {self.heads}")
        if not self.fits_in(big):
            raise ValueError(f"shape {self.key} exceeds the source model {big.key}")

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
