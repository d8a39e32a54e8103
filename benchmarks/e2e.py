"""End-to-end figures for the foundation: a real job (MiniLM teacher, BBC News), trials through Ray into SQLite, the
front, an export reloaded in a fresh process. Last line of output: one JSON object.

    python benchmarks/e2e.py --quick     # 400-row slice, 8 trials (bar: <= 3 minutes on 2 cores)
    python benchmarks/e2e.py             # the demo spec: all of BBC News
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import subprocess
import sys
import tempfile
import time

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="the small job (examples/bbc_quick.yaml)")
    ap.add_argument("--spec", help="another spec file")
    ap.add_argument("--workdir", help="NAS_HOME for this run (default: a fresh temp dir; the teacher cache is shared "
                                      "through $NAS_CACHE if set)")
    args = ap.parse_args()
    spec_path = args.spec or str(ROOT / "examples" / ("bbc_quick.yaml" if args.quick else "bbc_demo.yaml"))
    work = pathlib.Path(args.workdir or tempfile.mkdtemp(prefix="nas-e2e-"))
    os.environ["NAS_HOME"] = str(work)

    from nas.pipeline import run_job
    from nas.results.export import export_trial
    from nas.results.front import front_rows
    from nas.spec.job import load_spec
    from nas.store import Store

    t0 = time.perf_counter()
    spec = load_spec(spec_path)
    spec = spec.model_copy(update={"storage": f"sqlite:///{work / 'nas.db'}"})
    store = Store(spec.storage)
    job_id = run_job(spec, store, progress=True)
    run_s = time.perf_counter() - t0
    f = front_rows(store, job_id)
    students = store.trials(job_id, kind="student")
    teacher = f["teacher"]
    best = max(f["front"], key=lambda r: r["metric"])
    out = export_trial(store, job_id, best["trial"], work / "export")
    check = subprocess.run([sys.executable, "-m", "nas", "check-export", str(out)], capture_output=True, text=True,
                           cwd=str(ROOT), env={**os.environ, "PYTHONPATH": str(ROOT)})
    reload = json.loads(check.stdout.strip().splitlines()[-1]) if check.returncode == 0 else {"error": check.stderr[-500:]}
    fast = [r for r in f["rows"] if (r["speedup"] or 0) >= 5]
    best5 = max(fast, key=lambda r: r["metric"]) if fast else None
    result = {
        "spec": os.path.relpath(spec_path, ROOT), "job_id": job_id,
        "trials_completed": sum(t["state"] == "COMPLETE" for t in students),
        "trials_failed": sum(t["state"] == "FAILED" for t in students),
        "pareto_size": len(f["front"]), "teacher_dev_acc": teacher["metric"], "teacher_p50_ms": teacher["p50_ms"],
        "best_student_dev_acc": max(r["metric"] for r in f["rows"]),
        "best_speedup": max(r["speedup"] for r in f["rows"]),
        "best_at_5x": None if best5 is None else {"trial": best5["trial"], "shape": best5["shape"], "dev_acc": best5["metric"],
                                                    "speedup": round(best5["speedup"], 2),
                                                    "retention": round(best5["metric"] / teacher["metric"], 4)},
        "front": [{"trial": r["trial"], "shape": r["shape"], "dev_acc": round(r["metric"], 4), "p50_ms": round(r["p50_ms"], 3),
                   "speedup": round(r["speedup"], 2)} for r in f["front"]],
        "hypervolume": f["hypervolume"],
        "export_reload_ok": bool(reload.get("abs_diff") is not None and reload["abs_diff"] <= 0.005),
        "export_reload": reload, "fingerprint": {k: f["fingerprint"].get(k) for k in ("cpu", "cores", "threads", "torch")},
        "run_s": round(run_s, 1), "wall_s": round(time.perf_counter() - t0, 1),
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
