"""A job's hard limits on a student (spec `constraints`: p50 / p90 latency in ms, and `min_speedup` over the teacher, a
latency budget that travels between machines), applied the same way wherever candidates are compared: the search's
strategies, the finals' choice and the front.

A strategy is told a candidate over a limit with its metric lowered below every candidate within the limits (by 1 plus
its violation: metrics are scores in [0, 1]). Every strategy then ranks every feasible candidate above it, and among those
over a limit the nearer ones first (Deb's rule for constraints, as a penalty any strategy takes). With a latency limit
the penalised point is also slower than every feasible one, so it is dominated by all of them."""

from __future__ import annotations

LIMITS = (("p50_ms", "latency_p50_ms"), ("p90_ms", "latency_p90_ms"))


def violation(point: dict, constraints: dict) -> float:
    """How far a measured point ({"p50_ms", "p90_ms", "speedup"}, any missing) is over the limits, each as a share
    of its limit, summed (0.0: within every limit). A figure the point lacks is not held against it."""
    cons = constraints or {}
    over = 0.0
    for field, name in LIMITS:
        if cons.get(name) is not None and point.get(field) is not None:
            over += max(0.0, point[field] / cons[name] - 1.0)
    if cons.get("min_speedup") is not None and point.get("speedup"):
        over += max(0.0, cons["min_speedup"] / point["speedup"] - 1.0)
    return over


def as_told(objectives: dict, constraints: dict) -> dict:
    """The objectives a strategy is told: unchanged within the limits ({} stays {}); over them, the metric lowered
    below every feasible candidate's."""
    v = violation(objectives, constraints) if objectives else 0.0
    return {**objectives, "metric": objectives["metric"] - 1.0 - v, "violation": v} if v > 0 else objectives


def feasible(trials_objectives: list[dict], constraints: dict) -> list[int]:
    """Indices of the points within every limit."""
    return [i for i, o in enumerate(trials_objectives) if o and violation(o, constraints) == 0.0]


def describe(constraints: dict) -> str:
    """The limits in words ('p90 <= 5 ms, >= 10x the teacher's speed'); '' with none."""
    cons = constraints or {}
    parts = [f"{f[:3]} <= {cons[n]:g} ms" for f, n in LIMITS if cons.get(n) is not None]
    if cons.get("min_speedup") is not None:
        parts.append(f">= {cons['min_speedup']:g}x the teacher's speed")
    return ", ".join(parts)


__all__ = ["as_told", "describe", "feasible", "violation"]
