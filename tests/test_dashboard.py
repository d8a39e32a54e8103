"""The dashboard against a store seeded by a real small job: every page under AppTest, submit validates and enqueues,
export returns a loadable model, the read-only store never blocks a writer, and a real headless Chromium renders the
job page of a running `nas dashboard` with its Pareto plot."""

from __future__ import annotations

import io
import os
import pathlib
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
import zipfile

import pytest
from browser import Browser, chromium
from conftest import real_job, tiny_job_spec
from streamlit.testing.v1 import AppTest

ROOT = pathlib.Path(__file__).resolve().parent.parent
APP = str(ROOT / "dashboard" / "app.py")
SPEC = tiny_job_spec("dash-e2e")


@pytest.fixture(scope="module")
def seeded(tmp_path_factory):
    home = tmp_path_factory.mktemp("dash")
    with real_job(home, SPEC, NAS_STORAGE=f"sqlite:///{home / 'nas.db'}") as j:  # the dashboard reads $NAS_STORAGE
        yield j


def app(page: str | None = None) -> AppTest:
    at = AppTest.from_file(APP, default_timeout=120).run()
    assert not at.exception, at.exception
    if page:
        at.switch_page(f"views/{page}.py").run()
        assert not at.exception, at.exception
    return at


def test_jobs_page_lists_the_job(seeded):
    at = app()
    assert any(t.value == "Jobs" for t in at.title)
    df = at.dataframe[0].value
    assert seeded["job_id"] in df["id"].tolist()
    row = df[df["id"] == seeded["job_id"]].iloc[0]
    assert row["status"] == "COMPLETE" and row["done"] >= 3 and row["budget"] == 3


def test_job_page_has_front_table_and_figures(seeded):
    at = app("job")
    assert any(t.value == "Job" for t in at.title)
    assert {m.label for m in at.metric} >= {"status", "front points", "hypervolume"}
    charts = at.get("plotly_chart")
    assert len(charts) >= 2  # the front and the hypervolume over time (parallel coordinates with >= 2 students)
    assert at.dataframe and len(at.dataframe[0].value) >= 4
    assert any(b.label == "Download CSV" for b in at.get("download_button"))
    stages = next(d.value for d in at.dataframe if "measured (min)" in d.value)  # each stage's wall time, as measured
    assert {"teacher", "search", "references", "total"} <= set(stages["stage"]) and stages["measured (min)"].notna().all()
    at.selectbox(key="x_axis").select("p90_ms").run()
    assert not at.exception


def test_front_reads_at_a_glance(seeded):
    """Speedup (log) and retention (% of the teacher) by default; the hypervolume as a share with the raw value in its
    help; the what-to-deploy panel names the best student within a budget and its export command."""
    import json

    at = app("job")
    fig = json.loads(at.get("plotly_chart")[0].proto.spec)
    assert fig["layout"]["xaxis"]["type"] == "log" and fig["layout"]["yaxis"]["tickformat"] == ".0%"
    assert "speedup" in fig["layout"]["xaxis"]["title"]["text"]
    hv = next(m for m in at.metric if m.label == "hypervolume")
    assert 0 <= float(hv.value) <= 1 and "Raw:" in hv.help
    at.number_input(key="deploy_ms").set_value(1000.0).run()
    ok = [s.value for s in at.success]
    assert ok and "keeps" in ok[0] and "% of the teacher's" in ok[0]
    assert any("nas export" in c.value for c in at.code)
    at.radio(key="deploy_mode").set_value("speedup over the teacher (x)").run()
    at.number_input(key="deploy_x").set_value(1e6).run()
    assert any("No completed student meets that budget" in i.value for i in at.info)


def test_compare_page_plots_fronts(seeded):
    at = app("compare")
    assert not at.exception and len(at.get("plotly_chart")) >= 1


def test_submit_validates_inline_and_enqueues(seeded):
    at = app("submit")
    before = len(seeded["store"].list_jobs())
    at.text_area(key="spec_text").input("name: bad\ndataset: bbc-news\nbudgets: {trials: 0}\n").run()
    at.button(key="validate").click().run()
    assert at.error and at.error[0].value.startswith("budgets.trials")
    assert len(seeded["store"].list_jobs()) == before
    good = "name: queued-one\ndataset: {name: bbc-news, max_rows: 100}\nsearch_space: tiny\n"
    at.text_area(key="spec_text").input(good).run()
    at.button(key="estimate").click().run()  # `nas plan` on this machine, shown before anything is written
    assert not at.error, [e.value for e in at.error]
    plan = {r["stage"]: r["minutes"] for d in at.dataframe if "minutes" in d.value for r in d.value.to_dict("records")}
    assert {"teacher", "search", "references", "total"} <= set(plan) and plan["total"] > 0, plan
    assert len(seeded["store"].list_jobs()) == before
    at.button(key="enqueue").click().run()
    assert not at.error, [e.value for e in at.error]
    jobs = seeded["store"].list_jobs()
    assert len(jobs) == before + 1 and jobs[-1]["status"] == "QUEUED" and jobs[-1]["name"] == "queued-one"
    assert any(f"nas resume {jobs[-1]['id']}" in s.value for s in at.success)
    stored = seeded["store"].get_job(jobs[-1]["id"])["plan"]  # the estimate goes with the job, beside its measured times
    assert round(stored["stages"]["total"] / 60, 2) == plan["total"]


