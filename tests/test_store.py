"""The store on real SQLite files and a real PostgreSQL server: round trips, numbering, WAL, concurrent writers, bad URLs."""

from __future__ import annotations

import multiprocessing as mp
import sqlite3
import time

import pytest
from sqlalchemy.exc import IntegrityError

from nas.store import Store, StoreError, default_storage_url
from nas.store.records import metric_value
from nas.store.store import HEAD_REVISION

TABLES = {"jobs", "trials", "metrics", "latency_measurements", "artefacts"}


@pytest.fixture(params=["sqlite", "postgresql"])
def store(request, tmp_path):
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'store.db'}"
    else:
        url = request.getfixturevalue("fresh_postgres_url")
    s = Store(url)
    yield s
    s.dispose()


def latency_row(fingerprint_id="fp-a", p50=1.5, batch=1, seq_len=128, threads=2, runtime="eager", dtype="fp32") -> dict:
    return {
        "fingerprint": {"device": "cpu", "cpu": "Test CPU", "threads": threads, "torch": "2.x"},
        "fingerprint_id": fingerprint_id, "device": "cpu", "runtime": runtime, "dtype": dtype, "batch": batch,
        "seq_len": seq_len, "threads": threads, "warmup": 10, "n": 50, "p50_ms": p50, "p90_ms": p50 * 1.2,
        "mean_ms": p50 * 1.1, "cv": 0.03,
    }


def settings(batch=1, seq_len=128, threads=2, runtime="eager", dtype="fp32") -> dict:
    return {"runtime": runtime, "dtype": dtype, "batch": batch, "seq_len": seq_len, "threads": threads}


# -- schema --------------------------------------------------------------------------------------------------------------
def test_fresh_store_is_empty_and_at_the_head_revision(store):
    assert store.schema_revision() == HEAD_REVISION
    assert store.count_rows() == {t: 0 for t in TABLES}
    assert store.list_jobs() == []


def test_migrate_is_idempotent_and_keeps_data(store):
    job = store.create_job("j", {"a": 1})
    again = Store(store.url)  # opens and migrates again
    assert again.schema_revision() == HEAD_REVISION
    assert again.get_job(job)["spec"] == {"a": 1}
    again.dispose()


def test_session_postgres_url(postgres_url):
    assert postgres_url.startswith("postgresql+psycopg://postgres@127.0.0.1:")
    s = Store(postgres_url)
    assert s.engine.dialect.name == "postgresql"
    assert s.schema_revision() == HEAD_REVISION
    with s.engine.connect() as conn:
        tables = set(conn.exec_driver_sql(
            "SELECT tablename FROM pg_tables WHERE schemaname = 'public'").scalars())
    assert TABLES | {"alembic_version"} <= tables
    s.dispose()


def test_default_url_lives_under_nas_home(nas_home):
    assert default_storage_url() == f"sqlite:///{nas_home / 'nas.db'}"
    s = Store()
    assert s.url == default_storage_url()
    assert (nas_home / "nas.db").is_file()
    assert s.schema_revision() == HEAD_REVISION
    s.dispose()


# -- jobs ----------------------------------------------------------------------------------------------------------------
def test_job_round_trip(store):
    spec = {"name": "demo", "budgets": {"trials": 3, "epochs": 1.5}, "dataset": {"name": "bbc-news", "max_rows": None},
            "tags": ["a", "b"], "ünïcode": "naïve"}
    job_id = store.create_job("demo", spec)
    j = store.get_job(job_id)
    assert j["name"] == "demo" and j["spec"] == spec
    assert j["status"] == "QUEUED" and j["stage"] is None and j["error"] is None
    assert j["created_at"] is not None and j["started_at"] is None and j["finished_at"] is None

    store.set_job_status(job_id, "RUNNING", stage="teacher")
    j = store.get_job(job_id)
    assert (j["status"], j["stage"]) == ("RUNNING", "teacher") and j["started_at"] is not None
    assert j["finished_at"] is None
    store.set_job_stage(job_id, "search")
    assert store.get_job(job_id)["stage"] == "search"
    store.set_job_status(job_id, "FAILED", error="boom")
    j = store.get_job(job_id)
    assert (j["status"], j["stage"], j["error"]) == ("FAILED", "search", "boom")
    assert j["finished_at"] >= j["started_at"]
    # a resumed job runs again: finished_at is cleared
    store.set_job_status(job_id, "RUNNING")
    assert store.get_job(job_id)["finished_at"] is None
    assert store.get_job(job_id + 100) is None


