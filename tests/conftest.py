"""Shared fixtures: an isolated NAS_HOME per test, SQLite URLs in tmp, and a real PostgreSQL 15 server for the session.

The token/teacher cache (NAS_CACHE) is shared across tests and runs (default /work/main/.nas/test-cache) so that nothing
expensive is recomputed; tests that check the cache itself point NAS_CACHE at their own tmp dir.
"""

from __future__ import annotations

import os
import pathlib
import pwd
import shutil
import socket
import subprocess
import sys
import tempfile
import time

import pytest

REPO = pathlib.Path(__file__).resolve().parent.parent
PG_BIN = pathlib.Path("/usr/lib/postgresql/15/bin")
DEFAULT_TEST_CACHE = REPO / ".nas" / "test-cache"
FINISHED = pytest.StashKey()  # the session, once it has finished (pytest_unconfigure's exit status)

# Keep the suite light on a shared 2-core machine: torch runs on one thread in this process (see pytest_configure).
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# Every real job the suite runs (in this process, a `nas` subprocess or a Ray worker) has torch's default device set to
# `meta` in its stages and workers, so a tensor made without an explicit device fails the test that ran it: the CUDA
# path differs from the tested one only in the device's name (nas/compute.py, tests/test_strict_devices.py)
os.environ.setdefault("NAS_STRICT_DEVICES", "1")


def pytest_sessionfinish(session):
    session.config.stash[FINISHED] = session


@pytest.hookimpl(trylast=True)
def pytest_unconfigure(config):
    """Leave with pytest's exit status as soon as it has reported and every fixture is torn down, without the
    interpreter's own teardown: a CI run (2026-12-07, 522 passed) died with a segmentation fault after its summary line,
    in the finalisation of one of the native libraries this process has loaded (Ray's core worker, torch, tokenizers,
    Chromium's driver), which turned a green suite red. NAS_TEST_FULL_EXIT=1 keeps the full teardown (to debug it)."""
    session = config.stash.get(FINISHED, None)
    if session is None or os.environ.get("NAS_TEST_FULL_EXIT") == "1":
        return
    import logging

    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(int(session.exitstatus))


def pytest_configure(config):
    try:
        import torch

        torch.set_num_threads(1)
    except ImportError:  # pragma: no cover - torch is a hard dependency
        pass


@pytest.fixture
def nas_home(tmp_path, monkeypatch) -> pathlib.Path:
    """NAS_HOME in a fresh tmp dir; NAS_CACHE stays shared (set to .nas/test-cache when the caller left it unset)."""
    home = tmp_path / "nas-home"
    home.mkdir()
    monkeypatch.setenv("NAS_HOME", str(home))
    monkeypatch.delenv("NAS_STORAGE", raising=False)
    if not os.environ.get("NAS_CACHE"):
        monkeypatch.setenv("NAS_CACHE", str(DEFAULT_TEST_CACHE))
    return home


@pytest.fixture
def sqlite_url(tmp_path) -> str:
    return f"sqlite:///{tmp_path / 'store.db'}"


# -- PostgreSQL ---------------------------------------------------------------------------------------------------------
def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _pg_runner():
    """How to run the server binaries: directly when we are not root, else as the `postgres` system user.
    Returns (prefix argv, uid, gid) or a skip reason string."""
    if os.geteuid() != 0:
        return [], os.getuid(), os.getgid()
    try:
        pw = pwd.getpwnam("postgres")
    except KeyError:
        return "running as root and there is no `postgres` system user to run initdb (initdb refuses root)"
    if pw.pw_uid == 0:
        return "the `postgres` user is root; initdb refuses to run as root"
    runuser = shutil.which("runuser")
    if runuser:
        return [runuser, "-u", "postgres", "--"], pw.pw_uid, pw.pw_gid
    su = shutil.which("su")
    if su:
        return [su, "postgres", "-s", "/bin/sh", "-c"], pw.pw_uid, pw.pw_gid  # argv joined below
    return "running as root and neither runuser nor su is available to switch to the `postgres` user"


def _pg(prefix: list[str], argv: list[str], **kw) -> subprocess.CompletedProcess:
    if prefix and prefix[-1] == "-c":  # su: one shell command line
        import shlex

        argv = [" ".join(shlex.quote(a) for a in argv)]
    kw.setdefault("cwd", "/tmp")  # the postgres user may not be able to enter the caller's cwd
    return subprocess.run(prefix + argv, capture_output=True, text=True, **kw)