def test_export_page_builds_a_loadable_model(seeded, tmp_path):
    at = app("export")
    at.selectbox(key="export_pick").select(seeded["job_id"]).run()
    at.button(key="build_zip").click().run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    from nas.ui.dashboard import data as dd

    number = at.selectbox(key="export_trial").value
    data = dd.export_zip(seeded["store"], seeded["job_id"], number)
    zipfile.ZipFile(io.BytesIO(data)).extractall(tmp_path)
    model_dir = next(tmp_path.glob("*/model"))
    from transformers import AutoModelForSequenceClassification

    assert AutoModelForSequenceClassification.from_pretrained(model_dir).config.num_labels == 5
    at.radio(key="export_mode").set_value("a latency constraint").run()
    at.number_input(key="export_limit").set_value(1000.0).run()
    assert not at.exception and any("Best with p90" in m.value for m in at.markdown)


def test_read_only_dashboard_never_blocks_a_writer(seeded):
    """A job keeps writing while the dashboard's read-only store polls the same SQLite file."""
    from nas.store import Store
    from nas.ui.dashboard.data import jobs_table, trial_frame

    reader = Store(seeded["url"], migrate=False, read_only=True)
    writer_code = (
        "import sys, time\nfrom nas.store import Store\n"
        f"s = Store({seeded['url']!r}, migrate=False)\n"
        "job = s.create_job('writer', {})\nt0 = time.time()\n"
        "for i in range(300):\n"
        "    t = s.add_trial(job, 'student', {'i': i})['id']\n"
        "    s.add_metric(t, 'accuracy', i / 300, 'dev', 'proxy')\n"
        "    s.finish_trial(t, 'COMPLETE')\n"
        "print(job, time.time() - t0)\n")
    proc = subprocess.Popen([sys.executable, "-c", writer_code], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            cwd=ROOT)
    polls = 0
    while proc.poll() is None:
        jobs_table(reader)
        trial_frame(reader.trials(seeded["job_id"]))
        polls += 1
    out, err = proc.communicate()
    assert proc.returncode == 0, err
    job = int(out.split()[0])
    assert polls > 3 and len(reader.trials(job, state="COMPLETE")) == 300
    with pytest.raises(Exception):
        reader.create_job("nope", {})  # read-only for real
    reader.dispose()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_dashboard_refuses_a_public_bind_without_password(seeded):
    env = {**os.environ, "NAS_DASHBOARD_PASSWORD": ""}
    r = subprocess.run([sys.executable, "-m", "nas", "dashboard", "--host", "0.0.0.0", "--storage", seeded["url"]],
                       capture_output=True, text=True, env=env, timeout=60)
    assert r.returncode == 2 and "password" in r.stderr


@pytest.mark.skipif(chromium() is None, reason="no chromium on this machine (.ci/run installs Debian's chromium)")
def test_headless_chromium_renders_the_pareto_plot(seeded, tmp_path):
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "nas", "dashboard", "--port", str(port), "--storage", seeded["url"]],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, cwd=ROOT)
    browser = None
    try:
        for _ in range(120):
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/_stcore/health", timeout=2)
                break
            except OSError:
                time.sleep(0.5)
        browser = Browser()
        url = f"http://127.0.0.1:{port}/job?job={seeded['job_id']}"
        browser.open(url)  # a cold app's first render can be blank: load once, then again
        browser.wait_for("document.querySelectorAll('.js-plotly-plot').length > 0", 90)
        browser.open(url)
        assert browser.wait_for("document.querySelectorAll('.js-plotly-plot .scatterlayer .point').length > 0", 90), \
            browser.evaluate("document.body.innerText.slice(0, 2000)")
        text = browser.evaluate("document.body.innerText")
        assert "front points" in text and "teacher" in text
        assert "What to deploy" in text and "keeps" in text and "% of the teacher's" in text  # the panel, rendered
        assert browser.evaluate("document.querySelector('.js-plotly-plot').layout.xaxis.type") == "log"
        time.sleep(1.0)  # let the plot finish drawing
        shot = browser.screenshot(tmp_path / "job.png")
        assert shot.stat().st_size > 20_000  # a rendered page, not a blank one
        keep = ROOT / ".nas" / "screenshots"
        keep.mkdir(parents=True, exist_ok=True)
        shutil.copy(shot, keep / "job_page.png")
    finally:
        if browser:
            browser.close()
        proc.terminate()
        proc.wait(30)


def test_hypervolume_over_time_matches_fronts_recomputed_from_scratch():
    import numpy as np
    import pandas as pd

    from nas.search.pareto import hypervolume, pareto_front
    from nas.ui.dashboard.data import hv_over_time

    rng = np.random.default_rng(0)
    n = 200
    df = pd.DataFrame({"kind": "student", "p50_ms": rng.random(n) * 10, "metric": rng.random(n),
                       "finished_at": pd.date_range("2026-01-01", periods=n, freq="s")})
    hv = hv_over_time(df, 10.0, points=25)
    pts = df[["metric", "p50_ms"]].to_numpy().tolist()
    for k, value in zip(hv["trials"], hv["hypervolume"]):
        front = [pts[i] for i in pareto_front(pts[:k], [True, False])]
        assert value == pytest.approx(hypervolume(front, [0.0, 10.0], [True, False]))
    assert hv["hypervolume"].is_monotonic_increasing and hv["trials"].iloc[-1] == n
