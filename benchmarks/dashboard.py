"""Issue 6 figures: the dashboard at scale. Last line of output: one JSON object.

    python benchmarks/dashboard.py              # a job seeded with 10,000 trials; job page x5 under AppTest
    python benchmarks/dashboard.py --quick      # 2,000 trials, x3

job_page_s: the job page script run to completion under streamlit's AppTest (median of the runs after a first warm
one; every run reloads the data: the cache is cleared). pareto_s: front + hypervolume of 100,000 random points.
The seeded trials look like a search's: shapes, dev metric, measured p50/p90 with one fingerprint, finishing times.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import pathlib
import statistics
import sys
import tempfile
import time

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def seed(url: str, n: int) -> int:
    import numpy as np
    from sqlalchemy import insert

    from nas.store import Store
    from nas.store.models import LatencyMeasurement, Metric, Trial

    store = Store(url)
    spec = {"objectives": {"metric": "accuracy", "latency": "p50", "size": False}, "budgets": {"trials": n}}
    job = store.create_job("seeded-10k", spec, status="COMPLETE")
    rng = np.random.default_rng(0)
    fp = {"cpu": "bench", "threads": 2, "device": "cpu", "torch": "x"}
    t0 = dt.datetime(2026, 1, 1)

    def lat(p50):
        return {"config_key": "k", "fingerprint": fp, "fingerprint_id": "bench", "device": "cpu", "runtime": "eager",
                "dtype": "fp32", "batch": 1, "seq_len": 64, "threads": 2, "warmup": 5, "n": 40, "p50_ms": p50,
                "p90_ms": p50 * 1.1, "mean_ms": p50, "cv": 0.05}

    with store.engine.begin() as conn:
        tid = conn.execute(insert(Trial).values(job_id=job, number=1, kind="teacher", state="COMPLETE",
                                                config={"shape": {"layers": 6, "hidden": 384, "heads": 12, "ffn": 1536}},
                                                finished_at=t0)).inserted_primary_key[0]
        conn.execute(insert(Metric), [{"trial_id": tid, "name": "accuracy", "value": 0.85, "split": "dev", "source": "final"},
                                      {"trial_id": tid, "name": "params", "value": 2.2e7, "split": "dev", "source": "final"}])
        conn.execute(insert(LatencyMeasurement), [{"trial_id": tid, **lat(10.0)}])
        trials = []
        for i in range(n):
            L, H = int(rng.integers(1, 5)), int(rng.choice([128, 192, 256, 384]))
            trials.append({"job_id": job, "number": i + 2, "kind": "student", "state": "COMPLETE", "finished_at": t0 + dt.timedelta(seconds=i),
                           "config": {"shape": {"layers": L, "hidden": H, "heads": 4, "ffn": int(rng.choice([512, 1024]))},
                                      "distill": {"lr": float(rng.choice([1e-4, 3e-4, 1e-3])), "alpha_soft": 0.5}}})
        conn.execute(insert(Trial), trials)
        ids = [r[0] for r in conn.exec_driver_sql(f"SELECT id FROM trials WHERE job_id = {job} AND kind = 'student' ORDER BY number")]
        size = rng.random(n)
        acc = 0.7 + 0.12 * size ** 0.5 + rng.normal(0, 0.01, n)
        p50 = 0.8 + 9 * size + rng.normal(0, 0.2, n).clip(-0.5, 0.5)
        conn.execute(insert(Metric), [{"trial_id": t, "name": "accuracy", "value": float(a), "split": "dev", "source": "proxy"}
                                      for t, a in zip(ids, acc)]
                     + [{"trial_id": t, "name": "params", "value": float(s * 2e7), "split": "dev", "source": "proxy"}
                        for t, s in zip(ids, size)])
        conn.execute(insert(LatencyMeasurement), [{"trial_id": t, **lat(float(p))} for t, p in zip(ids, p50)])
    store.dispose()
    return job


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--trials", type=int, default=10_000)
    ap.add_argument("--runs", type=int, default=5)
    args = ap.parse_args()
    if args.quick:
        args.trials, args.runs = 2000, 3
    import numpy as np

    from nas.search.pareto import hypervolume, pareto_front

    work = pathlib.Path(tempfile.mkdtemp(prefix="nas-dash-"))
    url = f"sqlite:///{work / 'nas.db'}"
    t0 = time.perf_counter()
    job = seed(url, args.trials)
    seed_s = time.perf_counter() - t0
    os.environ["NAS_STORAGE"] = url
    from streamlit.testing.v1 import AppTest

    times = []
    for i in range(args.runs + 1):
        at = AppTest.from_file(str(ROOT / "dashboard" / "app.py"), default_timeout=120)
        at.query_params["job"] = str(job)
        at.run()
        at.switch_page("views/job.py")
        import streamlit as st

        st.cache_data.clear()
        t = time.perf_counter()
        at.run()
        took = time.perf_counter() - t
        if at.exception:
            raise SystemExit(f"job page raised: {at.exception}")
        if i:  # the first run imports plotly, sklearn and friends
            times.append(took)
        print(f"job page run {i}: {took:.2f} s", flush=True)

    rng = np.random.default_rng(0)
    pts = rng.random((100_000, 2))
    t = time.perf_counter()
    front = pareto_front(pts, [True, False])
    hv = hypervolume(pts[front], [0.0, 1.0], [True, False])
    pareto_s = time.perf_counter() - t
    print(json.dumps({"trials": args.trials, "seed_s": seed_s, "job_page_s": statistics.median(times),
                      "job_page_runs_s": times, "pareto_points": len(pts), "pareto_s": pareto_s, "front_size": len(front),
                      "hypervolume": hv}))


if __name__ == "__main__":
    main()
