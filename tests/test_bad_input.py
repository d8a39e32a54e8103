"""Bad input through the real CLI: exit code 2, one line `error: FIELD: ...`, no traceback, nothing in the store.

Every spec here would be a tiny job if validation let it through (a 30-row CSV, 1 trial, 1 step), and every test has a
timeout, so a validation hole shows up as a failure rather than as a long training run.
"""

from __future__ import annotations

import json
import os
import pathlib
import subprocess
import sys

import pytest
import yaml
from conftest import write_csv
from typer.testing import CliRunner

from nas.store import Store
from nas.ui.cli import app

REPO = pathlib.Path(__file__).resolve().parent.parent
NAS_BIN = pathlib.Path(sys.executable).parent / "nas"  # the console script of this venv: .venv/bin/nas
UNREACHABLE = "postgresql+psycopg://nobody@127.0.0.1:1/nas"

pytestmark = pytest.mark.timeout(120)


@pytest.fixture
def work(tmp_path, nas_home) -> pathlib.Path:
    """A tmp dir with a good 30-row, 3-class CSV in it."""
    write_csv(tmp_path / "good.csv", ["text", "label"],
              [[f"a short review, number {i}", ("neg", "pos", "meh")[i % 3]] for i in range(30)])
    return tmp_path


def base_spec(work: pathlib.Path) -> dict:
    return {
        "name": "bad-input",
        "dataset": {"path": str(work / "good.csv")},
        "search_space": "tiny",
        "latency": {"threads": 1, "warmup": 0, "min_runs": 5, "max_runs": 5},
        "budgets": {"trials": 1, "steps": 1, "max_seq_len": 16, "teacher_epochs": 0.01},
    }


def space_file(work: pathlib.Path, **student) -> str:
    s = {"layers": [1, 2], "hidden": [64, 128], "heads": [2, 4], "ffn": [128, 256]}
    s.update(student)
    p = work / "space.yaml"
    p.write_text(yaml.safe_dump({"student": s}))
    return str(p)


def teacher_dir(work: pathlib.Path, config: str | None) -> str:
    d = work / "teacher"
    d.mkdir()
    if config is not None:
        (d / "config.json").write_text(config)
    return str(d)


MINI_BERT = {"model_type": "bert", "num_hidden_layers": 2, "hidden_size": 64, "num_attention_heads": 2,
             "intermediate_size": 128, "max_position_embeddings": 128}


# Each case: (id, how to build the spec file, expected field, optional --storage override).
# The builder gets (work, spec dict) and returns the path of the spec file to run (or edits the dict and returns None).
def set_(path: str, value):
    def edit(work, spec):
        *parents, last = path.split(".")
        d = spec
        for p in parents:
            d = d.setdefault(p, {})
        d[last] = value(work) if callable(value) else value
    return edit


def drop(key: str):
    def edit(work, spec):
        del spec[key]
    return edit


def dataset_file(name: str, content: str, task: str | None = None):
    def edit(work, spec):
        (work / name).write_text(content)
        spec["dataset"] = {"path": str(work / name)}
        if task:
            spec["task"] = task
    return edit


def raw_file(content: str | None):
    def build(work, spec):
        p = work / "spec.yaml"
        if content is not None:
            p.write_text(content)
        return p
    return build


