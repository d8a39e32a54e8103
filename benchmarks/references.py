"""Issue 9 figures: reference points (teacher, TF-IDF + logistic regression) beside searched students, on BBC News and
Rotten Tomatoes. Last line of output: one JSON object.

    python benchmarks/references.py                 # both datasets, 4 per-trial students each
    python benchmarks/references.py --quick         # slices of both (a smoke run)

Each dataset runs one real job (`nas run` code path: teacher fine-tuned and cached, students distilled as Ray Tune trials,
references fitted and timed end to end from raw text with the students' latency settings). Per reference: dev/test
accuracy, p50 end to end, and how many of the job's front points it dominates (students charged their tokenisation).
Set NAS_CACHE to share the fine-tuned teachers with other runs.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import sys
import tempfile
import time

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--trials", type=int, default=4)
    ap.add_argument("--datasets", default="bbc-news,rotten-tomatoes")
    ap.add_argument("--workdir", default=None, help="NAS_HOME for the jobs (default: a fresh temp dir)")
    args = ap.parse_args()
    work = pathlib.Path(args.workdir or tempfile.mkdtemp(prefix="nas-refs-"))
    os.environ["NAS_HOME"] = str(work)
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

    from nas.pipeline import run_job
    from nas.results.front import front_rows
    from nas.spec.job import parse_spec
    from nas.store import Store

    settings = {
        "bbc-news": {"seq": 128, "teacher_epochs": 2, "epochs": 3},
        "rotten-tomatoes": {"seq": 64, "teacher_epochs": 2, "epochs": 2},
    }
    out: dict = {"quick": args.quick, "trials": args.trials}
    t_start = time.perf_counter()
    store = Store(f"sqlite:///{work / 'nas.db'}")
    for name in args.datasets.split(","):
        s = settings[name]
        spec = parse_spec({
            "name": f"refs-{name}", "teacher": "minilm-l6",
            "dataset": {"name": name, **({"max_rows": 400} if args.quick else {})},
            "search_space": "bert_small", "references": ["tfidf-linear"],
            "latency": {"device": "cpu", "batch": 1, "seq_len": s["seq"], "threads": 2},
            "budgets": {"trials": 2 if args.quick else args.trials, "epochs": 1 if args.quick else s["epochs"],
                        "max_seq_len": s["seq"], "teacher_epochs": s["teacher_epochs"]},
            "seed": 0,
        })
        t0 = time.perf_counter()
        job = run_job(spec, store, progress=False, log=lambda m: print(m, flush=True))
        f = front_rows(store, job)
        best = max(f["front"], key=lambda r: r["metric"]) if f["front"] else None
        fastest = min(f["front"], key=lambda r: r["latency_ms"]) if f["front"] else None

        def point(r):
            return None if r is None else {"shape": r["shape"], "dev_acc": r["metric"], "test_acc": r["test_metric"],
                                           "p50_ms": r["p50_ms"], "p50_ms_end_to_end": r["p50_ms"] + f["student_tokenizer_ms"]}

        out[name] = {
            "references": {r["name"]: {"dev_acc": r["metric"], "test_acc": r["test_metric"], "p50_ms": r["p50_ms"],
                                       "dominated_front_points": r["dominated_front_points"]} for r in f["references"]},
            "front_points": len(f["front"]), "best_student": point(best), "fastest_student": point(fastest),
            "student_tokenizer_ms": f["student_tokenizer_ms"], "job_s": time.perf_counter() - t0,
        }
        print(json.dumps({name: out[name]}), flush=True)
    out["wall_s"] = time.perf_counter() - t_start
    print(json.dumps(out))


if __name__ == "__main__":
    main()