@pytest.fixture(scope="session")
def postgres_server():
    """A real PostgreSQL 15 server on 127.0.0.1 with trust auth; yields (host, port). Stopped (immediate) at the end."""
    runner = _pg_runner()
    if isinstance(runner, str):
        pytest.skip(runner)
    prefix, uid, gid = runner
    initdb = PG_BIN / "initdb" if (PG_BIN / "initdb").exists() else pathlib.Path(shutil.which("initdb") or "initdb")
    pg_ctl = PG_BIN / "pg_ctl"
    assert initdb.exists() and pg_ctl.exists(), f"PostgreSQL 15 binaries not found in {PG_BIN}"
    # not under pytest's tmp dir: that is mode 0700 for root and the postgres user could not enter it
    root = pathlib.Path(tempfile.mkdtemp(prefix="nas-test-pg-"))
    os.chown(root, uid, gid)
    os.chmod(root, 0o700)
    data = root / "data"
    res = _pg(prefix, [str(initdb), "-D", str(data), "-U", "postgres", "--auth=trust", "-E", "UTF8", "--no-locale",
                       "--no-sync"], timeout=120)
    assert res.returncode == 0, f"initdb failed: {res.stdout}\n{res.stderr}"
    port = None
    for _ in range(3):
        port = free_port()
        opts = (f"-c listen_addresses=127.0.0.1 -p {port} -c unix_socket_directories={root} -c fsync=off "
                f"-c synchronous_commit=off -c full_page_writes=off -c max_connections=100")
        res = _pg(prefix, [str(pg_ctl), "-D", str(data), "-l", str(root / "server.log"), "-w", "-t", "60", "-o", opts,
                           "start"], timeout=120)
        if res.returncode == 0:
            break
        time.sleep(0.5)
    else:
        log = (root / "server.log").read_text() if (root / "server.log").exists() else ""
        pytest.fail(f"pg_ctl start failed: {res.stdout}\n{res.stderr}\n{log[-2000:]}")
    try:
        yield "127.0.0.1", port
    finally:
        _pg(prefix, [str(pg_ctl), "-D", str(data), "-m", "immediate", "stop"], timeout=60)
        shutil.rmtree(root, ignore_errors=True)


def create_pg_database(host: str, port: int, name: str) -> str:
    import psycopg

    with psycopg.connect(host=host, port=port, user="postgres", dbname="postgres", autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    return f"postgresql+psycopg://postgres@{host}:{port}/{name}"


@pytest.fixture(scope="session")
def postgres_url(postgres_server) -> str:
    """`postgresql+psycopg://postgres@127.0.0.1:PORT/nas_test` on the session's real server."""
    host, port = postgres_server
    return create_pg_database(host, port, "nas_test")


_pg_db_counter = iter(range(1, 10**6))


@pytest.fixture
def fresh_postgres_url(postgres_server) -> str:
    """A new, empty database on the session's server for one test."""
    host, port = postgres_server
    return create_pg_database(host, port, f"nas_t{next(_pg_db_counter)}_{os.getpid()}")


# -- the real MiniLM tokenizer, shared by every module that tokenises a data slice --------------------------------------
@pytest.fixture(scope="session")
def minilm_tokenizer():
    from transformers import AutoTokenizer

    from nas.teachers.load import teacher_path

    return AutoTokenizer.from_pretrained(teacher_path("minilm-l6"))


# -- real jobs shared by a test module ----------------------------------------------------------------------------------
import contextlib
import csv

# The tiny real job several modules run (BBC slice, tiny space, 3 per-trial students, a TF-IDF reference); the teacher
# it fine-tunes is shared through the test cache. Modules change the name with `tiny_job_spec(name)`.
TINY_JOB_SPEC = """
name: tiny-e2e
teacher: minilm-l6
dataset: {name: bbc-news, max_rows: 150}
task: classification
search_space: tiny
latency: {device: cpu, batch: 1, seq_len: 32, threads: 1, warmup: 2, min_runs: 5, max_runs: 20}
budgets: {trials: 3, epochs: 3, max_seq_len: 32, teacher_epochs: 2}
references: [tfidf-linear]
seed: 3
"""


# The supernet schedule on the same slice (tests/test_supernet_job.py, tests/test_train_resume.py): rewiring, a 4-step
# supernet, AutoDisc, evolution, two two-step finals with a one-step baseline; no reference.
TINY_SUPERNET_SPEC = (TINY_JOB_SPEC.replace("name: tiny-e2e", "name: tiny-supernet")
                      .replace("references: [tfidf-linear]\n", "")
                      .replace("budgets: {trials: 3, epochs: 3,", "budgets: {trials: 6,")
                      .replace("seed: 3", """search:
  strategy: evolution
  population: 3
  supernet: {steps: 4, n_random: 1, rewire_rows: 16, checkpoint_every: 2}
  autodisc: {lambda: 0.2}
  final: {top_k: 2, epochs: 1, one_step_baseline: true, augment: 1, soft_targets: average, student_init: assistant}
seed: 3"""))


def tiny_job_spec(name: str) -> str:
    return TINY_JOB_SPEC.replace("name: tiny-e2e", f"name: {name}")


@contextlib.contextmanager
def job_environment(home: pathlib.Path, **env: str):
    """NAS_HOME=home (NAS_CACHE shared unless set) plus `env` for the duration; Ray is shut down afterwards."""
    keys = {"NAS_HOME", "NAS_CACHE", *env}
    old = {k: os.environ.get(k) for k in keys}
    os.environ["NAS_HOME"] = str(home)
    os.environ.setdefault("NAS_CACHE", str(DEFAULT_TEST_CACHE))
    os.environ.update(env)
    try:
        yield
    finally:
        import ray

        ray.shutdown()
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


@contextlib.contextmanager
def real_job(home: pathlib.Path, spec_text: str, **env: str):
    """Run the job `spec_text` (YAML) for real into an SQLite store in `home` (under `job_environment(home, **env)`);
    yields {"store", "job_id", "home", "url"} while the environment holds."""
    import yaml

    url = f"sqlite:///{home / 'nas.db'}"
    with job_environment(home, **env):
        from nas.pipeline import run_job
        from nas.spec.job import parse_spec
        from nas.store import Store

        store = Store(url)
        job_id = run_job(parse_spec({**yaml.safe_load(spec_text), "storage": url}), store, progress=False)
        yield {"store": store, "job_id": job_id, "home": home, "url": url}


def write_csv(path: pathlib.Path, header: list[str], rows: list[list]) -> pathlib.Path:
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(header)
        w.writerows(rows)
    return path
