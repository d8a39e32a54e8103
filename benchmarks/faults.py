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
import contextlib
import hashlib
import json
import multiprocessing as mp
import os
import pathlib
import re
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time

REPO = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
NAS = [sys.executable, "-m", "nas.cli"]
RAY = str(pathlib.Path(sys.executable).parent / "ray")

SPEC = """
name: {name}
teacher: minilm-l6
dataset: {{name: bbc-news, max_rows: 150}}
task: classification
search_space: tiny
latency: {{device: cpu, batch: 1, seq_len: 32, threads: 1, warmup: 2, min_runs: 5, max_runs: 20}}
budgets: {{trials: {trials}, steps: {steps}, max_seq_len: 32, teacher_epochs: 2, max_concurrent: {concurrent}}}
seed: 3
"""


def log(msg: str) -> None:
    print(f"[faults {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def job_env(home: pathlib.Path, **extra: str) -> dict:
    home.mkdir(parents=True, exist_ok=True)
    return {**os.environ, "NAS_HOME": str(home), "NAS_CACHE": os.environ.get("NAS_CACHE", str(REPO / ".nas" / "test-cache")),
            "NAS_LOCK_DIR": str(home / "locks"), "RAY_USAGE_STATS_ENABLED": "0", "RAY_AUTH_MODE": "disabled",
            "TOKENIZERS_PARALLELISM": "false", "PYTHONWARNINGS": "ignore", "NAS_STORAGE": "", **extra}


class Processes:
    """Every process started here, each in its own session so that a kill reaches its children; all killed at exit."""

    def __init__(self):
        self.procs: list[subprocess.Popen] = []

    def start(self, argv: list[str], env: dict, logfile: pathlib.Path, **kw) -> subprocess.Popen:
        out = open(logfile, "a")
        p = subprocess.Popen(argv, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
                             cwd=kw.pop("cwd", REPO), **kw)
        self.procs.append(p)
        return p

    @staticmethod
    def kill_group(p: subprocess.Popen) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(p.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            p.wait(30)

    def close(self) -> None:
        for p in self.procs:
            self.kill_group(p)


def wait_for(pred, timeout: float, what: str, every: float = 0.5):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        got = pred()
        if got:
            return got
        time.sleep(every)
    raise TimeoutError(f"timed out after {timeout:.0f} s waiting for {what}")


def submit(spec_text: str, home: pathlib.Path, url: str, env: dict) -> int:
    from nas.spec import parse_spec
    from nas.store import Store

    import yaml

    spec = parse_spec(yaml.safe_load(spec_text))
    store = Store(url)
    job_id = store.create_job(spec.name, spec.model_dump(mode="json"))
    store.dispose()
    return job_id


def students(store, job_id: int) -> list[dict]:
    return store.trials(job_id, kind="student")


def by_state(trials: list[dict], state: str) -> list[dict]:
    return [t for t in trials if t["state"] == state]


def process_alive(needle: str) -> bool:
    """Some live process (not a zombie) has `needle` in its command line."""
    for d in pathlib.Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            if (d / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").find(needle) >= 0:
                if "State:\tZ" not in (d / "status").read_text():
                    return True
        except OSError:
            continue
    return False


def group_members(pgid: int) -> list[int]:
    """Live processes in process group `pgid` (what a killpg missed)."""
    pids = []
    for d in pathlib.Path("/proc").iterdir():
        with contextlib.suppress(OSError, ValueError, IndexError):
            fields = (d / "stat").read_text().rsplit(")", 1)[1].split()
            if d.name.isdigit() and int(fields[2]) == pgid and fields[0] != "Z":
                pids.append(int(d.name))
    return pids


def tail(path: pathlib.Path, n: int = 1500) -> str:
    try:
        return path.read_text(errors="replace")[-n:]
    except OSError as exc:
        return f"<{exc}>"


def cluster_cpus(port: int, env: dict) -> float:
    """Total CPUs the Ray cluster at 127.0.0.1:`port` reports (`ray status`); 0 while it cannot be reached."""
    try:
        out = subprocess.run([RAY, "status", "--address", f"127.0.0.1:{port}"], env=env, capture_output=True,
                             text=True, timeout=60).stdout
    except subprocess.TimeoutExpired:
        return 0.0
    m = re.search(r"[\d.]+/([\d.]+) CPU", out)
    return float(m.group(1)) if m else 0.0


# -- 1. kill -9 of the driver ---------------------------------------------------------------------------------------------
def driver_kill(root: pathlib.Path, via_serve: bool, trials: int, steps: int) -> dict:
    """Kill -9 `nas serve` (its job child dies with it) or a `nas resume` driver mid-trial, once some trials are
    COMPLETE; another `nas serve` (after reaping) or `nas resume` continues. Counts completed trials lost or re-run."""
    from nas.store import Store
    from nas.store.models import utcnow

    tag = "serve" if via_serve else "resume"
    home = root / f"driver-{tag}"
    url = f"sqlite:///{home / 'nas.db'}"
    env = job_env(home)
    job_id = submit(SPEC.format(name=f"driver-kill-{tag}", trials=trials, steps=steps, concurrent=1), home, url, env)
    store = Store(url)
    procs = Processes()
    serve_opts = ["--heartbeat", "1", "--stale-after", "4", "--poll", "0.5"]
    try:
        first = (NAS + ["serve", "--storage", url] + serve_opts) if via_serve else (
            NAS + ["resume", str(job_id), "--storage", url, "--quiet"])
        p = procs.start(first, env, home / "first.log")
        need = 2 if trials > 3 else 1
        wait_for(lambda: len(by_state(students(store, job_id), "COMPLETE")) >= need
                 and by_state(students(store, job_id), "RUNNING"), 900, f"{need} completed trial(s) and one running")
        time.sleep(1.0)  # well inside the running trial
        done = {t["id"]: (t["attempts"], t["finished_at"], len(t["metrics"]), len(t["latency"]))
                for t in by_state(students(store, job_id), "COMPLETE")}
        running_at_kill = len(by_state(students(store, job_id), "RUNNING"))
        os.kill(p.pid, signal.SIGKILL)  # the process only: its job child must die with it
        t_kill, kill_at = time.monotonic(), utcnow()
        p.wait(10)
        orphan = False
        with contextlib.suppress(TimeoutError):
            wait_for(lambda: not process_alive(f"nas.cli resume {job_id} --storage {url}"), 15, "the job child to die")
        orphan = process_alive(f"nas.cli resume {job_id} --storage {url}")
        log(f"driver kill ({tag}): killed with {len(done)} complete, {running_at_kill} running; orphaned job child: {orphan}")
        zombies_after_reap = None
        if via_serve:
            second = procs.start(NAS + ["serve", "--storage", url] + serve_opts, env, home / "second.log")
            wait_for(lambda: store.get_job(job_id)["status"] != "RUNNING" or store.get_job(job_id)["claims"] > 1, 60,
                     "the reaper")
            if store.get_job(job_id)["claims"] == 1:  # reaped, not yet claimed again
                zombies_after_reap = len(by_state(students(store, job_id), "RUNNING"))
        else:
            second = procs.start(NAS + ["resume", str(job_id), "--storage", url, "--quiet"], env, home / "second.log")

        def working_again():  # a trial started (or finished) after the kill: the zombie left RUNNING does not count
            return any((t["started_at"] or kill_at) > kill_at for t in students(store, job_id))

        wait_for(working_again, 600, "a trial to run again")
        resume_s = time.monotonic() - t_kill
        wait_for(lambda: store.get_job(job_id)["status"] in ("COMPLETE", "FAILED", "CANCELLED"), 900, "the job to end")
        total_s = time.monotonic() - t_kill
        job = store.get_job(job_id)
        after = {t["id"]: t for t in students(store, job_id)}
        lost = sum(1 for tid, before in done.items()
                   if after[tid]["state"] != "COMPLETE" or (after[tid]["attempts"], after[tid]["finished_at"],
                                                           len(after[tid]["metrics"]), len(after[tid]["latency"])) != before)
        zombies = len(by_state(list(after.values()), "RUNNING"))
        if zombies_after_reap is None:  # `nas resume` resets RUNNING trials before it runs anything: count at the end
            zombies_after_reap = zombies
        res = {"completed_at_kill": len(done), "completed_lost": lost, "zombies_after_reap": max(zombies, zombies_after_reap),
               "resume_s": round(resume_s, 1), "resume_to_complete_s": round(total_s, 1), "job_status": job["status"],
               "students_complete": len(by_state(list(after.values()), "COMPLETE")), "orphaned_job_child": orphan,
               "claims": job["claims"]}
        log(f"driver kill ({tag}): {res}")
        return res
    finally:
        procs.close()
        store.dispose()


# -- 2. a Ray worker node killed mid-trial --------------------------------------------------------------------------------
def worker_kill(root: pathlib.Path, steps: int) -> dict:
    """A head (1 CPU) and a second node (`ray start --address`, 1 CPU) on this machine; two trials run at once, one on
    each node; the second node is killed (its whole process group) mid-trial. The trial must run again elsewhere."""
    from nas.store import Store

    from nas.store.local_postgres import _free_port

    home = root / "worker"
    url = f"sqlite:///{home / 'nas.db'}"
    env = job_env(home)
    temp = pathlib.Path(tempfile.mkdtemp(prefix="nasray", dir="/tmp"))  # short: Ray's socket paths have a length limit
    port = _free_port()
    procs = Processes()
    store = Store(url)
    common = ["--num-cpus", "1", "--node-ip-address", "127.0.0.1", "--object-store-memory", str(200 * 2**20),
              "--block", "--disable-usage-stats"]
    try:
        procs.start([RAY, "start", "--head", "--port", str(port), "--include-dashboard=false", "--temp-dir", str(temp),
                     "--dashboard-agent-listen-port", str(_free_port()), "--ray-client-server-port", str(_free_port())]
                    + common, env, home / "head.log")
        wait_for(lambda: cluster_cpus(port, env) >= 1, 120, "the head node to come up", every=2)
        # the second node gets its own free ports too: a default port taken by another Ray on this machine kills it
        node = procs.start([RAY, "start", "--address", f"127.0.0.1:{port}", "--dashboard-agent-listen-port",
                            str(_free_port()), "--metrics-export-port", str(_free_port())] + common, env, home / "node.log")
        try:
            wait_for(lambda: cluster_cpus(port, env) >= 2, 120, "the second node to join (2 CPUs)", every=2)
        except TimeoutError as exc:
            raise TimeoutError(f"{exc}; node.log ends: {tail(home / 'node.log')}") from None
        job_id = submit(SPEC.format(name="worker-kill", trials=2, steps=steps, concurrent=2), home, url, env)
        driver = procs.start(NAS + ["resume", str(job_id), "--storage", url, "--address", f"127.0.0.1:{port}", "--quiet"],
                             env, home / "driver.log")

        def both_running():
            if driver.poll() is not None:  # the job ended before two trials ever ran side by side: say why, now
                raise RuntimeError(f"the driver exited ({driver.returncode}) before two trials ran at once; "
                                   f"driver.log ends: {tail(home / 'driver.log')}")
            return len(by_state(students(store, job_id), "RUNNING")) == 2

        try:
            wait_for(both_running, 600, "two trials running at once")
        except TimeoutError as exc:
            raise TimeoutError(f"{exc} (cluster CPUs now: {cluster_cpus(port, env)}); "
                               f"driver.log ends: {tail(home / 'driver.log')}") from None
        time.sleep(2)
        procs.kill_group(node)
        t_kill = time.monotonic()
        time.sleep(1)
        leftovers = group_members(node.pid)
        log(f"worker kill: second node killed mid-trial (processes of its group left: {len(leftovers)})")
        driver.wait(900)
        job = store.get_job(job_id)
        ts = students(store, job_id)
        res = {"job_status": job["status"], "students_complete": len(by_state(ts, "COMPLETE")), "students": len(ts),
               "retried_trials": sum(t["attempts"] > 1 for t in ts), "kill_to_complete_s": round(time.monotonic() - t_kill, 1),
               "driver_exit": driver.returncode, "node_processes_left_after_kill": len(leftovers)}
        res["job_completed"] = job["status"] == "COMPLETE" and res["students_complete"] == 2 and res["retried_trials"] >= 1
        log(f"worker kill: {res}")
        return res
    finally:
        procs.close()
        store.dispose()
        subprocess.run(["rm", "-rf", str(temp)], check=False)


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


# -- 5. two `nas serve` processes, many queued jobs --------------------------------------------------------------------
def double_claims(root: pathlib.Path, n_jobs: int) -> dict:
    """Two services drain one queue. The jobs end fast: their dataset file is removed after they are queued, so each
    child fails at validation (a FAILED job); what is measured is who claimed and ran what."""
    from nas.store import Store

    home = root / "claims"
    url = f"sqlite:///{home / 'nas.db'}"
    env = job_env(home)
    csv = home / "data.csv"
    csv.write_text("text,label\n" + "".join(f"row {i},{'ab'[i % 2]}\n" for i in range(30)))
    spec = SPEC.format(name="claim", trials=1, steps=1, concurrent=1).replace(
        "{name: bbc-news, max_rows: 150}", "{path: %s}" % csv)
    ids = [submit(spec.replace("name: claim", f"name: claim-{i}"), home, url, env) for i in range(n_jobs)]
    csv.unlink()
    procs = Processes()
    store = Store(url)
    try:
        serves = [procs.start(NAS + ["serve", "--storage", url, "--once", "--poll", "0.2", "--heartbeat", "1",
                                     "--stale-after", "60"], env, home / f"serve-{i}.log") for i in range(2)]
        t0 = time.monotonic()
        for p in serves:
            p.wait(900)
        ran: dict[int, list[int]] = {}
        for i in range(2):
            for line in (home / f"serve-{i}.log").read_text().splitlines():
                if line.startswith("job ") and line.endswith("): running"):
                    ran.setdefault(int(line.split()[1]), []).append(i)
        jobs = {j["id"]: j for j in store.list_jobs()}
        doubles = sum(1 for i in ids if len(ran.get(i, [])) > 1 or jobs[i]["claims"] > 1)
        res = {"jobs": n_jobs, "double_claims": doubles, "unclaimed": sum(1 for i in ids if i not in ran),
               "per_service": [sum(1 for v in ran.values() if i in v) for i in range(2)],
               "statuses": sorted({jobs[i]["status"] for i in ids}), "drain_s": round(time.monotonic() - t0, 1)}
        log(f"double claims: {res}")
        return res
    finally:
        procs.close()
        store.dispose()


# -- 6. hostile input through the CLI -----------------------------------------------------------------------------------
def _table_digest(db: pathlib.Path) -> str:
    con = sqlite3.connect(db)
    h = hashlib.sha256()
    for (table,) in con.execute("SELECT name FROM sqlite_master WHERE type='table' ORDER BY name"):
        for row in con.execute(f'SELECT * FROM "{table}" ORDER BY 1'):
            h.update(repr(row).encode())
    con.close()
    return h.hexdigest()


def bad_input_cases(work: pathlib.Path, job_id: int, quick: bool) -> list[tuple[str, list[str], str, dict]]:
    """(id, CLI arguments, the field the message must name, extra environment)."""
    import yaml

    good = {"name": "hostile", "dataset": {"path": str(work / "good.csv")}, "search_space": "tiny",
            "latency": {"threads": 1, "warmup": 0, "min_runs": 5, "max_runs": 5},
            "budgets": {"trials": 1, "steps": 1, "max_seq_len": 16, "teacher_epochs": 0.01}}

    def spec(case: str, edit=None, text: str | None = None) -> str:
        p = work / f"{case}.yaml"
        if text is not None:
            p.write_text(text)
        else:
            d = json.loads(json.dumps(good))
            edit(d)
            p.write_text(yaml.safe_dump(d))
        return str(p)

    def space(case: str, **student) -> str:
        s = {"layers": [1, 2], "hidden": [64, 128], "heads": [2, 4], "ffn": [128, 256], **student}
        p = work / f"{case}-space.yaml"
        p.write_text(yaml.safe_dump({"student": s}))
        return str(p)

    def setk(path: str, value):
        def edit(d):
            *parents, last = path.split(".")
            for k in parents:
                d = d.setdefault(k, {})
            d[last] = value
        return edit

    (work / "empty.csv").write_text("")
    (work / "binary.yaml").write_bytes(b"\xff\xfe\x00\x81name: x\x00")
    (work / "one-class.csv").write_text("text,label\n" + "".join(f"row {i},pos\n" for i in range(20)))
    (work / "data-root").mkdir(exist_ok=True)
    (work / "not-empty").mkdir(exist_ok=True)
    (work / "not-empty" / "keep.txt").write_text("mine")
    lol = "a: &a [x,x,x,x,x,x,x,x,x]\n" + "".join(
        f"{c}: &{c} [{','.join(['*' + p] * 9)}]\n" for p, c in zip("abcdefgh", "bcdefghi"))
    pwned = work / "pwned"
    url = f"sqlite:///{work / 'home' / 'nas.db'}"
    st = ["--storage", url]
    sub = lambda path: ["submit", path] + st  # noqa: E731 - the service's entry point for specs
    J = str(job_id)
    cases = [
        ("yaml-syntax", sub(spec("syntax", text="name: x\ndataset: {path: a.csv\nbudgets: [\n")), "(spec file)", {}),
        ("yaml-python-tag", sub(spec("tag", text=f"name: !!python/object/apply:os.system ['touch {pwned}']\n")),
         "(spec file)", {}),
        ("yaml-billion-laughs", sub(spec("lol", text=lol + "name: *i\n")), "name", {}),
        ("spec-missing", sub(str(work / "nope.yaml")), "(spec file)", {}),
        ("spec-empty", sub(spec("empty", text="")), "(spec)", {}),
        ("spec-binary", sub(str(work / "binary.yaml")), "(spec file)", {}),
        ("spec-not-mapping", sub(spec("list", text="- name: x\n")), "(spec)", {}),
        ("unknown-key", sub(spec("colour", setk("colour", "red"))), "colour", {}),
        ("unknown-nested-key", sub(spec("trails", setk("budgets.trails", 3))), "budgets.trails", {}),
        ("wrong-type", sub(spec("many", setk("budgets.trials", "many"))), "budgets.trials", {}),
        ("wrong-type-section", sub(spec("latlist", setk("latency", [1, 2]))), "latency", {}),
        ("missing-name", sub(spec("noname", lambda d: d.pop("name"))), "name", {}),
        ("name-too-long", sub(spec("longname", setk("name", "x" * 5000))), "name", {}),
        ("negative-trials", sub(spec("negtrials", setk("budgets.trials", -3))), "budgets.trials", {}),
        ("too-many-trials", sub(spec("bigtrials", setk("budgets.trials", 10**9))), "budgets.trials", {}),
        ("data-fraction-above-1", sub(spec("frac", setk("budgets.data_fraction", 1.5))), "budgets.data_fraction", {}),
        ("dataset-file-missing", sub(spec("nofile", setk("dataset", {"path": str(work / "nope.csv")}))), "dataset.path", {}),
        ("dataset-path-traversal", sub(spec("trav", setk("dataset", {"path": "../../../../etc/passwd"}))),
         "dataset.path", {}),
        ("dataset-outside-data-root", sub(spec("outside", lambda d: None)), "dataset.path",
         {"NAS_DATA_ROOT": str(work / "data-root")}),
        ("dataset-not-a-table", sub(spec("passwd", setk("dataset", {"path": "/etc/passwd"}))), "dataset.path", {}),
        ("dataset-empty-csv", sub(spec("emptycsv", setk("dataset", {"path": str(work / "empty.csv")}))), "dataset.path", {}),
        ("dataset-one-class", sub(spec("oneclass", setk("dataset", {"path": str(work / "one-class.csv")}))),
         "dataset.path", {}),
        ("unknown-named-dataset", sub(spec("imdb", setk("dataset", {"name": "imdb"}))), "dataset", {}),
        ("hidden-not-divisible-by-heads", sub(spec("div", setk("search_space", space("div", hidden=[64, 100], heads=[3])))),
         "search_space.student.hidden", {}),
        ("layers-above-teacher", sub(spec("deep", setk("search_space", space("deep", layers=[2, 8])))),
         "search_space.student.layers", {}),
        ("unknown-search-space", sub(spec("huge", setk("search_space", "huge"))), "search_space", {}),
        ("teacher-dir-missing", sub(spec("noteacher", setk("teacher", str(work / "no-teacher")))), "teacher", {}),
        ("fp16-on-cpu", sub(spec("fp16", setk("latency.dtype", "fp16"))), "latency.dtype", {}),
        ("unknown-runtime", sub(spec("trt", setk("latency.runtime", "tensorrt"))), "latency.runtime", {}),
        ("negative-constraint", sub(spec("negc", setk("constraints.latency_p90_ms", -1))),
         "constraints.latency_p90_ms", {}),
        ("storage-unreachable", ["submit", spec("ok1", lambda d: None), "--storage",
                                 "postgresql+psycopg://nobody@127.0.0.1:1/nas"], "storage", {}),
        ("storage-malformed", ["submit", spec("ok2", lambda d: None), "--storage", "notaurl"], "storage", {}),
        ("storage-dir-missing", ["submit", spec("ok3", lambda d: None), "--storage", f"sqlite:///{work}/no/dir/x.db"],
         "storage", {}),
        ("storage-unknown-dialect", ["jobs", "--storage", "nosuchdb://u@127.0.0.1/x"], "storage", {}),
        ("resume-unknown-job", ["resume", "9999"] + st, "JOB", {}),
        ("cancel-unknown-job", ["cancel", "9999"] + st, "JOB", {}),
        ("status-unknown-job", ["status", "9999"] + st, "JOB", {}),
        ("trials-unknown-job", ["trials", "9999"] + st, "JOB", {}),
        ("pareto-unknown-job", ["pareto", "9999"] + st, "JOB", {}),
        ("job-id-not-a-number", ["resume", "1;DROP TABLE jobs"] + st, "JOB", {}),
        ("export-unknown-job", ["export", "9999", "--trial", "1", "--out", str(work / "x")] + st, "JOB", {}),
        ("export-unknown-trial", ["export", J, "--trial", "999", "--out", str(work / "x")] + st, "--trial", {}),
        ("export-path-traversal", ["export", J, "--trial", "1", "--out", "../../../../tmp/escape"] + st, "--out", {}),
        ("export-outside-export-root", ["export", J, "--trial", "1", "--out", "/tmp/nas-escape"] + st, "--out",
         {"NAS_EXPORT_ROOT": str(work / "exports")}),
        ("export-into-non-empty-dir", ["export", J, "--trial", "1", "--out", str(work / "not-empty")] + st, "--out", {}),
        ("run-export-dir-traversal", ["run", spec("ok4", lambda d: None), "--export-dir", "../../x"] + st,
         "--export-dir", {}),
        ("run-bad-ray-address", ["run", spec("ok5", lambda d: None), "--address", "not-an-address"] + st, "--address", {}),
        ("resume-unreachable-ray", ["resume", J, "--address", "127.0.0.1:1"] + st, "--address", {}),
        ("serve-negative-poll", ["serve", "--poll", "-1"] + st, "--poll", {}),
        ("serve-stale-below-heartbeat", ["serve", "--heartbeat", "10", "--stale-after", "5"] + st, "--stale-after", {}),
        ("dashboard-open-without-password", ["dashboard", "--host", "0.0.0.0"] + st, "--host",
         {"NAS_DASHBOARD_PASSWORD": ""}),
    ]
    return cases[:30] if quick else cases


def bad_inputs(root: pathlib.Path, quick: bool) -> dict:
    from concurrent.futures import ThreadPoolExecutor

    from nas.store import Store

    work = root / "bad"
    home = work / "home"
    env = job_env(home)
    (work / "good.csv").write_text("text,label\n" + "".join(f"a review, number {i},{('neg', 'pos', 'meh')[i % 3]}\n"
                                                             for i in range(30)))
    db = home / "nas.db"
    store = Store(f"sqlite:///{db}")  # a store that already holds a job with a finished trial and a saved model
    job_id = store.create_job("existing", {"objectives": {"metric": "accuracy", "latency": "p50"}}, status="COMPLETE")
    t = store.add_trial(job_id, "student", {"shape": {"layers": 1, "hidden": 64, "heads": 2, "ffn": 128}})
    store.start_trial(t["id"])
    store.add_metric(t["id"], "accuracy", 0.5, "dev", "final")
    (home / "model").mkdir(parents=True, exist_ok=True)
    (home / "model" / "config.json").write_text("{}")
    store.add_artefact(job_id, t["id"], "model", str(home / "model"))
    store.finish_trial(t["id"], "COMPLETE")
    store.dispose()
    cases = bad_input_cases(work, job_id, quick)
    before = _table_digest(db)
    files_before = sorted(str(p) for p in home.rglob("*") if "locks" not in p.parts)

    def one(case):
        cid, argv, field, extra = case
        t0 = time.monotonic()
        try:
            r = subprocess.run(NAS + argv, env={**env, **extra}, capture_output=True, text=True, timeout=120, cwd=work)
            rc, out, err = r.returncode, r.stdout, r.stderr
        except subprocess.TimeoutExpired as exc:
            rc, out, err = "timeout", str(exc.stdout or ""), str(exc.stderr or "")
        lines = [ln for ln in err.splitlines() if ln.strip()]
        one_line = len(lines) == 1 and lines[0].startswith(f"error: {field}: ") and len(lines[0]) > len(field) + 15
        usage = any(f"'{field}'" in ln or f"'{field.upper()}'" in ln for ln in lines) and "Usage:" in err
        problems = []
        if rc != 2:
            problems.append(f"exit {rc}")
        if "Traceback" in out + err:
            problems.append("traceback")
        if not (one_line or usage):
            problems.append(f"message does not start 'error: {field}: ' ({' | '.join(lines[-2:])[:300]})")
        return {"id": cid, "clean": not problems, "problems": problems, "s": round(time.monotonic() - t0, 1),
                "message": (lines[0] if lines else "")[:200]}

    with ThreadPoolExecutor(2) as pool:
        results = list(pool.map(one, cases))
    changed = _table_digest(db) != before
    files_after = sorted(str(p) for p in home.rglob("*") if "locks" not in p.parts)
    new_files = sorted(set(files_after) - set(files_before) - {str(db) + "-wal", str(db) + "-shm"})
    for r in results:
        if changed or new_files:
            r["problems"].append("store or NAS_HOME changed")
            r["clean"] = False
    if (work / "pwned").exists():
        results[[r["id"] for r in results].index("yaml-python-tag")]["clean"] = False
    for r in results:
        log(f"bad input {r['id']:<32} {'clean' if r['clean'] else 'NOT CLEAN ' + '; '.join(r['problems'])}  {r['message'][:110]}")
    res = {"tried": len(results), "clean": sum(r["clean"] for r in results), "store_changed": changed,
           "new_files": new_files[:5], "not_clean": [f"{r['id']}: {'; '.join(r['problems'])}" for r in results if not r["clean"]]}
    return res


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
