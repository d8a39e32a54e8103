"""User data taken as it comes: CSV/TSV/JSONL with quoted newlines, carriage returns inside fields, a byte-order mark,
a legacy encoding, renamed columns and empty rows are read (with a note where something was read differently), or
refused with one line naming the field; a spec or search space that repeats a key is refused naming the key and both
lines; a search-space path outside the allowed places is refused before the file is opened. `nas validate` runs in a
subprocess, as a user runs it; nothing is written on refusal."""

from __future__ import annotations

import csv
import pathlib
import subprocess
import sys

import pytest

from nas.data import load_dataset
from nas.spec.errors import SpecError, load_yaml_text
from nas.spec.job import DatasetRef


def rows(n: int = 15) -> list[tuple[str, str]]:
    return [(f"a great film {i}\nwith a twist", "pos") for i in range(n)] + [(f"dull and long {i}", "neg") for i in range(n)]


def validate(tmp_path: pathlib.Path, spec: str) -> subprocess.CompletedProcess:
    (tmp_path / "job.yaml").write_text(spec)
    return subprocess.run([sys.executable, "-m", "nas.ui.cli", "validate", str(tmp_path / "job.yaml")],
                          capture_output=True, text=True, timeout=120)


def test_quoted_newlines_renamed_columns_and_empty_rows(tmp_path):
    path = tmp_path / "reviews.csv"
    with open(path, "w", newline="") as f:  # csv writes CRLF row ends and quotes the fields with newlines
        w = csv.writer(f)
        w.writerow(["review", "sentiment"])
        w.writerows(rows() + [("", "pos"), ("no label", "")])
    ds = load_dataset(DatasetRef(path=str(path), text_column="review", label_column="sentiment"), "classification")
    assert len(ds.texts) == 30 and ds.texts[0] == "a great film 0\nwith a twist" and ds.label_names == ["neg", "pos"]
    assert any("2 of 32 rows dropped" in n for n in ds.meta["notes"])
    with pytest.raises(SpecError) as err:
        load_dataset(DatasetRef(path=str(path), text_column="body", label_column="sentiment"), "classification")
    assert err.value.field == "dataset.text_column" and "'body'" in err.value.message
    with pytest.raises(SpecError) as err:  # default names the file lacks: the file's field, naming the keys to set
        load_dataset(DatasetRef(path=str(path)), "classification")
    assert err.value.field == "dataset.path" and "dataset.text_column" in err.value.message


def test_carriage_returns_bom_and_legacy_encoding(tmp_path):
    body = "".join(f"good\rfilm {i},pos\nbad film {i},neg\n" for i in range(15))
    (tmp_path / "cr.csv").write_bytes(("text,label\n" + body).encode())
    ds = load_dataset(DatasetRef(path=str(tmp_path / "cr.csv")), "classification")
    assert len(ds.texts) == 30 and ds.texts[0] == "good film 0"
    mac = "".join(f"film {i},pos\rbad {i},neg\r" for i in range(15))  # old Mac line ends: CR only
    (tmp_path / "mac.csv").write_bytes(("text,label\r" + mac).encode())
    assert len(load_dataset(DatasetRef(path=str(tmp_path / "mac.csv")), "classification").texts) == 30
    cafe = "".join(f"caf\u00e9 film {i},pos\nbad {i},neg\n" for i in range(15))
    (tmp_path / "bom.csv").write_bytes("\ufefftext,label\n".encode() + cafe.encode())
    ds = load_dataset(DatasetRef(path=str(tmp_path / "bom.csv")), "classification")
    assert ds.texts[0] == "caf\u00e9 film 0" and not [n for n in ds.meta["notes"] if "UTF-8" in n]
    (tmp_path / "l1.csv").write_bytes(("text,label\n" + cafe).encode("latin-1"))
    ds = load_dataset(DatasetRef(path=str(tmp_path / "l1.csv")), "classification")
    assert ds.texts[0] == "caf\u00e9 film 0"
    assert any("not UTF-8 (line 2)" in n and "Windows-1252" in n for n in ds.meta["notes"])
    (tmp_path / "bad.csv").write_bytes(b"text,label\nfine,pos\n\x81\x8d broken,neg\n")  # bytes cp1252 leaves undefined
    with pytest.raises(SpecError, match="line 3"):
        load_dataset(DatasetRef(path=str(tmp_path / "bad.csv")), "classification")


def test_small_classes_are_warned_about(tmp_path):
    path = tmp_path / "skew.jsonl"
    lines = [f'{{"text": "common {i}", "label": "a"}}' for i in range(400)] + \
            [f'{{"text": "rare {i}", "label": "b"}}' for i in range(3)]
    path.write_text("\n".join(lines) + "\n")
    notes = load_dataset(DatasetRef(path=str(path)), "classification").meta["notes"]
    assert any("'b' has 3 of 403 rows (< 1%)" in n for n in notes)
    assert any("'b' has" in n and "rows in the dev split (< 20)" in n for n in notes)


def test_the_cli_reads_and_warns_or_refuses(tmp_path):
    path = tmp_path / "l1.csv"
    path.write_bytes(("text,label\n" + "".join(f"caf\u00e9 {i},pos\nbad {i},neg\n" for i in range(15))).encode("latin-1"))
    r = validate(tmp_path, f"name: a\ndataset: {path}\nsearch_space: tiny\n")
    assert r.returncode == 0 and "warning: l1.csv is not UTF-8" in r.stderr and "ok: a: 30 rows" in r.stdout


