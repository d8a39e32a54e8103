"""A real tiny job end to end: MiniLM teacher on a BBC News slice, students as Ray Tune trials on local Ray, every row in
SQLite, a NaN trial recorded as FAILED, the front, an export reloaded in a fresh process, and resume after a lost trial."""

from __future__ import annotations

import json
import os
import pathlib
import subprocess
import sys

import pytest
import yaml
from conftest import real_job, tiny_job_spec

ROOT = pathlib.Path(__file__).resolve().parent.parent
SPEC = tiny_job_spec("tiny-e2e")


@pytest.fixture(scope="module")
def job(tmp_path_factory):
    home = tmp_path_factory.mktemp("home")
    spec_file = home / "spec.yaml"
    url = f"sqlite:///{home / 'nas.db'}"
    spec_file.write_text(SPEC + f"storage: {url}\n")
    # trial numbers: 1 = teacher, 2..4 = students; #3 gets a NaN loss
    with real_job(home, SPEC, NAS_INJECT_NAN_TRIALS="3") as j:
        yield {**j, "spec_file": spec_file}


def test_every_trial_is_in_the_store(job):
    store, job_id = job["store"], job["job_id"]
    assert store.get_job(job_id)["status"] == "COMPLETE"
    trials = store.trials(job_id)
    assert [t["kind"] for t in trials] == ["teacher", "student", "student", "student", "reference", "reference"]
    teacher = trials[0]
    names = {(m["name"], m["split"], m["source"]) for m in teacher["metrics"]}
    assert {("accuracy", "dev", "final"), ("accuracy", "test", "final")} <= names
    assert teacher["latency"] and teacher["latency"][0]["p50_ms"] > 0
    for t in trials[1:4]:
        if t["number"] == 3:
            continue
        assert t["state"] == "COMPLETE", t["error"]
        lat = t["latency"][-1]
        assert lat["n"] >= 5 and lat["p90_ms"] >= lat["p50_ms"] > 0
        assert lat["fingerprint"]["cpu"] and lat["fingerprint"]["torch"]
        assert any(m["name"] == "accuracy" and m["split"] == "dev" for m in t["metrics"])
        assert t["artefacts"] and pathlib.Path(t["artefacts"][0]["path"]).is_dir()


def test_a_nan_trial_is_failed_with_its_reason_and_the_job_goes_on(job):
    t = job["store"].get_trial_by_number(job["job_id"], 3)
    assert t["state"] == "FAILED"
    assert "FloatingPointError" in t["error"] and "nan" in t["error"].lower()


def test_pareto_cli_and_export_reload_in_a_fresh_process(job, tmp_path):
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    out = subprocess.run([sys.executable, "-m", "nas", "pareto", str(job["job_id"]), "--storage", job["url"], "--json"],
                         capture_output=True, text=True, env=env, cwd=ROOT)
    assert out.returncode == 0, out.stderr
    front = json.loads(out.stdout)
    assert front["teacher"]["kind"] == "teacher" and front["front"]
    best = max(front["front"], key=lambda r: r["metric"])
    dest = tmp_path / "export"
    out = subprocess.run([sys.executable, "-m", "nas", "export", str(job["job_id"]), "--trial", str(best["trial"]),
                          "--out", str(dest), "--storage", job["url"]], capture_output=True, text=True, env=env, cwd=ROOT)
    assert out.returncode == 0, out.stderr
    assert (dest / "config.yaml").is_file() and (dest / "model" / "config.json").is_file()
    assert (dest / "onnx" / "model.onnx").is_file() and (dest / "onnx" / "tokenizer.json").is_file()
    card = yaml.safe_load((dest / "config.yaml").read_text())
    assert set(card["formats"]) == {"hf", "onnx", "int8"} and card["formats"]["int8"] < card["formats"]["onnx"] / 2
    check = subprocess.run([sys.executable, "-m", "nas", "check-export", str(dest)], capture_output=True, text=True,
                           env=env, cwd=ROOT)
    assert check.returncode == 0, check.stderr
    res = json.loads(check.stdout.strip().splitlines()[-1])
    assert set(res["formats"]) == {"hf", "onnx", "int8"}  # each reloaded in a fresh process, from raw text
    assert all(r["abs_diff"] <= 0.005 for r in res["formats"].values()), res
    texts = tmp_path / "texts.txt"
    texts.write_text("Shares fell sharply as the bank cut its profit forecast\nThe striker scored twice\n")
    pred = subprocess.run([sys.executable, "-m", "nas", "predict", str(dest), "Election campaign enters final week",
                           "--file", str(texts), "--format", "int8"], capture_output=True, text=True, env=env, cwd=ROOT)
    assert pred.returncode == 0, pred.stderr
    rows = [json.loads(line) for line in pred.stdout.strip().splitlines()]
    assert len(rows) == 3 and all(r["label"] in card["labels"] and abs(sum(r["probs"]) - 1) < 1e-4 for r in rows)
    bad = subprocess.run([sys.executable, "-m", "nas", "predict", str(dest), "x", "--format", "sklearn"],
                         capture_output=True, text=True, env=env, cwd=ROOT)
    assert bad.returncode == 2 and "--format" in bad.stderr
    # exporting into a non-empty directory is a user error, not an overwrite
    again = subprocess.run([sys.executable, "-m", "nas", "export", str(job["job_id"]), "--trial", str(best["trial"]),
                            "--out", str(dest), "--storage", job["url"]], capture_output=True, text=True, env=env, cwd=ROOT)
    assert again.returncode == 2 and "--out" in again.stderr


