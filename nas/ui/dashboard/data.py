"""What the dashboard shows, as plain functions over the store (tested and benchmarked without a browser).

Everything here reads; only `enqueue_job` writes (the submit page), through a separate writable store."""

from __future__ import annotations

import io
import pathlib
import tempfile
import zipfile

import numpy as np
import pandas as pd

from nas.store.records import seed_members
from nas.store.store import Store

SHAPE_COLS = ("layers", "hidden", "heads", "ffn")
HPARAM_KEYS = ("lr", "alpha_soft", "beta_hard", "temperature", "warmup_ratio", "batch_size", "weight_decay")


def jobs_table(store: Store) -> pd.DataFrame:
    """One row per job: status, stage, progress (trials done / budget), best dev metric, start time."""
    rows = []
    best = store.best_metrics()
    for j in store.list_jobs():
        spec = j.get("spec") or {}
        budget = (spec.get("budgets") or {}).get("trials")
        metric = (spec.get("objectives") or {}).get("metric", "accuracy")
        rows.append({"id": j["id"], "name": j["name"], "status": j["status"], "stage": j["stage"],
                     "done": j["trials_complete"], "budget": budget,
                     "progress": min(1.0, j["trials_complete"] / budget) if budget else None,
                     "best dev": best.get((j["id"], metric)), "metric": metric, "created": j["created_at"]})
    return pd.DataFrame(rows, columns=["id", "name", "status", "stage", "done", "budget", "progress", "best dev", "metric",
                                       "created"])


def with_retention(df: pd.DataFrame, teacher: dict | None) -> pd.DataFrame:
    """`retention` / `test_retention`: each row's dev / test metric as a share of the teacher's."""
    df = df.copy()
    tm, tt = (teacher or {}).get("metric"), (teacher or {}).get("test_metric")
    df["retention"] = df["metric"] / tm if tm else np.nan
    df["test_retention"] = df["test"] / tt if tt else np.nan
    return df


def best_within(df: pd.DataFrame, budget_ms: float | None = None, speedup: float | None = None):
    """The most accurate completed student (dev) within a p50 budget in ms, or at least a speedup; None if none."""
    ok = df[(df["kind"] == "student") & (df["state"] == "COMPLETE") & df["metric"].notna()]
    if budget_ms is not None:
        ok = ok[ok["p50_ms"].notna() & (ok["p50_ms"] <= budget_ms)]
    if speedup is not None:
        ok = ok[ok["speedup"].notna() & (ok["speedup"] >= speedup)]
    return None if ok.empty else ok.sort_values(["metric", "p50_ms"], ascending=[False, True]).iloc[0]


def deploy_sentence(row, metric: str) -> str:
    """What to deploy, in words: 'Trial 12 (L2-H256-A4-F512) keeps 95.1% of the teacher's accuracy at 9.8x its speed,
    p50 1.234 ms, 14.0 MB.', and, for a final that averages several seeds' weights, how its members scored alone."""
    from nas.results.front import seeds_text

    keep = row["test_retention"] if row.get("test_retention") == row.get("test_retention") else row["retention"]
    speed = f"{row['speedup']:.1f}x its speed" if row["speedup"] == row["speedup"] and row["speedup"] else "-"
    size = f"{row['size_mb']:.1f} MB" if row["size_mb"] == row["size_mb"] and row["size_mb"] else "size unknown"
    out = (f"Trial {int(row['trial'])} ({row['shape']}) keeps {100 * keep:.1f}% of the teacher's {metric} at {speed}, "
           f"p50 {row['p50_ms']:.3f} ms, {size}.")
    low, high = row.get("members_test_min"), row.get("members_test_max")
    soup = seeds_text(int(row.get("seeds") or 1), None if pd.isna(low) else low, None if pd.isna(high) else high,
                      metric)
    return out + (f" It is {soup}." if soup else "")


def shape_label(shape: dict) -> str | None:
    """A stored shape as one short label: L2-H128-A4-F512 for a BERT slice, its key for another family's."""
    from nas.students.arch import student_shape

    return student_shape(shape).key if shape else None