def test_list_jobs_counts_completed_trials(store):
    a = store.create_job("a", {})
    b = store.create_job("b", {}, status="RUNNING")
    for state in ("COMPLETE", "COMPLETE", "FAILED", "WAITING"):
        store.add_trial(a, "student", {}, state=state)
    store.add_trial(b, "student", {}, state="COMPLETE")
    rows = store.list_jobs()
    assert [(r["id"], r["name"], r["status"], r["trials_complete"]) for r in rows] == [
        (a, "a", "QUEUED", 2), (b, "b", "RUNNING", 1)]


# -- trials --------------------------------------------------------------------------------------------------------------
def test_trial_numbers_are_per_job(store):
    a, b = store.create_job("a", {}), store.create_job("b", {})
    got = [store.add_trial(a, "student", {"i": i})["number"] for i in range(3)]
    got_b = [store.add_trial(b, "teacher", {})["number"] for _ in range(2)]
    got.append(store.add_trial(a, "student", {"i": 3})["number"])
    assert got == [1, 2, 3, 4] and got_b == [1, 2]
    assert [t["number"] for t in store.trials(a)] == [1, 2, 3, 4]
    assert [t["config"]["i"] for t in store.trials(a)] == [0, 1, 2, 3]
    t = store.get_trial_by_number(b, 2)
    assert t["job_id"] == b and t["kind"] == "teacher"
    assert store.get_trial_by_number(b, 3) is None


def test_trial_life_cycle(store):
    job = store.create_job("j", {})
    t = store.add_trial(job, "student", {"shape": {"layers": 2, "hidden": 128}})
    d = store.get_trial(t["id"])
    assert d["number"] == t["number"] == 1
    assert (d["state"], d["attempts"], d["started_at"], d["heartbeat_at"], d["finished_at"]) == (
        "WAITING", 0, None, None, None)
    assert d["config"] == {"shape": {"layers": 2, "hidden": 128}}
    assert d["metrics"] == d["latency"] == d["artefacts"] == []

    store.start_trial(t["id"])
    d = store.get_trial(t["id"])
    assert d["state"] == "RUNNING" and d["attempts"] == 1
    assert d["started_at"] is not None and d["heartbeat_at"] == d["started_at"]
    beat0 = d["heartbeat_at"]
    time.sleep(0.02)
    store.heartbeat(t["id"])
    assert store.get_trial(t["id"])["heartbeat_at"] > beat0

    store.finish_trial(t["id"], "FAILED", error="nan loss")
    d = store.get_trial(t["id"])
    assert d["state"] == "FAILED" and d["error"] == "nan loss" and d["finished_at"] is not None
    assert d["config"] == {"shape": {"layers": 2, "hidden": 128}}

    store.start_trial(t["id"])  # a retry: attempts counts up and the old error is cleared
    d = store.get_trial(t["id"])
    assert d["state"] == "RUNNING" and d["attempts"] == 2 and d["error"] is None
    store.finish_trial(t["id"], "COMPLETE")
    assert store.get_trial(t["id"])["state"] == "COMPLETE"
    with pytest.raises(AssertionError):
        store.finish_trial(t["id"], "RUNNING")
    assert store.get_trial(t["id"] + 1000) is None


def test_trial_filters(store):
    job = store.create_job("j", {})
    store.add_trial(job, "teacher", {}, state="COMPLETE")
    store.add_trial(job, "student", {}, state="COMPLETE")
    store.add_trial(job, "student", {}, state="WAITING")
    store.add_trial(job, "assistant", {}, state="FAILED")
    assert [t["number"] for t in store.trials(job, kind="student")] == [2, 3]
    assert [t["number"] for t in store.trials(job, kind=["teacher", "assistant"])] == [1, 4]
    assert [t["number"] for t in store.trials(job, state="COMPLETE")] == [1, 2]
    assert [t["number"] for t in store.trials(job, kind="student", state="WAITING")] == [3]
    assert store.trials(job, kind="reference") == []


