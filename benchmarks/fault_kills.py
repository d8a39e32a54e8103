"""Fault scenarios 1 and 2: kill -9 of the driver (`nas serve` / `nas resume`) and a Ray worker node killed mid-trial."""

from __future__ import annotations

import contextlib
import os
import pathlib
import signal
import subprocess
import tempfile
import time

from fault_common import (
    NAS,
    RAY,
    SPEC,
    Processes,
    by_state,
    cluster_cpus,
    group_members,
    job_env,
    log,
    process_alive,
    students,
    submit,
    tail,
    wait_for,
)


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
        done = {t["id"]: _signature(t) for t in by_state(students(store, job_id), "COMPLETE")}
        running_at_kill = len(by_state(students(store, job_id), "RUNNING"))
        os.kill(p.pid, signal.SIGKILL)  # the process only: its job child must die with it
        t_kill, kill_at = time.monotonic(), utcnow()
        p.wait(10)
        orphan = False
        with contextlib.suppress(TimeoutError):
            wait_for(lambda: not process_alive(f"-m nas resume {job_id} --storage {url}"), 15, "the job child to die")
        orphan = process_alive(f"-m nas resume {job_id} --storage {url}")
        log(f"driver kill ({tag}): killed with {len(done)} complete, {running_at_kill} running; orphaned job child: {orphan}")
        zombies_after_reap = None
        if via_serve:
            procs.start(NAS + ["serve", "--storage", url] + serve_opts, env, home / "second.log")
            wait_for(lambda: store.get_job(job_id)["status"] != "RUNNING" or store.get_job(job_id)["claims"] > 1, 60,
                     "the reaper")
            if store.get_job(job_id)["claims"] == 1:  # reaped, not yet claimed again
                zombies_after_reap = len(by_state(students(store, job_id), "RUNNING"))
        else:
            procs.start(NAS + ["resume", str(job_id), "--storage", url, "--quiet"], env, home / "second.log")

        def working_again():  # a trial started (or finished) after the kill: the zombie left RUNNING does not count
            return any((t["started_at"] or kill_at) > kill_at for t in students(store, job_id))

        wait_for(working_again, 600, "a trial to run again")
        resume_s = time.monotonic() - t_kill
        wait_for(lambda: store.get_job(job_id)["status"] in ("COMPLETE", "FAILED", "CANCELLED"), 900, "the job to end")
        total_s = time.monotonic() - t_kill
        job = store.get_job(job_id)
        after = {t["id"]: t for t in students(store, job_id)}
        lost = sum(1 for tid, before in done.items()
                   if after[tid]["state"] != "COMPLETE" or not _kept(before, _signature(after[tid])))
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


def _signature(trial: dict) -> tuple:
    metrics = frozenset((m["name"], m["split"], m["source"], m["value"]) for m in trial["metrics"])
    return trial["attempts"], trial["finished_at"], metrics, len(trial["latency"])


def _kept(before: tuple, after: tuple) -> bool:
    """The trial was not run again: same attempts, finish time and latencies, and every metric it had at the kill is
    still there unchanged (the scoring stage adds test scores to front points when the job ends: not a re-run)."""
    return before[0] == after[0] and before[1] == after[1] and before[3] == after[3] and before[2] <= after[2]


# -- 2. a Ray worker node killed mid-trial --------------------------------------------------------------------------------
def worker_kill(root: pathlib.Path, steps: int) -> dict:
    """A head (1 CPU) and a second node (`ray start --address`, 1 CPU) on this machine; two trials run at once, one on
    each node; the second node is killed (its whole process group) mid-trial. The trial must run again elsewhere."""
    from nas.store import Store
    from nas.store.local_postgres import free_port

    home = root / "worker"
    url = f"sqlite:///{home / 'nas.db'}"
    env = job_env(home)
    temp = pathlib.Path(tempfile.mkdtemp(prefix="nasray", dir="/tmp"))  # short: Ray's socket paths have a length limit
    port = free_port()
    procs = Processes()
    store = Store(url)
    common = ["--num-cpus", "1", "--node-ip-address", "127.0.0.1", "--object-store-memory", str(200 * 2**20),
              "--block", "--disable-usage-stats"]
    try:
        procs.start([RAY, "start", "--head", "--port", str(port), "--include-dashboard=false", "--temp-dir", str(temp),
                     "--dashboard-agent-listen-port", str(free_port()), "--ray-client-server-port", str(free_port())]
                    + common, env, home / "head.log")
        wait_for(lambda: cluster_cpus(port, env) >= 1, 120, "the head node to come up", every=2)
        # the second node gets its own free ports too: a default port taken by another Ray on this machine kills it
        node = procs.start([RAY, "start", "--address", f"127.0.0.1:{port}", "--dashboard-agent-listen-port",
                            str(free_port()), "--metrics-export-port", str(free_port())] + common, env, home / "node.log")
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