def test_resume_reruns_a_trial_left_running(job):
    from nas.pipeline import resume_job

    store, job_id = job["store"], job["job_id"]
    t = store.get_trial_by_number(job_id, 2)
    store.start_trial(t["id"])  # as if its worker had been killed mid-trial: RUNNING with no result
    os.environ["NAS_INJECT_NAN_TRIALS"] = ""
    resume_job(store, job_id, progress=False)
    t2 = store.get_trial_by_number(job_id, 2)
    assert t2["state"] == "COMPLETE" and t2["attempts"] == t["attempts"] + 2
    assert len(store.trials(job_id, kind="student")) == 3  # nothing new was sampled: the budget was already spent
    assert store.get_job(job_id)["status"] == "COMPLETE"


def test_references_are_scored_timed_end_to_end_and_shown(job, tmp_path):
    store, job_id = job["store"], job["job_id"]
    refs = {t["config"]["name"]: t for t in store.trials(job_id, kind="reference", state="COMPLETE")}
    assert set(refs) == {"teacher", "tfidf-linear"}
    for t in refs.values():
        lat = t["latency"][-1]
        assert lat["runtime"] == "text-e2e" and lat["p50_ms"] > 0 and lat["seq_len"] == 32
        assert {(m["name"], m["split"]) for m in t["metrics"]} >= {("accuracy", "dev"), ("accuracy", "test")}
    tok_ms = [m["value"] for m in refs["teacher"]["metrics"] if m["name"] == "tokenizer_p50_ms"][0]
    assert tok_ms > 0  # what a student adds end to end
    out = subprocess.run([sys.executable, "-m", "nas", "pareto", str(job_id), "--storage", job["url"], "--json"],
                         capture_output=True, text=True, env={**os.environ, "NAS_HOME": str(job["home"])})
    assert out.returncode == 0, out.stderr
    front = json.loads(out.stdout)
    names = {r["name"]: r for r in front["references"]}
    assert set(names) == {"teacher", "tfidf-linear"}
    assert all(0 <= r["dominated_front_points"] <= r["front_points"] == len(front["front"]) for r in names.values())
    text = subprocess.run([sys.executable, "-m", "nas", "pareto", str(job_id), "--storage", job["url"]],
                          capture_output=True, text=True, env={**os.environ, "NAS_HOME": str(job["home"])}).stdout
    assert "tfidf-linear" in text and "end to end" in text
    # the scikit-learn reference exports as a joblib bundle that predicts
    number = refs["tfidf-linear"]["number"]
    exp = subprocess.run([sys.executable, "-m", "nas", "export", str(job_id), "--trial", str(number), "--out",
                          str(tmp_path / "tfidf"), "--storage", job["url"]], capture_output=True, text=True,
                         env={**os.environ, "NAS_HOME": str(job["home"])})
    assert exp.returncode == 0, exp.stderr
    import joblib

    bundle = joblib.load(tmp_path / "tfidf" / "model.joblib")
    assert len(bundle["model"].predict(["shares fell sharply on the stock market"])) == 1 and bundle["sklearn"]


def test_predict_and_check_export_refuse_what_is_not_an_export(tmp_path):
    from typer.testing import CliRunner

    from nas.ui.cli import app

    runner = CliRunner()
    for args in (["predict", str(tmp_path), "some text"], ["check-export", str(tmp_path)]):
        res = runner.invoke(app, args)
        assert res.exit_code == 2 and "OUT_DIR" in res.output and "no config.yaml" in res.output, res.output
    (tmp_path / "config.yaml").write_text("spec: {}\n")
    res = runner.invoke(app, ["predict", str(tmp_path)])
    assert res.exit_code == 2 and "TEXTS" in res.output
    res = runner.invoke(app, ["predict", str(tmp_path), "--file", str(tmp_path / "missing.txt")])
    assert res.exit_code == 2 and "--file" in res.output


def test_export_dir_of_an_earlier_run_gets_a_fresh_directory(job, tmp_path, capsys):
    """`nas run --export-dir D` twice on fresh stores names the same job-1-trial-N: the second export goes beside the
    first (…-2) instead of failing with a traceback, and both load."""
    from transformers import AutoModelForSequenceClassification

    from nas.ui.cli import _export_best

    _export_best(job["store"], job["job_id"], str(tmp_path))
    _export_best(job["store"], job["job_id"], str(tmp_path))
    dirs = sorted(p.name for p in tmp_path.iterdir())
    assert len(dirs) == 2 and dirs[1] == dirs[0] + "-2", dirs
    for d in dirs:
        AutoModelForSequenceClassification.from_pretrained(tmp_path / d / "model")
    assert f"{dirs[1]}" in capsys.readouterr().out
