"""Hypervolume over wall-clock time: the events a job's trials produced, and the curve they draw."""

from __future__ import annotations

from nas.students.shape import Shape


def trial_events(trials: list[dict], metric: str, search_start: float, search_end: float, teacher_latency_ms: float,
                 known_speedups: dict[str, float] | None = None) -> list[tuple[float, str, float, float]]:
    """(seconds since search start, shape key, dev metric, latency relative to the teacher) for every student model a job
    produced, in time order. A per-trial or proxy point counts when its trial finished. A `final` metric (the supernet
    schedule's standalone distillation) replaces its trial's proxy point when that final metric was written (its
    timestamp; `search_end` for metrics without one). Latency relative to the teacher: the trial's same-round `speedup`
    when it has one; a latency row reused from the store's cache has none, so `known_speedups[shape key]` (the speedup
    measured with that row) when given, else p50 / the job's teacher p50."""
    import datetime as dt

    def epoch(t):
        return t.replace(tzinfo=dt.timezone.utc).timestamp() if t.tzinfo is None else t.timestamp()

    out = []
    for t in trials:
        if t["kind"] != "student" or t["state"] != "COMPLETE" or not t["latency"] or t["finished_at"] is None:
            continue
        vals = {(m["name"], m["source"]): m["value"] for m in t["metrics"] if m["split"] == "dev"}
        key = Shape.from_dict(t["config"]["shape"]).key
        speedup = vals.get(("speedup", "final"), vals.get(("speedup", "proxy"))) or (known_speedups or {}).get(key)
        rel = 1.0 / speedup if speedup else t["latency"][-1]["p50_ms"] / teacher_latency_ms
        first = vals.get((metric, "proxy"), vals.get((metric, "final")))
        if first is not None:
            out.append((epoch(t["finished_at"]) - search_start, key, first, rel))
        if (metric, "proxy") in vals and (metric, "final") in vals:
            stamps = [m["created_at"] for m in t["metrics"] if m.get("created_at") is not None
                      and (m["name"], m["split"], m["source"]) == (metric, "dev", "final")]
            when = epoch(max(stamps)) if stamps else search_end  # the final's own time; an older store: the stage end
            out.append((min(when, search_end) - search_start, key, vals[(metric, "final")], rel))
    return sorted(out)


def hv_curve(events: list[tuple[float, str, float, float]], reference: tuple[float, float]) -> list[tuple[float, float]]:
    """(time, hypervolume) after each event; a later event of the same key replaces that key's point. Objectives: metric
    up, relative latency down; `reference` = (metric, relative latency) that bounds the volume."""
    from nas.search.pareto import hypervolume

    points: dict[str, tuple[float, float]] = {}
    out = []
    for t, key, m, lat in sorted(events):
        points[key] = (m, lat)
        out.append((t, hypervolume([list(p) for p in points.values()], list(reference), [True, False])))
    return out


def hv_at(curve: list[tuple[float, float]], t: float) -> float:
    """Hypervolume reached by time t (0 before the first point)."""
    hv = 0.0
    for ti, h in curve:
        if ti > t:
            break
        hv = h
    return hv


def time_to_reach(curve: list[tuple[float, float]], target: float, budget_s: float | None = None) -> float | None:
    """First time the curve reaches `target` (within the budget), else None."""
    for t, h in curve:
        if budget_s is not None and t > budget_s:
            return None
        if h >= target - 1e-12:
            return max(t, 0.0)
    return None
