"""The job service: atomic claims under concurrent `serve` processes (SQLite and PostgreSQL), cancel, the reaper, and a
real queued job run to completion by `nas serve --once`."""

from __future__ import annotations

import datetime as dt
import multiprocessing as mp
import os
import subprocess
import sys

import pytest
import yaml
from conftest import job_environment

from nas.store import Store


def _claimer(url: str, name: str, barrier, out) -> None:
    s = Store(url, migrate=False)
    barrier.wait(timeout=120)
    got = []
    while True:
        job = s.claim_job(name)
        if job is None:
            break
        got.append(job["id"])
    s.dispose()
    out.put((name, got))


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
def test_concurrent_claims_never_double_claim(backend, sqlite_url, request):
    url = sqlite_url if backend == "sqlite" else request.getfixturevalue("fresh_postgres_url")
    store = Store(url)
    ids = [store.create_job(f"q{i}", {}) for i in range(20)]
    ctx = mp.get_context("spawn")
    barrier, out = ctx.Barrier(4), ctx.Queue()
    procs = [ctx.Process(target=_claimer, args=(url, f"w{i}", barrier, out)) for i in range(4)]
    for p in procs:
        p.start()
    results = [out.get(timeout=180) for _ in procs]
    for p in procs:
        p.join(60)
    claimed = [j for _, got in results for j in got]
    assert sorted(claimed) == ids  # every job exactly once
    jobs = {j["id"]: j for j in store.list_jobs()}
    assert all(jobs[i]["status"] == "RUNNING" and jobs[i]["claims"] == 1 for i in ids)
    owners = {j: name for name, got in results for j in got}
    assert all(jobs[i]["claimed_by"] == owners[i] for i in ids)
    store.dispose()


def test_cancel_and_reaper(sqlite_url):
    store = Store(sqlite_url)
    queued = store.create_job("q", {})
    assert store.request_cancel(queued) == "CANCELLED"
    assert store.claim_job("w") is None  # a cancelled job is never claimed
    running = store.create_job("r", {})
    assert store.claim_job("w")["id"] == running
    t = store.add_trial(running, "student", {})["id"]
    store.start_trial(t)
    assert store.reap_stale_jobs(stale_after_s=3600) == []  # fresh heartbeat: left alone
    with store.Session.begin() as s:  # the service died an hour ago
        from sqlalchemy import update

        from nas.store.models import Job
        s.execute(update(Job).where(Job.id == running).values(heartbeat_at=dt.datetime(2020, 1, 1)))
    assert store.reap_stale_jobs(stale_after_s=60) == [running]
    job = store.get_job(running)
    assert job["status"] == "QUEUED" and job["claimed_by"] is None
    assert store.get_trial(t)["state"] == "WAITING"  # no zombie RUNNING trial
    assert not store.job_heartbeat(running, "w")  # the old claimant lost it
    # bounded retries: the job is claimed at most 3 times; the third lost claim fails it
    for _ in range(1):
        assert store.claim_job("w2")["id"] == running
        with store.Session.begin() as s:
            s.execute(update(Job).where(Job.id == running).values(heartbeat_at=dt.datetime(2020, 1, 1)))
        store.reap_stale_jobs(stale_after_s=60, max_claims=3)
    assert store.get_job(running)["status"] == "QUEUED"
    assert store.claim_job("w3")["claims"] == 3
    with store.Session.begin() as s:
        s.execute(update(Job).where(Job.id == running).values(heartbeat_at=dt.datetime(2020, 1, 1)))
    store.reap_stale_jobs(stale_after_s=60, max_claims=3)
    assert store.get_job(running)["status"] == "FAILED"
    store.dispose()


SPEC = """
name: served
dataset: {name: bbc-news, max_rows: 150}
search_space: tiny
latency: {device: cpu, batch: 1, seq_len: 32, threads: 1, warmup: 2, min_runs: 5, max_runs: 20}
budgets: {trials: 2, epochs: 2, max_seq_len: 32, teacher_epochs: 2}
seed: 3
"""


def test_submit_then_serve_runs_the_queued_job(tmp_path):
    url = f"sqlite:///{tmp_path / 'nas.db'}"
    spec = tmp_path / "spec.yaml"
    spec.write_text(SPEC)
    with job_environment(tmp_path):
        env = dict(os.environ)
        sub = subprocess.run([sys.executable, "-m", "nas", "submit", str(spec), "--storage", url],
                             capture_output=True, text=True, env=env)
        assert sub.returncode == 0, sub.stderr
        assert "queued" in sub.stdout
        bad = tmp_path / "bad.yaml"
        bad.write_text(yaml.safe_dump({**yaml.safe_load(SPEC), "budgets": {"trials": 0}}))
        rej = subprocess.run([sys.executable, "-m", "nas", "submit", str(bad), "--storage", url],
                             capture_output=True, text=True, env=env)
        assert rej.returncode == 2 and "budgets.trials" in rej.stderr
        run = subprocess.run([sys.executable, "-m", "nas", "serve", "--storage", url, "--once", "--poll", "0.2"],
                             capture_output=True, text=True, env=env, timeout=900)
        assert run.returncode == 0, run.stderr[-3000:]
        assert "served 1 job(s)" in run.stdout
    store = Store(url)
    (job,) = store.list_jobs()
    assert job["status"] == "COMPLETE" and job["claims"] == 1 and job["claimed_by"]
    assert len(store.trials(job["id"], kind="student", state="COMPLETE")) == 2
    store.dispose()


def test_resume_by_hand_refuses_a_job_a_live_service_runs_and_takes_over_a_dead_ones(sqlite_url, monkeypatch):
    from sqlalchemy import update
    from typer.testing import CliRunner

    from nas.service.queue import check_resumable
    from nas.store.models import Job
    from nas.ui.cli import app

    monkeypatch.delenv("NAS_CLAIMED_BY", raising=False)
    store = Store(sqlite_url)
    live = store.create_job("live", {})
    assert store.claim_job("other-host:1")["id"] == live
    before = store.count_rows()
    res = CliRunner().invoke(app, ["resume", str(live), "--storage", sqlite_url])
    assert res.exit_code == 2, res.output
    assert res.output.startswith(f"error: JOB: job {live} is running under `nas serve` other-host:1")
    assert store.count_rows() == before and store.get_job(live)["claimed_by"] == "other-host:1"
    monkeypatch.setenv("NAS_CLAIMED_BY", "other-host:1")  # the service's own child passes
    check_resumable(store, store.get_job(live))
    monkeypatch.delenv("NAS_CLAIMED_BY")
    with store.Session.begin() as s:  # that service died an hour ago
        s.execute(update(Job).where(Job.id == live).values(heartbeat_at=dt.datetime(2020, 1, 1)))
    check_resumable(store, store.get_job(live))
    assert store.get_job(live)["claimed_by"] is None  # ours now: no reaper hands it to a service while it runs here
    assert store.reap_stale_jobs(stale_after_s=60) == []
    store.dispose()