CASES = [
    ("unknown-top-level-key", set_("colour", "red"), "colour", None),
    ("unknown-nested-key", set_("budgets.trails", 3), "budgets.trails", None),
    ("unknown-dataset-key", set_("dataset.rows", 50), "dataset.rows", None),
    ("wrong-type", set_("budgets.trials", "many"), "budgets.trials", None),
    ("wrong-type-section", set_("latency", [1, 2]), "latency", None),
    ("missing-dataset", drop("dataset"), "dataset", None),
    ("missing-name", drop("name"), "name", None),
    ("yaml-syntax-error", raw_file("name: x\ndataset: {path: a.csv\nbudgets: [\n"), "(spec file)", None),
    ("spec-file-missing", raw_file(None), "(spec file)", None),
    ("spec-not-a-mapping", raw_file("- name: x\n- dataset: bbc-news\n"), "(spec)", None),
    ("spec-empty-file", raw_file(""), "(spec)", None),
    ("missing-dataset-file", set_("dataset", lambda w: str(w / "nope.csv")), "dataset.path", None),
    ("empty-csv", dataset_file("empty.csv", ""), "dataset.path", None),
    ("csv-only-header", dataset_file("header.csv", "text,label\n"), "dataset.path", None),
    ("single-class", dataset_file("one.csv", "text,label\n" + "".join(f"row {i},pos\n" for i in range(20))),
     "dataset.path", None),
    ("class-with-two-rows", dataset_file("two.csv", "text,label\n" + "".join(f"row {i},pos\n" for i in range(20))
                                         + "x,neg\ny,neg\n"), "dataset.path", None),
    ("csv-lacks-text-column", dataset_file("notext.csv", "review,label\n" + "".join(f"r{i},{i % 2}\n" for i in range(20))),
     "dataset.path", None),
    ("pair-task-with-classification-csv",
     dataset_file("cls.csv", "text,label\n" + "".join(f"r{i},{i % 2}\n" for i in range(20)), task="pair"),
     "dataset.path", None),
    ("broken-jsonl", dataset_file("bad.jsonl", '{"text": "a", "label": 1}\n{not json\n'), "dataset.path", None),
    ("not-a-data-file", dataset_file("data.txt", "hello\n"), "dataset.path", None),
    ("unknown-named-dataset", set_("dataset", {"name": "imdb"}), "dataset", None),
    ("named-dataset-wrong-task", lambda w, s: s.update(dataset="bbc-news", task="pair"), "task", None),
    ("max-rows-too-small", set_("dataset", {"name": "bbc-news", "max_rows": 3}), "dataset.max_rows", None),
    ("hidden-not-divisible-by-heads", set_("search_space", lambda w: space_file(w, hidden=[64, 100], heads=[3, 8])),
     "search_space.student.hidden", None),
    ("layers-above-teacher", set_("search_space", lambda w: space_file(w, layers=[2, 8])),
     "search_space.student.layers", None),
    ("hidden-above-384", set_("search_space", lambda w: space_file(w, hidden=[128, 512])),
     "search_space.student.hidden", None),
    ("search-space-unknown-key", set_("search_space", lambda w: space_file(w, depth=[1])),
     "search_space.student.depth", None),
    ("unknown-search-space", set_("search_space", "huge"), "search_space", None),
    ("negative-trials", set_("budgets.trials", -3), "budgets.trials", None),
    ("negative-epochs", set_("budgets.epochs", -1.0), "budgets.epochs", None),
    ("data-fraction-above-1", set_("budgets.data_fraction", 1.5), "budgets.data_fraction", None),
    ("teacher-dir-missing", set_("teacher", lambda w: str(w / "no-teacher")), "teacher", None),
    ("teacher-dir-without-config", set_("teacher", lambda w: teacher_dir(w, None)), "teacher", None),
    ("teacher-config-not-json", set_("teacher", lambda w: teacher_dir(w, "{not json")), "teacher", None),
    ("teacher-config-not-an-object", set_("teacher", lambda w: teacher_dir(w, "[1, 2]")), "teacher", None),
    ("teacher-config-lacks-shape", set_("teacher", lambda w: teacher_dir(w, json.dumps({"model_type": "bert"}))),
     "teacher", None),
    ("teacher-without-weights", set_("teacher", lambda w: teacher_dir(w, json.dumps(MINI_BERT))), "teacher", None),
    ("teacher-not-bert", set_("teacher", lambda w: teacher_dir(w, json.dumps({"model_type": "gpt2"}))), "teacher", None),
    ("latency-fp16-on-cpu", set_("latency.dtype", "fp16"), "latency.dtype", None),
    ("latency-int8-without-runtime", set_("latency.dtype", "int8"), "latency", None),
    ("latency-bad-runtime", set_("latency.runtime", "tensorrt"), "latency.runtime", None),
    ("latency-bad-extra-runtime", set_("latency.extra_runtimes", ["onnx", "tvm"]), "latency.extra_runtimes[1]", None),
    ("latency-target-fp16-on-cpu", set_("latency.targets", [{"device": "cpu"}, {"device": "cpu", "dtype": "fp16"}]),
     "latency.targets[1].dtype", None),
    ("latency-target-onnx-on-cuda", set_("latency.targets", [{"device": "cuda", "runtime": "onnx"}]),
     "latency.targets[0].runtime", None),
    ("latency-target-same-name", set_("latency.targets", [{"name": "a"}, {"name": "a", "batch": 8}]),
     "latency.targets[1].name", None),
    ("latency-target-unknown-key", set_("latency.targets", [{"speed": 1}]), "latency.targets[0].speed", None),
    ("latency-target-bad-runtime", set_("latency.targets", [{}, {"runtime": "tvm"}]), "latency.targets[1].runtime", None),
    ("constraint-negative", set_("constraints.latency_p90_ms", -1), "constraints.latency_p90_ms", None),
    ("min-speedup-not-a-speedup", set_("constraints.min_speedup", 0.5), "constraints.min_speedup", None),
    ("augment-too-many", set_("search.final.augment", 500), "search.final.augment", None),
    ("final-seeds-zero", set_("search.final.seeds", 0), "search.final.seeds", None),
    ("final-seeds-without-supernet", set_("search.final.seeds", 3), "search.final.seeds", None),
    ("second-round-without-supernet", set_("search.autodisc.second_round", True), "search.autodisc.second_round", None),
    ("latency-runs", set_("latency", {"min_runs": 50, "max_runs": 10}), "latency", None),
    ("unreachable-storage", None, "storage", UNREACHABLE),
    ("malformed-storage-url", None, "storage", "notaurl"),
    ("storage-dir-missing", None, "storage", "sqlite:///{work}/no/such/dir/x.db"),
    ("unknown-storage-dialect", None, "storage", "nosuchdb://u@127.0.0.1/x"),
]


