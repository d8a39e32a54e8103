"""Issue 27's `nas plan` figures: the estimate of every stage against the measured wall time of the same job, run right
after it on this machine (the pipeline stores each stage's wall time on the teacher's trial). Last line: one JSON
object with, per spec, both figures per stage and the error of the total; and the median stage error over all.

    python benchmarks/plan.py                         # the quick, demo and two supernet specs (run it on an idle machine)
    python benchmarks/plan.py --specs examples/rt_demo.yaml
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import statistics
import sys
import tempfile
import time

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
SPECS = ["examples/bbc_quick.yaml", "examples/rt_demo.yaml", "examples/bbc_supernet_quick.yaml",
         "examples/rt_supernet_plan.yaml"]


def one(path: str, workdir: pathlib.Path) -> dict:
    from nas.pipeline import run_job
    from nas.plan import plan
    from nas.spec.job import load_spec
    from nas.store import Store
    from nas.store.records import metric_value

    spec = load_spec(ROOT / path)
    t0 = time.perf_counter()
    est = plan(spec)
    plan_s = time.perf_counter() - t0
    home = pathlib.Path(tempfile.mkdtemp(prefix="plan-", dir=workdir))
    os.environ["NAS_HOME"] = str(home)
    store = Store(f"sqlite:///{home / 'nas.db'}")
    t1 = time.perf_counter()
    job_id = run_job(spec.model_copy(update={"storage": store.url}), store, progress=False, log=lambda m: None)
    wall = time.perf_counter() - t1
    teacher = store.trials(job_id, kind="teacher")[0]
    measured = {k: metric_value(teacher, f"wall_s_{k}", "train") or 0.0 for k in est["stages"] if k != "total"
                and k != "per-candidate instead"}
    measured["total"] = sum(measured.values())
    stages = {k: {"estimate_s": round(est["stages"][k], 1), "measured_s": round(measured[k], 1)} for k in measured}
    errs = {k: abs(v["estimate_s"] - v["measured_s"]) / v["measured_s"] for k, v in stages.items()
            if v["measured_s"] >= 5 and k != "total"}
    return {"spec": path, "teacher_cached": est["teacher_cached"], "stages": stages, "plan_s": round(plan_s, 1),
            "job_wall_s": round(wall, 1), "total_error": round(abs(stages["total"]["estimate_s"] - measured["total"])
                                                             / measured["total"], 3),
            "stage_errors": {k: round(v, 3) for k, v in errs.items()}}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--specs", nargs="*", default=SPECS)
    ap.add_argument("--workdir", default=str(ROOT / ".nas" / "bench-plan"))
    args = ap.parse_args()
    workdir = pathlib.Path(args.workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("NAS_CACHE", str(ROOT / ".nas" / "cache"))
    from nas.latency.measure import device_fingerprint

    rows = [one(p, workdir) for p in args.specs]
    for r in rows:
        print(json.dumps(r), flush=True)
    errs = [e for r in rows for e in r["stage_errors"].values()]
    fp = device_fingerprint()
    print(json.dumps({"specs": rows, "median_stage_error": round(statistics.median(errs), 3) if errs else None,
                      "max_total_error": max(r["total_error"] for r in rows),
                      "fingerprint": {k: fp.get(k) for k in ("cpu", "cores")}}))


if __name__ == "__main__":
    main()
