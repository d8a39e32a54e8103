"""A job's front: teacher, students, assistant and references as comparable rows (same fingerprint and settings as
the teacher's measurement), the Pareto front, its hypervolume, and which front points a reference dominates."""

from __future__ import annotations

from nas.search.constraints import violation
from nas.spec.errors import SpecError
from nas.spec.job import latency_targets
from nas.store.records import metric_value, seed_members
from nas.store.store import Store


KEY = ("fingerprint_id", "batch", "seq_len", "dtype", "runtime")  # rows comparable with the teacher's
REFERENCE_KEY = ("fingerprint_id", "batch", "seq_len")  # references run their own runtime, end to end from raw text


def job_targets(spec: dict) -> list[dict]:
    """A job's deployment targets (name and settings), the search objective first, from its stored spec."""
    return latency_targets((spec or {}).get("latency") or {})


def target_index(targets: list[dict], target: int | str | None) -> int:
    """The index of `target` (an index, a name or None: the first) among `targets`; SpecError when there is none."""
    if target is None:
        return 0
    names = [t["name"] for t in targets]
    if isinstance(target, str) and target in names:
        return names.index(target)
    if isinstance(target, int) or str(target).isdigit():
        if int(target) < len(targets):
            return int(target)
    raise SpecError("--target", f"no latency target {target!r} in this job; its targets: {', '.join(names)}")


def teacher_row(teacher: dict | None, target: dict, first: bool) -> dict | None:
    """The teacher's measurement on `target`: its last row for the first target (the objective is measured last),
    else its last row taken with the target's settings."""
    rows = teacher["latency"] if teacher else []
    if first or not rows:
        return rows[-1] if rows else None
    fields = [f for f in ("runtime", "dtype", "batch", "seq_len", "threads", "device") if target[f] != "auto"]
    return next((r for r in reversed(rows) if all(r[f] == target[f] for f in fields)), None)


def comparable(t: dict, t_lat: dict | None, key=KEY) -> dict | None:
    """A trial's last row measured where and as the teacher's `t_lat` was (its last row when there is no teacher)."""
    if not t["latency"]:
        return None
    if t_lat is None:
        return t["latency"][-1]
    return next((r for r in reversed(t["latency"]) if all(r[k] == t_lat[k] for k in key)), None)


def all_fronts(store: Store, job_id: int, trials: list[dict] | None = None) -> list[dict]:
    """`front_rows` of every deployment target of the job, the search objective's first."""
    job = store.get_job(job_id)
    if job is None:
        raise SpecError("JOB", f"no job {job_id} in {store.url}")
    every = trials if trials is not None else store.trials(job_id)
    return [front_rows(store, job_id, every, i) for i in range(len(job_targets(job["spec"])))]