def trial_frame(trials: list[dict], metric: str = "accuracy") -> pd.DataFrame:
    """Every trial as a row: kind, state, shape, dev/test metric (final preferred, proxy kept), latency, hyperparameters."""
    rows = []
    for t in trials:
        cfg = t["config"] or {}
        shape = cfg.get("shape") or {}
        vals: dict[tuple, float] = {}
        for m in t["metrics"]:
            vals[(m["name"], m["split"], m["source"])] = m["value"]
        lat = t["latency"][-1] if t["latency"] else {}
        row = {"trial": t["number"], "kind": t["kind"], "state": t["state"],
               "family": (shape.get("family") or "bert") if shape else None, "shape": shape_label(shape),
               **{c: shape.get(c) for c in SHAPE_COLS},
               "name": cfg.get("name"),
               "proxy": vals.get((metric, "dev", "proxy")), "final": vals.get((metric, "dev", "final")),
               "test": vals.get((metric, "test", "final"), vals.get((metric, "test", "proxy"))),
               "params": vals.get(("params", "dev", "final"), vals.get(("params", "dev", "proxy"))),
               "speedup": vals.get(("speedup", "dev", "final"), vals.get(("speedup", "dev", "proxy"))),
               "size_mb": vals.get(("size_mb", "dev", "final"), vals.get(("size_mb", "dev", "proxy"))),
               "p50_ms": lat.get("p50_ms"), "p90_ms": lat.get("p90_ms"), "cv": lat.get("cv"),
               "runtime": lat.get("runtime"), "dtype": lat.get("dtype"), "fingerprint_id": lat.get("fingerprint_id"),
               "finished_at": t["finished_at"], "error": (t["error"] or "").splitlines()[0] if t["error"] else None}
        # final.seeds: the kept final averages the weights of `seeds` members, each scored alone on test (scalar
        # columns: the export page and the CSV read every cell as one value)
        members = seed_members(t, metric)
        row["seeds"] = max(1, len(members))
        row["members_test_min"], row["members_test_max"] = min(members, default=None), max(members, default=None)
        row["metric"] = row["final"] if row["final"] is not None else row["proxy"]
        row["source"] = "final" if row["final"] is not None else ("proxy" if row["proxy"] is not None else None)
        distill = cfg.get("distill") or {}
        for k in HPARAM_KEYS:
            row[k] = distill.get(k)
        rows.append(row)
    return pd.DataFrame(rows)


TARGET_COLS = ("p50_ms", "p90_ms", "cv", "runtime", "dtype", "fingerprint_id", "speedup")


def target_frame(df: pd.DataFrame, front: dict) -> pd.DataFrame:
    """The trial frame as measured on one latency target: each student's latency columns from its row on the target
    (`front_rows(...)["rows"]`); students without one are left out, the other kinds kept as they are."""
    if df.empty:
        return df
    by_trial = {r["trial"]: r for r in front["rows"]}
    out = df[(df["kind"] != "student") | df["trial"].isin(list(by_trial))].copy()
    students = out["kind"] == "student"
    for col in TARGET_COLS:
        out[col] = out[col].astype(object)
        out.loc[students, col] = [by_trial[t][col] for t in out.loc[students, "trial"]]
    for col in ("p50_ms", "p90_ms", "cv", "speedup"):
        out[col] = pd.to_numeric(out[col])
    return out


def targets_table(fronts: list[dict]) -> pd.DataFrame:
    """One row per latency target: its settings, the teacher's latency on it, the front's size and hypervolume."""
    rows = []
    for f in fronts:
        t, teacher = f["target"], f["teacher"] or {}
        settings = {k: t[k] for k in ("device", "runtime", "dtype", "batch", "seq_len", "threads")}
        rows.append({"target": t["name"], **settings, "teacher_ms": teacher.get("latency_ms"), "students": len(f["rows"]),
                     "front points": len(f["front"]),
                     "best speedup": max((r["speedup"] or 0 for r in f["front"]), default=None),
                     "hypervolume": f["hypervolume"]})
    return pd.DataFrame(rows)


def front_mask(df: pd.DataFrame, x: str = "p50_ms", y: str = "metric") -> np.ndarray:
    """Boolean mask of the non-dominated rows (y up, x down; x up for speedup) among rows with both values."""
    from nas.search.pareto import pareto_front

    ok = df[x].notna() & df[y].notna()
    idx = np.flatnonzero(ok.to_numpy())
    mask = np.zeros(len(df), dtype=bool)
    if len(idx):
        pts = np.column_stack([df[y].to_numpy()[idx], df[x].to_numpy()[idx]]).tolist()
        mask[idx[pareto_front(pts, [True, x == "speedup"])]] = True  # speedup: higher is better
    return mask


def hv_over_time(df: pd.DataFrame, ref_latency: float, x: str = "p50_ms", y: str = "metric",
                 points: int = 60) -> pd.DataFrame:
    """Hypervolume of the front of the first k completed students (in finishing order) at up to `points` values of k.
    One pass: the running front is updated point by point (a front is small), its hypervolume taken at the checkpoints."""
    from nas.search.pareto import hypervolume

    done = df[(df["kind"] == "student") & df[x].notna() & df[y].notna()].sort_values("finished_at")
    if done.empty:
        return pd.DataFrame(columns=["finished_at", "trials", "hypervolume"])
    ys, xs = done[y].to_numpy(), done[x].to_numpy()
    checkpoints = set(np.unique(np.linspace(1, len(done), min(points, len(done))).astype(int)).tolist())
    front: list[tuple[float, float]] = []
    out = []
    for k in range(1, len(done) + 1):
        p = (float(ys[k - 1]), float(xs[k - 1]))
        if not any(q[0] >= p[0] and q[1] <= p[1] for q in front):
            front = [q for q in front if not (p[0] >= q[0] and p[1] <= q[1])] + [p]
        if k in checkpoints:
            out.append({"finished_at": done["finished_at"].iloc[k - 1], "trials": k,
                        "hypervolume": hypervolume([list(q) for q in front], [0.0, ref_latency], [True, False])})
    return pd.DataFrame(out)


