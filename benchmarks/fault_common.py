"""What the fault scenarios of benchmarks/faults.py share: paths, the job spec, process handling and store look-ups."""

from __future__ import annotations

import contextlib
import os
import pathlib
import re
import signal
import subprocess
import sys
import time

REPO = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
NAS = [sys.executable, "-m", "nas"]
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
    import yaml

    from nas.spec.job import parse_spec
    from nas.store import Store

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