def front_rows(store: Store, job_id: int, trials: list[dict] | None = None, target: int | str | None = None) -> dict:
    """Teacher, students and the Pareto front of a job on one deployment target (`target`: its index or name; default
    the first, the search objective), comparable rows only (same fingerprint and settings as the teacher's measurement
    on it). `trials`: the job's trials already loaded (`store.trials(job_id)`), to read them once."""
    from nas.search.pareto import hypervolume, pareto_front

    job = store.get_job(job_id)
    if job is None:
        raise SpecError("JOB", f"no job {job_id} in {store.url}")
    spec = job["spec"]
    metric = spec["objectives"]["metric"]
    pct = spec["objectives"]["latency"]
    use_size = spec["objectives"].get("size", False)
    targets = job_targets(spec)
    index = target_index(targets, target)
    every = trials if trials is not None else store.trials(job_id)

    def of(kind: str) -> list[dict]:
        return [t for t in every if t["kind"] == kind and t["state"] == "COMPLETE"]

    teacher = next(iter(of("teacher")), None)
    t_lat = teacher_row(teacher, targets[index], index == 0)
    own = index == 0  # the stored `speedup` metric is the objective target's
    rows = [front_row(t, metric, pct, lat, t_lat, own) for t in of("student") if (lat := comparable(t, t_lat))]
    cons = spec.get("constraints") or {}
    for r in rows:  # a point over a limit (latency, min_speedup) is shown but never on the front
        r["meets_constraints"] = violation(r, cons) == 0.0
    feasible = [i for i, r in enumerate(rows) if r["meets_constraints"]]
    objs = [[r["metric"], r["latency_ms"]] + ([r["params"]] if use_size else []) for r in rows]
    maximize = [True, False] + ([False] if use_size else [])
    front = [feasible[j] for j in pareto_front([objs[i] for i in feasible], maximize)] if feasible else []
    for i, r in enumerate(rows):
        r["on_front"] = i in front
    t_row = front_row(teacher, metric, pct, t_lat, t_lat) if teacher and t_lat else None
    assistants = [(t, lat) for t in of("assistant") if (lat := comparable(t, t_lat))]
    a_row = None
    if assistants:
        best, lat = max(assistants, key=lambda a: metric_value(a[0], "tau", "dev", "proxy") or float("-inf"))
        a_row = front_row(best, metric, pct, lat, t_lat, own)
        a_row["tau"] = metric_value(best, "tau", "dev", "proxy")
    hv = hv_norm = None
    baseline = metric_value(teacher, "baseline_majority", "dev") if teacher else None
    if t_row and rows:
        ref = [0.0, t_row["latency_ms"]] + ([t_row["params"]] if use_size else [])
        hv = hypervolume([objs[i] for i in front], ref, maximize)
        hv_norm = normalised_hypervolume([rows[i] for i in front], t_row, baseline or 0.0)
    for r in rows:  # what a person reads: the share of the teacher's metric kept, on dev and on test
        retention(r, t_row)
    same = sorted(r["reference_p50_ms"] for r in rows if r.get("reference_p50_ms"))
    if t_row and same:  # the teacher's p50 from the rounds its students were timed in (the speedups' own figure)
        t_row["same_round_p50_ms"] = same[len(same) // 2]
    front_pts = sorted((rows[i] for i in front), key=lambda r: r["latency_ms"])
    references, overhead = reference_rows(of("reference"), metric, pct, t_lat, front_pts)
    return {"job": job, "metric": metric, "latency": pct, "teacher": t_row, "assistant": a_row, "rows": rows,
            "references": references, "student_tokenizer_ms": overhead, "front": front_pts, "hypervolume": hv,
            "hypervolume_norm": hv_norm, "baseline": baseline,
            "fingerprint": t_lat["fingerprint"] if t_lat else None, "target": targets[index], "targets": targets}


def retention(row: dict, t_row: dict | None) -> None:
    """`retention` (dev metric / the teacher's) and `test_retention` on a front row, where both are known."""
    tm, tt = (t_row or {}).get("metric"), (t_row or {}).get("test_metric")
    row["retention"] = row["metric"] / tm if tm and row.get("metric") is not None else None
    row["test_retention"] = row["test_metric"] / tt if tt and row.get("test_metric") is not None else None


def normalised_hypervolume(front: list[dict], t_row: dict, baseline: float) -> float | None:
    """The share (0-1) of the box between the majority-class baseline and the teacher (metric from the baseline up to
    the teacher's, latency from 0 up to the teacher's) that the front dominates. 1: a student as good as the teacher
    at no latency; 0: nothing better than the baseline and faster than the teacher."""
    from nas.search.pareto import hypervolume

    span = t_row["metric"] - baseline
    if span <= 0 or not t_row["latency_ms"]:
        return None
    pts = [[min(1.0, max(0.0, (r["metric"] - baseline) / span)), min(1.0, r["latency_ms"] / t_row["latency_ms"])]
           for r in front]
    return float(hypervolume(pts, [0.0, 1.0], [True, False])) if pts else 0.0


def reference_rows(ref_trials: list[dict], metric: str, pct: str, t_lat: dict | None, front: list[dict]):
    """The references measured where and with the batch and length of the teacher's row, each with how many front
    points it dominates end to end; and the tokenisation every student adds (the teacher reference's tokenizer)."""
    overhead = 0.0
    for t in ref_trials:
        if t["config"].get("name") == "teacher":
            overhead = metric_value(t, "tokenizer_p50_ms" if pct == "p50" else "tokenizer_p90_ms", "dev") or 0.0
    references = []
    if t_lat:
        for t in ref_trials:
            lat = t["latency"][-1] if t["latency"] else None
            if lat is None or any(lat[k] != t_lat[k] for k in REFERENCE_KEY):
                continue
            r = front_row(t, metric, pct, lat, t_lat)
            r.update({"name": t["config"].get("name"), "type": t["config"].get("type"), "speedup": None})
            r["dominated_front_points"] = dominance(front, r, overhead)
            r["front_points"] = len(front)
            references.append(r)
    return references, overhead


def front_row(t: dict, metric: str, pct: str, lat: dict, t_lat: dict | None, stored_speedup: bool = True) -> dict:
    """One trial's point from its latency row `lat`; speedup against the teacher's row `t_lat` (the trial's stored
    `speedup` metric, a same-round ratio, when `stored_speedup`: it belongs to the objective target)."""
    lat_ms = lat["p50_ms"] if pct == "p50" else lat["p90_ms"]
    t_ms = (t_lat["p50_ms"] if pct == "p50" else t_lat["p90_ms"]) if t_lat else None
    stored = metric_value(t, "speedup", "dev") if pct == "p50" and stored_speedup else None
    return {
        "trial": t["number"], "kind": t["kind"], "shape": t["config"].get("shape"), "metric": metric_value(t, metric, "dev"),
        "source": "final" if metric_value(t, metric, "dev", "final") is not None else "proxy",
        "proxy_metric": metric_value(t, metric, "dev", "proxy"), "final_metric": metric_value(t, metric, "dev", "final"),
        "test_metric": metric_value(t, metric, "test"), "latency_ms": lat_ms, "p50_ms": lat["p50_ms"],
        "p90_ms": lat["p90_ms"], "cv": lat["cv"], "params": metric_value(t, "params", "dev") or 0,
        "size_mb": metric_value(t, "size_mb", "dev") or round((metric_value(t, "params", "dev") or 0) * 4e-6, 3),
        "speedup": stored or ((t_ms / lat_ms) if t_ms and lat_ms else None),
        "runtime": lat.get("runtime"), "dtype": lat.get("dtype"), "fingerprint_id": lat.get("fingerprint_id"),
        "busy": bool(lat.get("busy")), "reference_p50_ms": lat.get("reference_p50_ms"),
        "member_test_metrics": seed_members(t, metric),  # final.seeds: the kept model averages these members
    }


def seeds_text(seeds: int, low: float | None, high: float | None, metric: str) -> str:
    """How a final kept as the weight average of `seeds` seeds' finals scored, its members alone on test (`low` to
    `high`): the clause the job's closing lines and the dashboard add ('' for a final of one seed)."""
    if seeds < 2 or low is None or high is None:
        return ""
    return f"the weight average of {seeds} seeds' finals (each alone: test {metric} {low:.4f}-{high:.4f})"


def dominance(front: list[dict], ref: dict, student_overhead_ms: float = 0.0) -> int:
    """How many front points `ref` dominates: at least as good on the metric and at least as fast end to end (the
    student's latency plus `student_overhead_ms`), strictly better on one."""
    n = 0
    for p in front:
        lat = p["latency_ms"] + student_overhead_ms
        if ref["metric"] >= p["metric"] and ref["latency_ms"] <= lat and (ref["metric"] > p["metric"] or ref["latency_ms"] < lat):
            n += 1
    return n
