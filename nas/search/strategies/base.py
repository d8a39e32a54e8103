"""The contract of a search strategy.

A strategy never trains or measures anything: `ask(n)` proposes shapes, `tell(shape, objectives)` receives what the caller
measured ({"metric": higher-is-better, "latency_ms": lower-is-better, optionally "params"}; {} for a failed trial)."""

from __future__ import annotations

import numpy as np

from nas.search.space import sample_unique
from nas.spec.space import StudentSpace
from nas.students.shape import Shape

AXES = ("layers", "hidden", "heads", "ffn")


class Strategy:
    def __init__(self, space: StudentSpace, seed: int, **options):
        self.space = space
        self.rng = np.random.default_rng(seed)
        self.seen: set[str] = set()
        self.results: list[tuple[Shape, dict]] = []

    def ask(self, n: int) -> list[Shape]:
        raise NotImplementedError

    def tell(self, shape: Shape, objectives: dict) -> None:
        self.seen.add(shape.key)
        if objectives:
            self.results.append((shape, objectives))


def python_int(v) -> int:
    return int(v.item() if isinstance(v, np.generic) else v)


class KnownAnswers(Strategy):
    """Shared bookkeeping: answers for shapes already known, and random fill when the searcher stops proposing new ones."""

    def __init__(self, space: StudentSpace, seed: int):
        super().__init__(space, seed)
        self.known: dict[str, dict] = {}  # shape key -> objectives told

    def tell(self, shape: Shape, objectives: dict) -> None:
        super().tell(shape, objectives)
        if objectives:
            self.known[shape.key] = objectives

    def _fill(self, out: list[Shape], n: int) -> list[Shape]:
        if len(out) < n:  # the searcher keeps proposing shapes already tried: fresh random ones instead
            extra = sample_unique(self.space, n - len(out), self.rng, self.seen)
            self.seen.update(s.key for s in extra)
            out += extra
        return out
