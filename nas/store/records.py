"""What the store hands out: plain dicts built from rows, and the readers of a trial dict (`metric_value`,
`trial_objectives`)."""

from __future__ import annotations

from nas.store.models import Job

LATENCY_FIELDS = ("fingerprint", "fingerprint_id", "device", "runtime", "dtype", "batch", "seq_len", "threads", "warmup",
                   "n", "p50_ms", "p90_ms", "mean_ms", "cv")


OPTIONAL_LATENCY_FIELDS = ("load", "busy", "reference_p50_ms")  # absent from rows stored before revision 0004


def latency_columns(m: dict) -> dict:
    missing = [f for f in LATENCY_FIELDS if f not in m]
    if missing:
        raise ValueError(f"latency measurement lacks {missing}")
    return {**{f: m[f] for f in LATENCY_FIELDS}, **{f: m.get(f) for f in OPTIONAL_LATENCY_FIELDS}}


def latency_dict(lm) -> dict:
    """A latency row (ORM object or a mapping row) as a dict."""
    get = lm.__getitem__ if hasattr(lm, "keys") else lambda f: getattr(lm, f)
    d = {f: get(f) for f in LATENCY_FIELDS + OPTIONAL_LATENCY_FIELDS}
    for f in ("config_key", "trial_id", "created_at"):
        d[f] = get(f)
    return d


def job_dict(j: Job) -> dict:
    return {
        "id": j.id, "name": j.name, "spec": j.spec, "status": j.status, "stage": j.stage, "error": j.error,
        "created_at": j.created_at, "started_at": j.started_at, "finished_at": j.finished_at,
        "claimed_by": j.claimed_by, "heartbeat_at": j.heartbeat_at, "cancel_requested": bool(j.cancel_requested),
        "claims": j.claims, "plan": j.plan,
    }


def trial_objectives(trial: dict, metric: str, percentile: str, source: str | None = None) -> dict:
    """{"metric", "latency_ms", "params"} of a completed trial, as strategies and fronts take them, with its p50, p90
    and speedup (what the job's constraints are checked on); {} without latency."""
    lat = trial["latency"][-1] if trial["latency"] else None
    if lat is None:
        return {}
    return {"metric": metric_value(trial, metric, "dev", source),
            "latency_ms": lat["p50_ms"] if percentile == "p50" else lat["p90_ms"],
            "params": metric_value(trial, "params", "dev") or 0,
            "p50_ms": lat["p50_ms"], "p90_ms": lat["p90_ms"], "speedup": metric_value(trial, "speedup", "dev")}


def metric_value(trial: dict, name: str = "accuracy", split: str = "dev", source: str | None = None) -> float | None:
    """Latest value of a metric on a trial dict; `source` None prefers final over proxy."""
    sources = [source] if source else ["final", "proxy"]
    for src in sources:
        vals = [m["value"] for m in trial["metrics"] if m["name"] == name and m["split"] == split and m["source"] == src]
        if vals:
            return vals[-1]
    return None


def seed_members(trial: dict, name: str = "accuracy", split: str = "test") -> list[float]:
    """A final trained with `search.final.seeds` N > 1 (its `seeds` train metric): each member's `name` on `split`,
    scored alone (`seed{i}_<name>`), in seed order; [] for a final of one seed or a trial without a final."""
    seeds = int(metric_value(trial, "seeds", "train", "final") or 1)
    values = [metric_value(trial, f"seed{i}_{name}", split, "final") for i in range(seeds)] if seeds > 1 else []
    return [v for v in values if v is not None]


def stage_times(job: dict, trials: list[dict]) -> list[dict]:
    """[{"stage", "estimate_s", "measured_s"}] of a job: its estimate (`nas plan`, when one was stored) beside the wall
    time each stage took (`wall_s_<stage>` on the teacher's trial, summed over the runs of a resumed job), with a total."""
    teacher = next((t for t in trials if t["kind"] == "teacher"), None)
    measured: dict[str, float] = {}
    for m in (teacher or {}).get("metrics", []):
        if m["name"].startswith("wall_s_"):
            measured[m["name"][7:]] = measured.get(m["name"][7:], 0.0) + m["value"]
    estimate = {k: v for k, v in ((job.get("plan") or {}).get("stages") or {}).items()
                if k not in ("total", "per-candidate instead")}
    names = list(estimate) + [k for k in measured if k not in estimate]
    rows = [{"stage": n, "estimate_s": estimate.get(n), "measured_s": measured.get(n)} for n in names]
    if rows:
        rows.append({"stage": "total", "estimate_s": sum(estimate.values()) if estimate else None,
                     "measured_s": sum(measured.values()) if measured else None})
    return rows
