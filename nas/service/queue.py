"""The job service: `nas submit` queues a job in the store; one or more `nas serve` processes (on the Ray head or
anywhere that reaches the store and the cluster) claim queued jobs atomically and run them; `nas cancel` stops one.

A claimed job runs in a child process (`nas resume JOB`), so a job that crashes or is cancelled never takes the service
down. The service heartbeats the job while it runs; a service that dies stops heartbeating, and any other service's
reaper puts the job back in the queue (its RUNNING trials back to WAITING) to be resumed from its checkpoints, up to a
bounded number of claims."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from typing import Callable

from nas.store import Store


def worker_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def _die_with_parent() -> None:
    """In the job's child process, before exec: a SIGKILL when its `nas serve` dies (Linux PR_SET_PDEATHSIG). A job
    whose service was killed -9 must stop too, or the reaper would hand it to another service while it still runs."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # 1 = PR_SET_PDEATHSIG
    except (OSError, AttributeError):  # not Linux: the child outlives its service until its next store write fails
        pass


def check_resumable(store: Store, job: dict, stale_after_s: float = 120.0) -> None:
    """Before `nas resume JOB` runs a job by hand: refuse one a live `nas serve` is running (two drivers on one job),
    and take a dead service's claim off the job, so no reaper hands it to another service while it runs here. The
    service's own child (NAS_CLAIMED_BY names its claim) passes."""
    from nas.spec.errors import SpecError
    from nas.store.models import utcnow

    claimant = job["claimed_by"]
    if job["status"] != "RUNNING" or not claimant or claimant == os.environ.get("NAS_CLAIMED_BY"):
        return
    age = (utcnow() - job["heartbeat_at"]).total_seconds() if job["heartbeat_at"] else float("inf")
    if age < stale_after_s:
        raise SpecError("JOB", f"job {job['id']} is running under `nas serve` {claimant} (heartbeat {age:.0f} s ago); "
                               f"`nas cancel {job['id']}` it first, or let that service finish it")
    store.release_claim(job["id"], claimant)


def run_claimed(store: Store, job: dict, worker: str, heartbeat_s: float, log: Callable[[str], None],
                ray_address: str | None = None) -> str:
    """Run one claimed job in a child process until it ends or is cancelled; returns its final status."""
    cmd = [sys.executable, "-m", "nas", "resume", str(job["id"]), "--storage", store.url, "--quiet"]
    if ray_address:
        cmd += ["--address", ray_address]
    log(f"job {job['id']} ({job['name']}): running")
    # stderr to a file, not a pipe: a chatty job would fill a pipe nobody reads until the end and hang
    errfile = tempfile.TemporaryFile(mode="w+")
    child = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=errfile, text=True, start_new_session=True,
                             preexec_fn=_die_with_parent, env={**os.environ, "NAS_CLAIMED_BY": worker})
    last = time.monotonic()
    while child.poll() is None:
        time.sleep(0.5)
        if time.monotonic() - last >= heartbeat_s:
            last = time.monotonic()
            mine = store.job_heartbeat(job["id"], worker)
            current = store.get_job(job["id"])
            if current["cancel_requested"] or not mine:
                os.killpg(child.pid, signal.SIGTERM)
                try:
                    child.wait(30)
                except subprocess.TimeoutExpired:
                    os.killpg(child.pid, signal.SIGKILL)
                    child.wait()
                if current["cancel_requested"]:
                    store.reset_unfinished_trials(job["id"])
                    store.set_job_status(job["id"], "CANCELLED", error="cancelled by the user")
                    log(f"job {job['id']}: cancelled")
                    return "CANCELLED"
                log(f"job {job['id']}: no longer ours (reaped); stopped")
                return store.get_job(job["id"])["status"]
    errfile.seek(0)
    err = errfile.read()[-20000:]
    errfile.close()
    status = store.get_job(job["id"])["status"]
    if child.returncode != 0 and status == "RUNNING":
        tail = " | ".join(err.strip().splitlines()[-3:])
        store.set_job_status(job["id"], "FAILED", error=f"exit code {child.returncode}: {tail}"[:2000])
        status = "FAILED"
    log(f"job {job['id']}: {status}")
    return status


def serve(url: str | None = None, once: bool = False, poll_s: float = 2.0, heartbeat_s: float = 10.0,
          stale_after_s: float = 120.0, max_claims: int = 3, log: Callable[[str], None] = print,
          ray_address: str | None = None, worker: str | None = None) -> int:
    """Claim and run queued jobs until interrupted (or, with `once`, until the queue is empty). Returns jobs run."""
    store = Store(url)
    worker = worker or worker_name()
    log(f"nas serve {worker}: watching {store.url.split('@')[-1]} (poll {poll_s:g} s)")
    done = 0
    try:
        while True:
            for job_id in store.reap_stale_jobs(stale_after_s, max_claims):
                log(f"job {job_id}: its service stopped heartbeating; back in the queue")
            job = store.claim_job(worker)
            if job is None:
                if once:
                    return done
                time.sleep(poll_s)
                continue
            run_claimed(store, job, worker, heartbeat_s, log, ray_address)
            done += 1
    finally:
        store.dispose()