def build_spec(work: pathlib.Path, edit) -> pathlib.Path:
    spec = base_spec(work)
    path = None
    if edit is not None:
        path = edit(work, spec)
    if path is None:
        path = work / "spec.yaml"
        path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


def assert_store_untouched(url: str) -> None:
    path = pathlib.Path(url.removeprefix("sqlite:///"))
    if path.exists():
        s = Store(url)
        assert all(v == 0 for v in s.count_rows().values()), s.count_rows()
        s.dispose()


def assert_one_error_line(output: str, field: str) -> str:
    lines = [line for line in output.splitlines() if line.strip()]
    assert len(lines) == 1, output
    line = lines[0]
    assert line.startswith(f"error: {field}: "), line
    assert "Traceback" not in output
    assert len(line) > len(f"error: {field}: ") + 5  # says what was expected / found
    return line


runner = CliRunner()


@pytest.mark.parametrize("case_id, edit, field, storage", CASES, ids=[c[0] for c in CASES])
def test_bad_input_via_cli(work, nas_home, case_id, edit, field, storage):
    spec_path = build_spec(work, edit)
    db_url = f"sqlite:///{work / 'x.db'}"
    url = storage.format(work=work) if storage else db_url
    ray_before = sys.modules.get("ray") is not None and sys.modules["ray"].is_initialized()
    result = runner.invoke(app, ["run", str(spec_path), "--storage", url, "--quiet"])
    assert result.exit_code == 2, (result.exit_code, result.output, result.exception)
    assert isinstance(result.exception, SystemExit), result.exception
    assert result.stdout == ""  # the error goes to stderr, nothing else is printed
    line = assert_one_error_line(result.output, field)
    if storage == UNREACHABLE:
        assert "127.0.0.1:1" in line
    assert_store_untouched(db_url)
    assert not (nas_home / "nas.db").exists()
    assert not (nas_home / "artefacts").exists() and not (nas_home / "ray_results").exists()
    if not ray_before:  # failed before Ray was started
        assert sys.modules.get("ray") is None or not sys.modules["ray"].is_initialized()


def test_bad_storage_in_the_spec_itself(work, nas_home):
    """No --storage: the spec's own `storage:` is used, and it is unreachable."""
    spec = base_spec(work)
    spec["storage"] = UNREACHABLE
    p = work / "spec.yaml"
    p.write_text(yaml.safe_dump(spec))
    result = runner.invoke(app, ["run", str(p), "--quiet"])
    assert result.exit_code == 2, result.output
    assert_one_error_line(result.output, "storage")
    assert not (nas_home / "nas.db").exists()


def test_validate_command_reports_the_same_error(work):
    spec = base_spec(work)
    spec["budgets"]["data_fraction"] = 2
    p = work / "spec.yaml"
    p.write_text(yaml.safe_dump(spec))
    result = runner.invoke(app, ["validate", str(p)])
    assert result.exit_code == 2
    assert_one_error_line(result.output, "budgets.data_fraction")


def test_validate_accepts_the_good_base_spec(work):
    """The base spec used above is itself valid: each case fails because of its one change."""
    p = work / "spec.yaml"
    p.write_text(yaml.safe_dump(base_spec(work)))
    result = runner.invoke(app, ["validate", str(p)])
    assert result.exit_code == 0, result.output
    assert "ok: bad-input: 30 rows, 3 classes" in result.output


SUBPROCESS_CASES = [
    ("unknown-nested-key", set_("budgets.trails", 3), "budgets.trails", None),
    ("unreachable-storage", None, "storage", UNREACHABLE),
]


def test_bad_input_via_the_real_console_command(tmp_path, nas_home):
    """The installed `nas` command: real exit codes, stderr only, no traceback. The cases run side by side."""
    env = {**os.environ, "NAS_HOME": str(nas_home), "PYTHONWARNINGS": "ignore"}
    procs = []
    for case_id, edit, field, storage in SUBPROCESS_CASES:
        work = tmp_path / case_id
        work.mkdir()
        write_csv(work / "good.csv", ["text", "label"], [[f"text {i}", "ab"[i % 2]] for i in range(30)])
        spec_path = build_spec(work, edit)
        db_url = f"sqlite:///{work / 'x.db'}"
        p = subprocess.Popen([str(NAS_BIN), "run", str(spec_path), "--storage", storage or db_url, "--quiet"],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=work)
        procs.append((case_id, field, db_url, p))
    for case_id, field, db_url, p in procs:
        out, err = p.communicate(timeout=100)
        assert p.returncode == 2, (case_id, p.returncode, out, err)
        assert out == "", (case_id, out)
        assert "Traceback" not in err
        assert_one_error_line(err, field)
        assert_store_untouched(db_url)
