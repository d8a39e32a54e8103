"""A job's front: teacher, students, assistant and references as comparable rows (same fingerprint and settings as
the teacher's measurement), the Pareto front, its hypervolume, and which front points a reference dominates."""

from __future__ import annotations

from nas.spec.errors import SpecError
from nas.store.records import metric_value
from nas.store.store import Store


def front_rows(store: Store, job_id: int, trials: list[dict] | None = None) -> dict:
    """Teacher, students and the Pareto front of a job, comparable rows only (same fingerprint and settings as the
    teacher's measurement). `trials`: the job's trials already loaded (`store.trials(job_id)`), to read them once."""
    from nas.search.pareto import hypervolume, pareto_front

    job = store.get_job(job_id)
    if job is None:
        raise SpecError("JOB", f"no job {job_id} in {store.url}")
    spec = job["spec"]
    metric = spec["objectives"]["metric"]
    pct = spec["objectives"]["latency"]
    use_size = spec["objectives"].get("size", False)
    every = trials if trials is not None else store.trials(job_id)

    def of(kind: str) -> list[dict]:
        return [t for t in every if t["kind"] == kind and t["state"] == "COMPLETE"]

    teacher = next(iter(of("teacher")), None)
    rows = []
    t_lat = teacher["latency"][-1] if teacher and teacher["latency"] else None
    for t in of("student"):
        if not t["latency"]:
            continue
        lat = t["latency"][-1]
        if t_lat and (lat["fingerprint_id"], lat["batch"], lat["seq_len"], lat["dtype"], lat["runtime"]) != (
                t_lat["fingerprint_id"], t_lat["batch"], t_lat["seq_len"], t_lat["dtype"], t_lat["runtime"]):
            continue  # never mix measurements taken elsewhere or otherwise
        rows.append(front_row(t, metric, pct, lat, t_lat))
    cons = spec.get("constraints") or {}
    limits = {f: cons.get(f"latency_{f}_ms") for f in ("p50", "p90") if cons.get(f"latency_{f}_ms") is not None}
    for r in rows:  # a point over a latency limit is shown but never on the front
        r["meets_constraints"] = all(r[f"{f}_ms"] <= ms for f, ms in limits.items())
    feasible = [i for i, r in enumerate(rows) if r["meets_constraints"]]
    objs = [[r["metric"], r["latency_ms"]] + ([r["params"]] if use_size else []) for r in rows]
    maximize = [True, False] + ([False] if use_size else [])
    front = [feasible[j] for j in pareto_front([objs[i] for i in feasible], maximize)] if feasible else []
    for i, r in enumerate(rows):
        r["on_front"] = i in front
    t_row = front_row(teacher, metric, pct, t_lat, t_lat) if teacher and t_lat else None
    assistants = [t for t in of("assistant") if t["latency"]]
    a_row = None
    if assistants:
        best = max(assistants, key=lambda t: metric_value(t, "tau", "dev", "proxy") or float("-inf"))
        a_row = front_row(best, metric, pct, best["latency"][-1], t_lat)
        a_row["tau"] = metric_value(best, "tau", "dev", "proxy")
    hv = None
    if t_row and rows:
        ref = [0.0, t_row["latency_ms"]] + ([t_row["params"]] if use_size else [])
        hv = hypervolume([objs[i] for i in front], ref, maximize)
    references, overhead = [], 0.0
    ref_trials = of("reference")
    for t in ref_trials:
        if t["config"].get("name") == "teacher":
            overhead = metric_value(t, "tokenizer_p50_ms" if pct == "p50" else "tokenizer_p90_ms", "dev") or 0.0
    if t_lat:
        from nas.results.front import dominance

        for t in ref_trials:
            lat = t["latency"][-1] if t["latency"] else None
            if lat is None or (lat["fingerprint_id"], lat["batch"], lat["seq_len"]) != (
                    t_lat["fingerprint_id"], t_lat["batch"], t_lat["seq_len"]):
                continue
            r = front_row(t, metric, pct, lat, t_lat)
            r.update({"name": t["config"].get("name"), "type": t["config"].get("type"), "speedup": None})
            front_pts = [rows[i] for i in front]
            r["dominated_front_points"] = dominance(front_pts, r, overhead)
            r["front_points"] = len(front_pts)
            references.append(r)
    return {"job": job, "metric": metric, "latency": pct, "teacher": t_row, "assistant": a_row, "rows": rows,
            "references": references, "student_tokenizer_ms": overhead,
            "front": sorted((rows[i] for i in front), key=lambda r: r["latency_ms"]), "hypervolume": hv,
            "fingerprint": t_lat["fingerprint"] if t_lat else None}


def front_row(t: dict, metric: str, pct: str, lat: dict, t_lat: dict | None) -> dict:
    lat_ms = lat["p50_ms"] if pct == "p50" else lat["p90_ms"]
    t_ms = (t_lat["p50_ms"] if pct == "p50" else t_lat["p90_ms"]) if t_lat else None
    return {
        "trial": t["number"], "kind": t["kind"], "shape": t["config"].get("shape"), "metric": metric_value(t, metric, "dev"),
        "source": "final" if metric_value(t, metric, "dev", "final") is not None else "proxy",
        "proxy_metric": metric_value(t, metric, "dev", "proxy"), "final_metric": metric_value(t, metric, "dev", "final"),
        "test_metric": metric_value(t, metric, "test"), "latency_ms": lat_ms, "p50_ms": lat["p50_ms"],
        "p90_ms": lat["p90_ms"], "cv": lat["cv"], "params": metric_value(t, "params", "dev") or 0,
        "speedup": (metric_value(t, "speedup", "dev") if pct == "p50" else None) or ((t_ms / lat_ms) if t_ms and lat_ms else None),
        "runtime": lat.get("runtime"), "dtype": lat.get("dtype"),
    }


def dominance(front: list[dict], ref: dict, student_overhead_ms: float = 0.0) -> int:
    """How many front points `ref` dominates: at least as good on the metric and at least as fast end to end (the
    student's latency plus `student_overhead_ms`), strictly better on one."""
    n = 0
    for p in front:
        lat = p["latency_ms"] + student_overhead_ms
        if ref["metric"] >= p["metric"] and ref["latency_ms"] <= lat and (ref["metric"] > p["metric"] or ref["latency_ms"] < lat):
            n += 1
    return n
