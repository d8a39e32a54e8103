"""Fault scenarios 3 and 4: concurrent writer processes on one store and PostgreSQL write latency as a job grows.
`write_trials` is the target of spawned processes, so this module must stay importable by name (benchmarks/ on sys.path)."""

from __future__ import annotations

import multiprocessing as mp
import os
import statistics
import time

from fault_common import log


# -- 3. concurrent writers --------------------------------------------------------------------------------------------
def write_trials(url: str, job_id: int, n: int, barrier, out) -> None:
    """In a spawned process: n trial writes (add_trial, start, 3 metrics, finish); every exception is counted."""
    errors, ms = [], []
    try:
        from nas.store import Store

        s = Store(url, migrate=False)
        barrier.wait(timeout=300)
        for i in range(n):
            t0 = time.perf_counter()
            try:
                write_one_trial(s, job_id, {"pid": os.getpid(), "i": i})
                ms.append((time.perf_counter() - t0) * 1000)
            except Exception as exc:  # counted, and the writer goes on
                errors.append(f"{type(exc).__name__}: {str(exc).splitlines()[0][:200]}")
        s.dispose()
    except Exception as exc:
        errors.append(f"{type(exc).__name__}: {exc}")
    out.put((errors, ms))


def write_one_trial(s, job_id: int, config: dict) -> None:
    t = s.add_trial(job_id, "student", config)
    s.start_trial(t["id"])
    for name, value in (("accuracy", 0.5), ("params", 1e6), ("train_loss", 0.1)):
        s.add_metric(t["id"], name, value, "dev" if name != "train_loss" else "train", "final")
    s.finish_trial(t["id"], "COMPLETE")


def concurrent_writers(url: str, writers: int, per_writer: int) -> dict:
    from nas.store import Store

    store = Store(url)
    job_id = store.create_job("writers", {})
    ctx = mp.get_context("spawn")
    barrier, out = ctx.Barrier(writers), ctx.Queue()
    procs = [ctx.Process(target=write_trials, args=(url, job_id, per_writer, barrier, out)) for _ in range(writers)]
    for p in procs:
        p.start()
    try:
        results = [out.get(timeout=900) for _ in procs]
    finally:
        for p in procs:
            p.join(30)
            if p.is_alive():
                p.kill()
    errors = [e for errs, _ in results for e in errs]
    ms = [m for _, mss in results for m in mss]
    numbers = [t["number"] for t in store.trials(job_id)]
    store.dispose()
    ok = numbers == list(range(1, writers * per_writer + 1))
    res = {"writers": writers, "writes": len(ms), "errors": len(errors) + (0 if ok else 1), "sample_errors": errors[:3],
           "numbers_unique_and_consecutive": ok, "write_ms_p50": round(statistics.median(ms), 2) if ms else None}
    log(f"writers on {url.split(':')[0]}: {res}")
    return res


# -- 4. PostgreSQL write latency as a job grows ------------------------------------------------------------------------
def bulk_trials(store, job_id: int, n: int, batch: int = 20000) -> None:
    """n COMPLETE trials with 3 metrics each, inserted in bulk (the background a big job leaves)."""
    from sqlalchemy import insert

    from nas.store.models import Metric, Trial, utcnow

    now = utcnow()
    with store.engine.begin() as conn:
        start = conn.exec_driver_sql("SELECT coalesce(max(number), 0) FROM trials WHERE job_id = %s" % int(job_id)).scalar()
        for lo in range(0, n, batch):
            rows = [{"job_id": job_id, "number": start + i + 1, "kind": "student", "state": "COMPLETE",
                     "config": {"i": i}, "created_at": now, "started_at": now, "finished_at": now, "heartbeat_at": now,
                     "attempts": 1} for i in range(lo, min(n, lo + batch))]
            ids = conn.execute(insert(Trial.__table__).returning(Trial.__table__.c.id), rows).scalars().all()
            conn.execute(insert(Metric.__table__), [
                {"trial_id": tid, "name": name, "value": 0.5, "split": "dev", "source": "final", "created_at": now}
                for tid in ids for name in ("accuracy", "params", "train_loss")])
    with store.engine.connect() as conn:
        conn.exec_driver_sql("ANALYZE")


def write_latency_at_scale(url: str, sizes: tuple[int, int], writes: int) -> dict:
    from nas.store import Store

    store = Store(url)
    jobs = {}
    for n in sizes:
        jobs[n] = store.create_job(f"scale-{n}", {})
        t0 = time.monotonic()
        bulk_trials(store, jobs[n], n)
        log(f"scale: job with {n:,} trials inserted in {time.monotonic() - t0:.1f} s")
    ms: dict[int, list[float]] = {n: [] for n in sizes}
    for _ in range(writes):  # interleaved, so drift on the machine hits both sizes alike
        for n in sizes:
            t0 = time.perf_counter()
            write_one_trial(store, jobs[n], {"probe": True})
            ms[n].append((time.perf_counter() - t0) * 1000)
    store.dispose()
    small, big = (round(statistics.median(ms[n]), 3) for n in sizes)
    res = {"small": small, "big": big, "ratio": round(big / small, 3), "sizes": list(sizes), "writes": writes}
    log(f"scale: {res}")
    return res

