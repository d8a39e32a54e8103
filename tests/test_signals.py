"""Stopping is as plain as starting: `nas run` in its own process group (as a terminal runs it) gets Ctrl-C (SIGINT to
the whole group, as the terminal sends it) or SIGTERM (to the driver, as a process manager sends it) once its student
trials run. It exits within 20 s with code 130 and a line saying how to resume; the job is INTERRUPTED with no RUNNING
trial; `nas resume` then finishes it."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time

import pytest
from conftest import job_environment, tiny_job_spec


def running_students(db) -> int:
    try:
        with sqlite3.connect(db, timeout=5) as con:
            return con.execute("select count(*) from trials where kind = 'student' and state = 'RUNNING'").fetchone()[0]
    except sqlite3.OperationalError:  # not created yet
        return 0


@pytest.mark.parametrize("how", ["SIGINT", "SIGTERM"])
def test_a_signal_stops_the_job_and_resume_finishes_it(tmp_path, how):
    from nas.store import Store

    db = tmp_path / "nas.db"
    (tmp_path / "job.yaml").write_text(tiny_job_spec(f"stop-{how.lower()}").replace("epochs: 3", "epochs: 30"))
    with job_environment(tmp_path, NAS_STRICT_DEVICES=""):
        cmd = [sys.executable, "-m", "nas.ui.cli", "run", str(tmp_path / "job.yaml"), "--storage", f"sqlite:///{db}", "-q"]
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
        deadline = time.time() + 400
        while running_students(db) == 0:
            assert proc.poll() is None, proc.communicate()
            assert time.time() < deadline, "no student trial started"
            time.sleep(0.5)
        time.sleep(2)
        sent = time.time()
        if how == "SIGINT":
            os.killpg(proc.pid, signal.SIGINT)  # what Ctrl-C in a terminal does
        else:
            proc.send_signal(signal.SIGTERM)
        try:
            out, err = proc.communicate(timeout=60)
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
        took = time.time() - sent
        assert proc.returncode == 130, (proc.returncode, err[-2000:])
        assert took < 20, took
        store = Store(f"sqlite:///{db}")
        job = store.list_jobs()[0]
        assert job["status"] == "INTERRUPTED" and f"nas resume {job['id']}" in err
        assert not [t for t in store.trials(job["id"]) if t["state"] == "RUNNING"]
        r = subprocess.run([sys.executable, "-m", "nas.ui.cli", "resume", str(job["id"]), "--storage", f"sqlite:///{db}",
                            "-q"], capture_output=True, text=True, timeout=900)
        assert r.returncode == 0, r.stderr[-2000:]
        assert store.get_job(job["id"])["status"] == "COMPLETE"
        assert len([t for t in store.trials(job["id"], kind="student") if t["state"] == "COMPLETE"]) == 3