def test_reset_unfinished_trials(store):
    job, other = store.create_job("j", {}), store.create_job("other", {})
    ids = [store.add_trial(job, "student", {})["id"] for _ in range(4)]
    other_id = store.add_trial(other, "student", {})["id"]
    for i in ids[:3] + [other_id]:
        store.start_trial(i)
    store.finish_trial(ids[0], "COMPLETE")
    assert store.reset_unfinished_trials(job) == 2
    states = [store.get_trial(i)["state"] for i in ids]
    assert states == ["COMPLETE", "WAITING", "WAITING", "WAITING"]
    assert store.get_trial(ids[1])["error"] == "interrupted; retried"
    assert store.get_trial(ids[0])["error"] is None
    assert store.get_trial(other_id)["state"] == "RUNNING"  # another job's trials are left alone
    assert store.reset_unfinished_trials(job) == 0


# -- metrics, latency, artefacts -----------------------------------------------------------------------------------------
def test_trials_lost_with_their_worker_are_requeued_at_most_three_starts(store):
    job = store.create_job("j", {})
    ids = [store.add_trial(job, "student", {"i": i})["id"] for i in range(3)]
    other = store.add_trial(job, "reference", {})["id"]
    for _ in range(3):  # trial 0 was started three times and lost each time
        store.start_trial(ids[0])
    store.start_trial(ids[1])  # lost once
    store.start_trial(other)
    store.start_trial(ids[2])
    store.finish_trial(ids[2], "COMPLETE")
    assert store.requeue_lost_trials(job, "student", max_attempts=3) == (1, 1)
    states = {t["id"]: (t["state"], t["attempts"]) for t in store.trials(job)}
    assert states[ids[0]] == ("FAILED", 3) and "3 times" in store.get_trial(ids[0])["error"]
    assert states[ids[1]] == ("WAITING", 1)
    assert states[ids[2]] == ("COMPLETE", 1)
    assert states[other] == ("RUNNING", 1)  # another kind is not this stage's to requeue


def test_metrics_round_trip(store):
    job = store.create_job("j", {})
    t = store.add_trial(job, "student", {})["id"]
    store.add_metric(t, "accuracy", 0.5, "dev", "proxy", step=10)
    store.add_metric(t, "accuracy", 0.6, "dev", "proxy", step=20)
    store.add_metric(t, "accuracy", 0.7, "dev", "final")
    store.add_metric(t, "accuracy", 0.65, "test", "final")
    store.add_metric(t, "params", 1234567, "dev", "final")
    d = store.get_trial(t)
    first = dict(d["metrics"][0])
    assert first.pop("created_at") <= d["metrics"][-1]["created_at"]  # each metric is timestamped (final timing)
    assert first == {"name": "accuracy", "value": 0.5, "split": "dev", "source": "proxy", "step": 10}
    assert len(d["metrics"]) == 5 and isinstance(d["metrics"][4]["value"], float)
    assert metric_value(d, "accuracy", "dev") == 0.7  # final preferred over proxy
    assert metric_value(d, "accuracy", "dev", "proxy") == 0.6  # the latest proxy value
    assert metric_value(d, "accuracy", "test") == 0.65
    assert metric_value(d, "params", "dev") == 1234567
    assert metric_value(d, "f1_macro", "dev") is None
    with pytest.raises(AssertionError):
        store.add_metric(t, "accuracy", 0.1, "validation", "final")
    with pytest.raises(AssertionError):
        store.add_metric(t, "accuracy", 0.1, "dev", "guess")
    assert store.count_rows()["metrics"] == 5


def test_foreign_keys_are_enforced(store):
    with pytest.raises(IntegrityError):
        store.add_metric(424242, "accuracy", 0.5, "dev", "final")
    assert store.count_rows()["metrics"] == 0