def importance(df: pd.DataFrame, target: str = "metric", max_rows: int = 800, seed: int = 0) -> pd.Series:
    """Which shape axes and hyperparameters explain the metric: random-forest impurity importances over the varying
    columns (empty when fewer than 8 completed rows or nothing varies)."""
    from sklearn.ensemble import RandomForestRegressor

    cols = [c for c in (*SHAPE_COLS, *HPARAM_KEYS) if c in df and df[c].notna().all() and df[c].nunique() > 1]
    data = df[df[target].notna()]
    if len(data) < 8 or not cols:
        return pd.Series(dtype=float)
    data = data.sample(min(max_rows, len(data)), random_state=seed)
    rf = RandomForestRegressor(n_estimators=25, max_depth=8, random_state=seed, n_jobs=1).fit(data[cols].astype(float), data[target])
    return pd.Series(rf.feature_importances_, index=cols).sort_values(ascending=False)


def rank_agreement(df: pd.DataFrame) -> dict:
    """Kendall τ between proxy and final dev metric over trials that have both."""
    from scipy.stats import kendalltau

    both = df[df["proxy"].notna() & df["final"].notna()]
    if len(both) < 3:
        return {"n": len(both), "kendall_tau": None}
    return {"n": len(both), "kendall_tau": float(kendalltau(both["proxy"], both["final"]).statistic)}


def pick_by_constraint(df: pd.DataFrame, max_ms: float, field: str = "p90_ms") -> pd.Series | None:
    """The most accurate completed student whose measured `field` is within `max_ms`."""
    ok = df[(df["kind"] == "student") & (df["state"] == "COMPLETE") & df["metric"].notna() & (df[field] <= max_ms)]
    return None if ok.empty else ok.sort_values(["metric", field], ascending=[False, True]).iloc[0]


def export_zip(store: Store, job_id: int, trial_number: int, formats=("hf", "onnx", "int8")) -> bytes:
    """`nas export` of one trial in `formats`, zipped in memory."""
    from nas.results.export import export_trial

    with tempfile.TemporaryDirectory(prefix="nas-export-") as tmp:
        out = export_trial(store, job_id, trial_number, pathlib.Path(tmp) / f"job{job_id}-trial{trial_number}",
                           formats=tuple(formats))
        buf = io.BytesIO()
        with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
            for f in sorted(out.rglob("*")):
                if f.is_file():
                    z.write(f, f.relative_to(out.parent))
        return buf.getvalue()


def server_side_paths(spec) -> None:
    """A submission from the browser reads files on the server: without $NAS_DATA_ROOT, its search space must be one
    of search_spaces/ (a path elsewhere is refused before anything is opened)."""
    import os

    from nas.spec.errors import SpecError
    from nas.spec.space import SEARCH_SPACE_DIR, search_space_path

    path = search_space_path(spec.search_space)
    if not os.environ.get("NAS_DATA_ROOT") and SEARCH_SPACE_DIR.resolve() not in path.resolve().parents:
        raise SpecError("search_space", "a job submitted from the dashboard uses a search space of search_spaces/ (by "
                        "name), or one under $NAS_DATA_ROOT when the server sets it")


def validate_spec_text(text: str):
    """(spec, None) when the YAML text is a valid job spec (the CLI's own checks, dataset and teacher included), else
    (None, "field: message")."""
    import yaml

    from nas.pipeline import prepare
    from nas.spec.errors import SpecError, load_yaml_text
    from nas.spec.job import parse_spec

    try:
        raw = load_yaml_text(text)
    except yaml.YAMLError as exc:
        return None, f"spec: not valid YAML ({str(exc).splitlines()[0]})"
    except SpecError as exc:
        return None, f"{exc.field}: {exc.message}"
    try:
        spec = parse_spec(raw)
        server_side_paths(spec)
        prepare(spec)
    except SpecError as exc:
        return None, f"{exc.field}: {exc.message}" if hasattr(exc, "message") else str(exc)
    return spec, None


def enqueue_job(url: str | None, spec, plan: dict | None = None) -> int:
    """Write the validated spec as a QUEUED job, with its time estimate when one was made (the only write the
    dashboard makes)."""
    store = Store(url)
    try:
        return store.create_job(spec.name, spec.model_dump(mode="json"), status="QUEUED", plan=plan)
    finally:
        store.dispose()


def plan_table(p: dict) -> list[dict]:
    """`nas plan`'s estimate as rows for the submit page."""
    gpu = (p.get("gpu") or {}).get("stages") or {}
    return [{"stage": k, "minutes": round(v / 60, 2), **({"minutes on the GPU": round(gpu[k] / 60, 2)} if gpu else {})}
            for k, v in p["stages"].items()]
