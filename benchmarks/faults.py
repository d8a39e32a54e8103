"""Issue 7: faults, scale and hostile input. Prints progress to stderr and, as its last stdout line, one JSON object.

  python benchmarks/faults.py            # the figures in docs/BENCHMARKS.md
  python benchmarks/faults.py --quick    # smaller variants of every part
  python benchmarks/faults.py --only driver,worker   # some parts (driver worker sqlite pg claims bad)

Everything is real: `nas serve` / `nas resume` processes killed with SIGKILL, a second Ray node started with
`ray start --address` and killed mid-trial, writer processes on SQLite and on a PostgreSQL server started here, and the
installed CLI fed hostile input. Every process started here is killed at the end, also on failure.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import signal
import subprocess
import sys
import tempfile
import time

from fault_bad_input import bad_input_cases, bad_inputs, table_digest
from fault_claims import double_claims
from fault_common import log
from fault_kills import driver_kill, worker_kill
from fault_store import concurrent_writers, write_latency_at_scale

# the scenarios, re-exported for tests/test_faults.py (`import faults` with benchmarks/ on sys.path)
__all__ = ["bad_input_cases", "bad_inputs", "concurrent_writers", "double_claims", "driver_kill", "main", "table_digest",
           "worker_kill", "write_latency_at_scale"]


# -- main -----------------------------------------------------------------------------------------------------------------
def part_driver(root: pathlib.Path, quick: bool) -> dict:
    runs = [driver_kill(root, True, trials=3 if quick else 4, steps=60 if quick else 50)]
    if not quick:
        runs.append(driver_kill(root, False, trials=4, steps=50))
    return {"driver_kill_completed_lost": sum(r["completed_lost"] for r in runs),
            "driver_kill_completed_at_kill": sum(r["completed_at_kill"] for r in runs),
            "zombies_after_reap": sum(r["zombies_after_reap"] for r in runs), "resume_s": max(r["resume_s"] for r in runs),
            "driver_kill_jobs_complete": all(r["job_status"] == "COMPLETE" for r in runs), "driver_kill_runs": runs}


def part_worker(root: pathlib.Path, quick: bool) -> dict:
    w = worker_kill(root, steps=100 if quick else 120)
    return {"worker_kill_job_completed": w["job_completed"], "worker_kill": w}


def part_sqlite(root: pathlib.Path, quick: bool) -> dict:
    r = concurrent_writers(f"sqlite:///{root / 'writers.db'}", 8, 15 if quick else 60)
    return {"sqlite_writers": r["writers"], "sqlite_lock_errors": r["errors"], "sqlite_writes": r["writes"],
            "sqlite_write_ms_p50": r["write_ms_p50"]}


def part_pg(root: pathlib.Path, quick: bool) -> dict:
    from nas.store.local_postgres import create_database, local_postgres

    with local_postgres(max_connections=120) as (host, port):
        r = concurrent_writers(create_database(host, port, "writers"), 32, 5 if quick else 25)
        out = {"pg_writers": r["writers"], "pg_errors": r["errors"], "pg_writes": r["writes"],
               "pg_write_ms_p50": r["write_ms_p50"]}
        r = write_latency_at_scale(create_database(host, port, "scale"), (1000, 100_000), 60 if quick else 300)
        return {**out, "pg_write_ms_at_1k": r["small"], "pg_write_ms_at_100k": r["big"], "pg_write_ratio": r["ratio"]}


def part_claims(root: pathlib.Path, quick: bool) -> dict:
    r = double_claims(root, 8 if quick else 20)
    return {"double_claims": r["double_claims"], "claim_jobs": r["jobs"], "claim_unclaimed": r["unclaimed"],
            "claims_per_service": r["per_service"], "claims_drain_s": r["drain_s"]}


def part_bad(root: pathlib.Path, quick: bool) -> dict:
    r = bad_inputs(root, quick)
    return {"bad_inputs_tried": r["tried"], "bad_inputs_clean": r["clean"], "bad_inputs_not_clean": r["not_clean"]}


PARTS = {"driver": part_driver, "worker": part_worker, "sqlite": part_sqlite, "pg": part_pg, "claims": part_claims,
         "bad": part_bad}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="smaller variants of every part")
    ap.add_argument("--only", default=",".join(PARTS), help=f"comma-separated parts of {', '.join(PARTS)}")
    args = ap.parse_args()
    # a TERM (or an INT to a background run, where INT is ignored) still runs the `finally`s that kill our processes
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    root = pathlib.Path(tempfile.mkdtemp(prefix="nas-faults-"))
    out: dict = {"quick": args.quick}
    t0 = time.monotonic()
    log(f"work dir {root}")
    for name in args.only.split(","):
        try:
            out.update(PARTS[name](root, args.quick))
        except Exception as exc:  # one broken part still lets the others report
            out[f"{name}_error"] = f"{type(exc).__name__}: {exc}"
            log(f"{name}: {out[f'{name}_error']}")
    out["total_s"] = round(time.monotonic() - t0, 1)
    subprocess.run(["rm", "-rf", str(root)], check=False)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