def test_latency_round_trip_and_cache_lookup(store):
    job = store.create_job("j", {})
    t1 = store.add_trial(job, "student", {})["id"]
    t2 = store.add_trial(job, "student", {})["id"]
    store.add_latency(t1, "L2-H128", latency_row(p50=2.0))
    store.add_latency(t2, "L2-H128", latency_row(p50=2.2))  # the same shape measured again, later
    store.add_latency(t2, "L2-H128", latency_row(fingerprint_id="fp-b", p50=9.0))  # another machine
    store.add_latency(None, "L2-H128", latency_row(p50=3.0, batch=8))  # other settings, no trial
    store.add_latency(t1, "L1-H64", latency_row(p50=0.5))

    d = store.get_trial(t1)
    assert [m["config_key"] for m in d["latency"]] == ["L2-H128", "L1-H64"]
    m = d["latency"][0]
    for k, v in latency_row(p50=2.0).items():
        assert m[k] == pytest.approx(v) if isinstance(v, float) else m[k] == v, k
    assert m["trial_id"] == t1 and m["created_at"] is not None

    hit = store.find_latency("fp-a", "L2-H128", settings())
    assert hit["p50_ms"] == 2.2 and hit["trial_id"] == t2  # the latest matching measurement
    assert store.find_latency("fp-b", "L2-H128", settings())["p50_ms"] == 9.0
    hit8 = store.find_latency("fp-a", "L2-H128", settings(batch=8))
    assert hit8["p50_ms"] == 3.0 and hit8["trial_id"] is None
    assert store.find_latency("fp-a", "L1-H64", settings())["p50_ms"] == 0.5
    # any difference in fingerprint, shape or settings is a miss
    assert store.find_latency("fp-c", "L2-H128", settings()) is None
    assert store.find_latency("fp-a", "L3-H128", settings()) is None
    for other in (settings(batch=4), settings(seq_len=64), settings(threads=1), settings(runtime="onnx"),
                  settings(dtype="fp16")):
        assert store.find_latency("fp-a", "L2-H128", other) is None, other

    bad = latency_row()
    del bad["p90_ms"]
    with pytest.raises(ValueError, match="p90_ms"):
        store.add_latency(t1, "x", bad)
    assert store.count_rows()["latency_measurements"] == 5


def test_artefacts_round_trip(store, tmp_path):
    job = store.create_job("j", {})
    other = store.create_job("k", {})
    t = store.add_trial(job, "student", {})["id"]
    store.add_artefact(job, None, "teacher", tmp_path / "teacher")
    store.add_artefact(job, t, "model", str(tmp_path / "m1"))
    store.add_artefact(job, t, "checkpoint", str(tmp_path / "ck"))
    store.add_artefact(other, None, "export", "/x")
    assert store.job_artefacts(job) == [
        {"trial_id": None, "kind": "teacher", "path": str(tmp_path / "teacher")},
        {"trial_id": t, "kind": "model", "path": str(tmp_path / "m1")},
        {"trial_id": t, "kind": "checkpoint", "path": str(tmp_path / "ck")},
    ]
    assert store.job_artefacts(job, kind="model") == [{"trial_id": t, "kind": "model", "path": str(tmp_path / "m1")}]
    assert store.get_trial(t)["artefacts"] == [{"kind": "model", "path": str(tmp_path / "m1")},
                                               {"kind": "checkpoint", "path": str(tmp_path / "ck")}]
    assert store.count_rows() == {"jobs": 2, "trials": 1, "metrics": 0, "latency_measurements": 0, "artefacts": 4}


# -- SQLite specifics ----------------------------------------------------------------------------------------------------
def test_sqlite_runs_in_wal_mode(sqlite_url):
    s = Store(sqlite_url)
    path = sqlite_url.removeprefix("sqlite:///")
    with s.engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert conn.exec_driver_sql("PRAGMA busy_timeout").scalar() == 60000
        assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
    s.create_job("j", {})
    s.dispose()
    # WAL is a property of the file: a plain connection sees it too
    with sqlite3.connect(path) as raw:
        assert raw.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert raw.execute("SELECT version_num FROM alembic_version").fetchone()[0] == HEAD_REVISION