def test_duplicate_keys_are_refused_with_both_lines(tmp_path):
    r = validate(tmp_path, "name: a\ndataset: bbc-news\nbudgets: {trials: 2}\ndataset: rotten-tomatoes\n")
    assert r.returncode == 2 and "dataset: the key 'dataset' appears twice (lines 2 and 4)" in r.stderr
    r = validate(tmp_path, "name: a\ndataset: bbc-news\nlatency:\n  batch: 1\n  threads: 2\n  batch: 4\n")
    assert r.returncode == 2 and "latency.batch: the key 'batch' appears twice (lines 4 and 6)" in r.stderr
    (tmp_path / "space.yaml").write_text("student:\n  layers: [1]\n  hidden: [64]\n  layers: [2]\n  heads: [2]\n"
                                         "  ffn: [128]\n")
    r = validate(tmp_path, f"name: a\ndataset: bbc-news\nsearch_space: {tmp_path / 'space.yaml'}\n")
    assert r.returncode == 2 and "search_space.student.layers: the key 'layers' appears twice (lines 2 and 4)" in r.stderr
    assert load_yaml_text("a: 1\nb: {a: 2}\n") == {"a": 1, "b": {"a": 2}}  # the same key in two mappings is fine


def test_search_space_paths_are_confined(tmp_path, monkeypatch):
    from nas.ui.dashboard.data import validate_spec_text

    r = validate(tmp_path, "name: a\ndataset: bbc-news\nsearch_space: ../../../../etc/passwd\n")
    assert r.returncode == 2 and "search_space: '..' is not allowed" in r.stderr
    monkeypatch.setenv("NAS_DATA_ROOT", str(tmp_path / "data"))
    (tmp_path / "data").mkdir()
    r = validate(tmp_path, "name: a\ndataset: bbc-news\nsearch_space: /etc/passwd\n")  # the env is inherited
    assert r.returncode == 2 and "/etc/passwd is outside NAS_DATA_ROOT" in r.stderr
    monkeypatch.delenv("NAS_DATA_ROOT")
    spec, err = validate_spec_text("name: a\ndataset: bbc-news\nsearch_space: /etc/passwd\n")
    assert spec is None and err.startswith("search_space: a job submitted from the dashboard")
    spec, err = validate_spec_text("name: a\ndataset: bbc-news\nsearch_space: tiny\n")
    assert err is None and spec.search_space == "tiny"


def test_nas_plan_estimates_every_stage_and_writes_nothing(tmp_path):
    """`nas plan` on a tiny spec: a line per stage, a total that is their sum, the per-candidate alternative for a
    supernet schedule; no store, no cache entry."""
    import os

    spec = ("name: p\nteacher: minilm-l6\ndataset: {name: bbc-news, max_rows: 150}\nsearch_space: tiny\n"
            "latency: {device: cpu, batch: 1, seq_len: 32, threads: 1, warmup: 2, min_runs: 5, max_runs: 20}\n"
            "budgets: {trials: 4, max_seq_len: 32, teacher_epochs: 1}\n"
            "search: {strategy: evolution, supernet: {steps: 10}, final: {top_k: 1, epochs: 1}}\n")
    (tmp_path / "job.yaml").write_text(spec)
    env = {**os.environ, "NAS_HOME": str(tmp_path / "home"), "NAS_CACHE": str(tmp_path / "cache")}
    r = subprocess.run([sys.executable, "-m", "nas.ui.cli", "plan", str(tmp_path / "job.yaml")], capture_output=True,
                       text=True, timeout=300, env=env)
    assert r.returncode == 0, r.stderr[-2000:]
    lines = {ln.split()[0]: float(ln.split()[-2]) for ln in r.stdout.splitlines()[1:] if ln.strip().endswith("min")}
    assert {"teacher", "transfer", "search", "per-candidate", "references", "total"} <= set(lines)
    total = lines["teacher"] + lines["transfer"] + lines["search"] + lines["scoring"] + lines["references"]
    assert abs(lines["total"] - total) <= 0.2 and lines["teacher"] > 0 and lines["search"] > 0
    assert not (tmp_path / "home" / "nas.db").exists() and not list((tmp_path / "cache").glob("teachers/*"))

    # `nas run --plan`: the same estimate is stored on the job, and `nas status` shows it beside the measured times
    db = f"sqlite:///{tmp_path / 'home' / 'nas.db'}"
    r = subprocess.run([sys.executable, "-m", "nas.ui.cli", "run", str(tmp_path / "job.yaml"), "--plan", "-q",
                        "--storage", db], capture_output=True, text=True, timeout=600, env=env)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "stage wall times (this run): teacher" in r.stdout, r.stdout[-2000:]
    assert "wall time of each stage beside its estimate:" in r.stdout, r.stdout[-2000:]
    r = subprocess.run([sys.executable, "-m", "nas.ui.cli", "status", "1", "--storage", db], capture_output=True,
                       text=True, timeout=120, env=env)
    rows = {ln.split()[0]: ln.split()[1:] for ln in r.stdout.splitlines() if ln.startswith("  ")}
    assert rows["stage"] == ["estimate", "measured"], r.stdout
    for stage in ("teacher", "search", "scoring", "references", "total"):
        est, measured = float(rows[stage][0]), float(rows[stage][2])  # "12 s 15 s"
        assert est >= (0 if stage == "scoring" else 0.1) and measured >= (0 if stage == "scoring" else 0.1), (stage, r.stdout)
