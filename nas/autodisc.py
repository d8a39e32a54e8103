"""AutoDisc: choose a teacher assistant between the teacher and the students.

Candidates are the shapes of the spec's assistant grid; each is scored on the supernet with inherited weights (P, the dev
metric) and by its scale relative to the teacher (parameters, or measured latency). The λ-tradeoff τ = P + λ·(1 − scale)
rewards accuracy and penalises size; the best τ is the assistant, and distillation runs teacher -> assistant -> student.
"""

from __future__ import annotations

from dataclasses import dataclass

from nas.search.space import all_shapes
from nas.spec import StudentSpace
from nas.supernet import Shape


@dataclass
class Candidate:
    shape: Shape
    metric: float  # P: proxy dev metric on the supernet
    scale: float  # size or latency relative to the teacher, in (0, 1]
    tau: float = 0.0


def tradeoff(metric: float, scale: float, lam: float = 0.2) -> float:
    """τ = P + λ·(1 − scale)."""
    return metric + lam * (1.0 - scale)


def assistant_candidates(grid: StudentSpace, teacher: Shape, students: StudentSpace | None = None) -> list[Shape]:
    """Valid shapes of the grid that fit in the teacher and are larger than the largest student shape (by parameters
    proxy: layers x hidden), so an assistant really sits between the two."""
    out = []
    for s in all_shapes(grid):
        if s.layers > teacher.layers or s.hidden > teacher.hidden or s.heads > teacher.heads or s.ffn > teacher.ffn:
            continue
        if students is not None and s.layers * s.hidden <= min(students.layers) * min(students.hidden):
            continue
        out.append(s)
    return out


def rank_candidates(candidates: list[Candidate], lam: float = 0.2) -> list[Candidate]:
    """Candidates sorted by τ, best first (ties: the smaller scale wins)."""
    for c in candidates:
        c.tau = tradeoff(c.metric, c.scale, lam)
    return sorted(candidates, key=lambda c: (-c.tau, c.scale))