def _add_trials_worker(url: str, job_id: int, n: int, barrier, results) -> None:
    """Runs in a spawned process: wait for the others, then add `n` trials as fast as possible."""
    try:
        s = Store(url, migrate=False)
        barrier.wait(timeout=120)
        numbers = [s.add_trial(job_id, "student", {"pid": mp.current_process().pid, "i": i})["number"] for i in range(n)]
        s.dispose()
        results.put(("ok", numbers))
    except BaseException as exc:  # report everything to the parent, including "database is locked"
        results.put(("error", f"{type(exc).__name__}: {exc}"))


def _run_concurrent_writers(url: str, workers: int, per_worker: int) -> None:
    s = Store(url)
    job = s.create_job("concurrent", {})
    other = s.create_job("other", {})
    s.add_trial(other, "student", {})
    ctx = mp.get_context("spawn")
    barrier = ctx.Barrier(workers)
    results = ctx.Queue()
    procs = [ctx.Process(target=_add_trials_worker, args=(url, job, per_worker, barrier, results)) for _ in range(workers)]
    for p in procs:
        p.start()
    out = [results.get(timeout=180) for _ in procs]
    for p in procs:
        p.join(timeout=60)
        assert p.exitcode == 0
    errors = [msg for kind, msg in out if kind == "error"]
    assert not errors, errors
    numbers = sorted(n for _, ns in out for n in ns)
    assert numbers == list(range(1, workers * per_worker + 1))  # unique and consecutive
    stored = s.trials(job)
    assert [t["number"] for t in stored] == numbers
    assert len({t["config"]["pid"] for t in stored}) == workers
    for _, ns in out:
        assert ns == sorted(ns)  # each writer sees its own numbers increase
    assert [t["number"] for t in s.trials(other)] == [1]
    s.dispose()


def test_concurrent_writers_on_one_sqlite_file(sqlite_url):
    _run_concurrent_writers(sqlite_url, workers=4, per_worker=10)


def test_concurrent_writers_on_postgres(fresh_postgres_url):
    _run_concurrent_writers(fresh_postgres_url, workers=4, per_worker=10)


# -- bad URLs ------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("url, needle", [
    ("postgresql+psycopg://nobody@127.0.0.1:1/x", "cannot connect to postgresql+psycopg://nobody@127.0.0.1:1/x"),
    ("notaurl", "'notaurl' is not a database URL"),
    ("sqlite:////no/such/dir/anywhere/nas.db", "directory /no/such/dir/anywhere does not exist"),
    ("nosuchdialect://u@h/db", "cannot use"),
    ("mysql://u@127.0.0.1:1/db", "cannot use"),
])
def test_bad_url_raises_store_error(url, needle):
    with pytest.raises(StoreError) as ei:
        Store(url)
    msg = str(ei.value)
    assert msg.startswith("storage: ") and needle in msg
    assert "\n" not in msg and "Traceback" not in msg


def test_bad_url_hides_the_password():
    with pytest.raises(StoreError) as ei:
        Store("postgresql+psycopg://user:s3cret-pw@127.0.0.1:1/nas")
    assert "s3cret-pw" not in str(ei.value) and "***" in str(ei.value)


def test_missing_database_on_a_live_server(postgres_server):
    host, port = postgres_server
    with pytest.raises(StoreError) as ei:
        Store(f"postgresql+psycopg://postgres@{host}:{port}/no_such_database")
    assert "no_such_database" in str(ei.value) and "does not exist" in str(ei.value)


def test_sqlite_url_in_missing_dir_creates_nothing(tmp_path):
    with pytest.raises(StoreError):
        Store(f"sqlite:///{tmp_path / 'missing' / 'nas.db'}")
    assert not (tmp_path / "missing").exists()


def test_a_0001_database_is_upgraded_in_place_keeping_its_jobs(sqlite_url):
    from alembic import command
    from alembic.config import Config
    from sqlalchemy import create_engine

    from nas.store.store import MIGRATIONS

    engine = create_engine(sqlite_url)
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    with engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "0001")
        conn.exec_driver_sql("INSERT INTO jobs (name, spec, status, created_at) VALUES ('old', '{}', 'QUEUED', '2026-01-01')")
    engine.dispose()
    s = Store(sqlite_url)
    assert s.schema_revision() == HEAD_REVISION
    job = s.list_jobs()[0]
    assert job["name"] == "old" and job["claims"] == 0 and job["cancel_requested"] is False
    s.dispose()
