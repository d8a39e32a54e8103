"""Job specs and search spaces: the examples parse, defaults are what the docs say, every error names its field."""

from __future__ import annotations

import json
import pathlib

import pytest
import yaml

from nas.spec.errors import SpecError
from nas.spec.job import NAMED_DATASETS, DatasetRef, JobSpec, load_spec, parse_spec
from nas.spec.space import SEARCH_SPACE_DIR, load_search_space

REPO = pathlib.Path(__file__).resolve().parent.parent
EXAMPLES = sorted((REPO / "examples").glob("*.yaml"))
SPACES = sorted(SEARCH_SPACE_DIR.glob("*.yaml"))


@pytest.fixture(scope="module")
def tcfg() -> dict:
    from nas.teachers.load import teacher_config

    return teacher_config("minilm-l6")


def write_yaml(path: pathlib.Path, data) -> pathlib.Path:
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


# -- examples -----------------------------------------------------------------------------------------------------------
def test_there_are_examples_and_search_spaces():
    assert len(EXAMPLES) >= 4
    assert {p.stem for p in SPACES} >= {"bert_small", "tiny"}


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_example_parses(path, tcfg):
    spec = load_spec(path)
    raw = yaml.safe_load(path.read_text())
    assert isinstance(spec, JobSpec)
    assert spec.name == raw["name"]
    # the dataset reference resolves to exactly one of name / path
    assert (spec.dataset.name is None) != (spec.dataset.path is None)
    if spec.dataset.name is not None:
        assert spec.dataset.name in NAMED_DATASETS
    # the example's search space exists and fits the teacher
    space = load_search_space(spec.search_space, tcfg)
    assert space.student.layers
    # values given in the file survive parsing
    for key, value in (raw.get("budgets") or {}).items():
        assert getattr(spec.budgets, key) == value, key
    for key, value in (raw.get("latency") or {}).items():
        assert getattr(spec.latency, key) == value, key


def test_bbc_quick_example_values():
    spec = load_spec(REPO / "examples" / "bbc_quick.yaml")
    assert spec.dataset == DatasetRef(name="bbc-news", max_rows=400)
    assert spec.search_space == "tiny"
    assert spec.budgets.trials == 8 and spec.budgets.max_seq_len == 64 and spec.budgets.epochs == 10.0
    assert spec.latency.device == "cpu" and spec.latency.threads == 2


def test_pairs_example_is_a_pair_task():
    spec = load_spec(REPO / "examples" / "bbc_pairs.yaml")
    assert spec.task == "pair"
    assert spec.dataset.name == "bbc-news-pairs" and spec.dataset.max_rows == 1200


# -- defaults -----------------------------------------------------------------------------------------------------------
def test_defaults():
    spec = parse_spec({"name": "x", "dataset": "bbc-news"})
    assert spec.teacher == "minilm-l6"
    assert spec.task == "classification"
    assert spec.search_space == "bert_small"
    assert spec.storage is None
    assert spec.seed == 0
    assert spec.objectives.metric == "accuracy" and spec.objectives.latency == "p50" and spec.objectives.size is False
    lat = spec.latency
    assert (lat.device, lat.batch, lat.seq_len, lat.dtype, lat.threads) == ("auto", 1, 128, "fp32", 2)
    assert (lat.warmup, lat.min_runs, lat.max_runs, lat.rel_ci) == (10, 20, 200, 0.02)
    b = spec.budgets
    assert (b.trials, b.epochs, b.steps, b.data_fraction, b.max_seq_len, b.teacher_epochs, b.max_concurrent) == (
        8, 2.0, None, 1.0, 128, 3.0, 1)
    assert spec.search.strategy == "random"


def test_spec_round_trips_through_its_json_dump():
    spec = parse_spec({"name": "x", "dataset": {"name": "bbc-news", "max_rows": 50}, "budgets": {"trials": 3},
                       "latency": {"threads": 1}})
    again = parse_spec(spec.model_dump(mode="json"))
    assert again == spec


def test_partial_nested_section_keeps_other_defaults():
    spec = parse_spec({"name": "x", "dataset": "bbc-news", "budgets": {"trials": 3}, "latency": {"batch": 4}})
    assert spec.budgets.trials == 3 and spec.budgets.epochs == 2.0
    assert spec.latency.batch == 4 and spec.latency.seq_len == 128


# -- dataset shorthand ---------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", NAMED_DATASETS)
def test_dataset_shorthand_named(name):
    short = parse_spec({"name": "x", "dataset": name})
    long = parse_spec({"name": "x", "dataset": {"name": name}})
    assert short.dataset == long.dataset == DatasetRef(name=name)
    assert short.dataset.path is None


def test_dataset_shorthand_path(tmp_path):
    p = str(tmp_path / "data.csv")
    short = parse_spec({"name": "x", "dataset": p})
    assert short.dataset.path == p and short.dataset.name is None
    assert short.dataset == parse_spec({"name": "x", "dataset": {"path": p}}).dataset


def test_dataset_unknown_string_is_taken_as_a_path():
    spec = parse_spec({"name": "x", "dataset": "bbc-newz"})
    assert spec.dataset.path == "bbc-newz" and spec.dataset.name is None


@pytest.mark.parametrize("dataset, needle", [
    ({"name": "bbc-news", "path": "x.csv"}, "exactly one"),
    ({}, "exactly one"),
    ({"name": "imdb"}, "unknown dataset name 'imdb'"),
    ({"name": "bbc-news", "max_rows": 5}, "greater than or equal to 10"),
    ({"name": "bbc-news", "rows": 5}, "unknown key"),
    (42, "valid dictionary"),
])
def test_dataset_errors_name_the_field(dataset, needle):
    with pytest.raises(SpecError) as ei:
        parse_spec({"name": "x", "dataset": dataset})
    assert ei.value.field.startswith("dataset")
    assert needle in str(ei.value)


# -- spec errors -------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("data, field, needle", [
    ({"dataset": "bbc-news"}, "name", "required key is missing"),
    ({"name": "x"}, "dataset", "required key is missing"),
    ({"name": "x", "dataset": "bbc-news", "colour": "red"}, "colour", "unknown key"),
    ({"name": "x", "dataset": "bbc-news", "budgets": {"trails": 3}}, "budgets.trails", "unknown key"),
    ({"name": "x", "dataset": "bbc-news", "budgets": {"trials": "many"}}, "budgets.trials", "found 'many'"),
    ({"name": "x", "dataset": "bbc-news", "budgets": {"trials": 0}}, "budgets.trials", "found 0"),
    ({"name": "x", "dataset": "bbc-news", "budgets": {"data_fraction": 1.5}}, "budgets.data_fraction", "found 1.5"),
    ({"name": "x", "dataset": "bbc-news", "budgets": {"epochs": -1}}, "budgets.epochs", "greater than 0"),
    ({"name": "x", "dataset": "bbc-news", "latency": {"dtype": "fp8"}}, "latency.dtype", "'fp8'"),
    ({"name": "x", "dataset": "bbc-news", "latency": {"min_runs": 50, "max_runs": 10}}, "latency", "max_runs (10)"),
    ({"name": "x", "dataset": "bbc-news", "task": "regression"}, "task", "'regression'"),
    ({"name": "x", "dataset": "bbc-news", "objectives": {"metric": "bleu"}}, "objectives.metric", "'bleu'"),
    ({"name": "x", "dataset": "bbc-news", "seed": -1}, "seed", "found -1"),
    ({"name": "", "dataset": "bbc-news"}, "name", "at least 1 character"),
    ({"name": "two\nlines", "dataset": "bbc-news"}, "name", "single-line"),
    ({"name": 7, "dataset": "bbc-news"}, "name", "valid string"),
    ({"name": "x", "dataset": "bbc-news", "budgets": [1, 2]}, "budgets", "found [1, 2]"),
])
def test_spec_errors_name_the_field(data, field, needle):
    with pytest.raises(SpecError) as ei:
        parse_spec(data)
    assert ei.value.field == field
    assert needle in ei.value.message
    assert str(ei.value) == f"{field}: {ei.value.message}"
    assert "\n" not in str(ei.value)


@pytest.mark.parametrize("data", [None, [1, 2], "name: x", 3])
def test_spec_must_be_a_mapping(data):
    with pytest.raises(SpecError) as ei:
        parse_spec(data)
    assert ei.value.field == "(spec)"
    assert f"found {type(data).__name__}" in ei.value.message


def test_long_found_values_are_shortened():
    with pytest.raises(SpecError) as ei:
        parse_spec({"name": "x", "dataset": "bbc-news", "task": "t" * 500})
    assert len(str(ei.value)) < 200


def test_load_spec_file_errors(tmp_path):
    with pytest.raises(SpecError) as ei:
        load_spec(tmp_path / "missing.yaml")
    assert ei.value.field == "(spec file)" and "file not found" in ei.value.message

    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\ndataset: bbc-news\nbudgets: {trials: 3\n")
    with pytest.raises(SpecError) as ei:
        load_spec(bad)
    assert ei.value.field == "(spec file)" and "not valid YAML at line" in ei.value.message

    binary = tmp_path / "bin.yaml"
    binary.write_bytes(b"\xff\xfe\x00\x81garbage")
    with pytest.raises(SpecError) as ei:
        load_spec(binary)
    assert ei.value.field == "(spec file)"

    lst = write_yaml(tmp_path / "list.yaml", ["a", "b"])
    with pytest.raises(SpecError) as ei:
        load_spec(lst)
    assert ei.value.field == "(spec)" and "found list" in ei.value.message


# -- search spaces ------------------------------------------------------------------------------------------------------
MPNET_BASE = {"model_type": "mpnet", "num_hidden_layers": 12, "hidden_size": 768, "num_attention_heads": 12,
              "intermediate_size": 3072, "max_position_embeddings": 514}


def space_teacher(path, tcfg: dict) -> dict:
    """The teacher a packaged space is for: base_large's is BERT-base-sized (mpnet-base's config), the rest MiniLM's."""
    return MPNET_BASE if path.stem == "base_large" else tcfg


@pytest.mark.parametrize("path", SPACES, ids=lambda p: p.name)
def test_packaged_search_space_fits_the_teacher(path, tcfg):
    tcfg = space_teacher(path, tcfg)
    space = load_search_space(path.stem, tcfg)
    limits = {"layers": tcfg["num_hidden_layers"], "hidden": tcfg["hidden_size"],
              "heads": tcfg["num_attention_heads"], "ffn": tcfg["intermediate_size"]}
    for part in (space.student, space.assistant):
        if part is None:
            continue
        for axis, limit in limits.items():
            values = getattr(part, axis)
            assert values == sorted(set(values)) and min(values) >= 1 and max(values) <= limit, axis
        for h in part.hidden:
            assert any(h % a == 0 for a in part.heads), h
    # loading by path gives the same space as loading by name
    assert load_search_space(str(path), tcfg) == space


def test_teacher_config_is_minilm(tcfg):
    assert (tcfg["num_hidden_layers"], tcfg["hidden_size"], tcfg["num_attention_heads"], tcfg["intermediate_size"]) == (
        6, 384, 12, 1536)


@pytest.mark.parametrize("path", SPACES, ids=lambda p: p.name)
def test_search_space_matches_its_file(path, tcfg):
    raw = yaml.safe_load(path.read_text())
    space = load_search_space(path.stem, space_teacher(path, tcfg))
    for part in ("student", "assistant"):
        if raw.get(part) is None:
            assert getattr(space, part) is None
            continue
        for axis in ("layers", "hidden", "heads", "ffn"):
            assert getattr(getattr(space, part), axis) == sorted(set(raw[part][axis])), (part, axis)
    for key, value in (raw.get("distill") or {}).items():
        assert getattr(space.distill, key) == pytest.approx(value), key


def test_tiny_space_student_axes(tcfg):
    space = load_search_space("tiny", tcfg)
    assert space.student.layers == [1, 2]
    assert space.student.hidden == [64, 128, 192]


def test_bert_small_has_an_assistant_grid(tcfg):
    space = load_search_space("bert_small", tcfg)
    assert space.assistant is not None
    assert max(space.assistant.layers) <= 6 and max(space.student.layers) <= 6


def test_search_space_axes_are_sorted_and_deduplicated(tmp_path, tcfg):
    p = write_yaml(tmp_path / "s.yaml", {"student": {"layers": [2, 1, 2], "hidden": [128, 64, 64], "heads": [4, 2],
                                                     "ffn": [256, 128]}})
    space = load_search_space(str(p), tcfg)
    assert space.student.layers == [1, 2] and space.student.hidden == [64, 128] and space.student.heads == [2, 4]
    assert space.distill.temperature == 2.0  # default distillation settings


def _space(tmp_path, **student):
    base = {"layers": [1, 2], "hidden": [64, 128], "heads": [2, 4], "ffn": [128, 256]}
    base.update(student)
    return str(write_yaml(tmp_path / "space.yaml", {"student": base}))


@pytest.mark.parametrize("student, field, needle", [
    ({"hidden": [96, 100]}, "search_space.student.hidden", "100 is not divisible by any head count in [3, 6]"),
    ({"layers": [1, 8]}, "search_space.student.layers", "8 is larger than the teacher's 6"),
    ({"hidden": [128, 512]}, "search_space.student.hidden", "512 is larger than the teacher's 384"),
    ({"heads": [2, 16]}, "search_space.student.heads", "16 is larger than the teacher's 12"),
    ({"ffn": [128, 4096]}, "search_space.student.ffn", "4096 is larger than the teacher's 1536"),
    ({"layers": [0, 1]}, "search_space.student.layers", "item [0] must be >= 1"),
    ({"layers": []}, "search_space.student.layers", "at least 1 item"),
    ({"depth": [1]}, "search_space.student.depth", "unknown key"),
])
def test_search_space_errors(tmp_path, tcfg, student, field, needle):
    if field.endswith("hidden") and "divisible" in needle:
        student = {**student, "heads": [3, 6]}
    with pytest.raises(SpecError) as ei:
        load_search_space(_space(tmp_path, **student), tcfg)
    assert ei.value.field == field
    assert needle in ei.value.message


def test_search_space_assistant_is_checked_too(tmp_path, tcfg):
    ok = {"layers": [1], "hidden": [64], "heads": [2], "ffn": [128]}
    p = write_yaml(tmp_path / "a.yaml", {"student": ok, "assistant": {**ok, "layers": [7]}})
    with pytest.raises(SpecError) as ei:
        load_search_space(str(p), tcfg)
    assert ei.value.field == "search_space.assistant.layers"


def test_search_space_not_checked_against_teacher_without_config(tmp_path):
    # the teacher limits only apply when a teacher config is given; divisibility always applies
    load_search_space(_space(tmp_path, layers=[1, 12]), None)
    with pytest.raises(SpecError):
        load_search_space(_space(tmp_path, hidden=[65], heads=[2]), None)


def test_search_space_file_errors(tmp_path, tcfg):
    with pytest.raises(SpecError) as ei:
        load_search_space("no_such_space", tcfg)
    assert ei.value.field == "search_space" and "bert_small" in ei.value.message and "tiny" in ei.value.message

    with pytest.raises(SpecError) as ei:
        load_search_space(str(tmp_path / "missing.yaml"), tcfg)
    assert ei.value.field == "search_space"

    p = tmp_path / "list.yaml"
    p.write_text("- 1\n- 2\n")
    with pytest.raises(SpecError) as ei:
        load_search_space(str(p), tcfg)
    assert ei.value.field == "search_space" and "mapping" in ei.value.message

    p = tmp_path / "broken.yaml"
    p.write_text("student: {layers: [1, 2\n")
    with pytest.raises(SpecError) as ei:
        load_search_space(str(p), tcfg)
    assert ei.value.field == "search_space" and "not valid YAML" in ei.value.message

    p = write_yaml(tmp_path / "nostudent.yaml", {"distill": {"lr": 0.001}})
    with pytest.raises(SpecError) as ei:
        load_search_space(str(p), tcfg)
    assert ei.value.field == "search_space.student" and "required" in ei.value.message

    p = write_yaml(tmp_path / "badlr.yaml", {"student": {"layers": [1], "hidden": [64], "heads": [2], "ffn": [64]},
                                             "distill": {"lr": 5}})
    with pytest.raises(SpecError) as ei:
        load_search_space(str(p), tcfg)
    assert ei.value.field == "search_space.distill.lr"


# -- teacher configs -----------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("config, needle", [
    (None, "has no config.json"),
    ("{broken", "cannot read"),
    ("[1, 2]", "must hold a JSON object, found list"),
    ('{"model_type": "vit"}', "a 'vit' model, which the service cannot use as a teacher; families it slices: BERT"),
    ('{"model_type": "bert"}', "needs a positive integer for num_hidden_layers, hidden_size"),
    ('{"model_type": "bert", "num_hidden_layers": 2, "hidden_size": "big", "num_attention_heads": 2, '
     '"intermediate_size": 64}', "needs a positive integer for hidden_size"),
    ('{"model_type": "bert", "num_hidden_layers": 2, "hidden_size": 64, "num_attention_heads": 2, '
     '"intermediate_size": 64, "max_position_embeddings": 0}', "max_position_embeddings"),
])
def test_bad_teacher_directory(tmp_path, config, needle):
    from nas.teachers.load import teacher_config

    if config is not None:
        (tmp_path / "config.json").write_text(config)
    with pytest.raises(SpecError) as ei:
        teacher_config(str(tmp_path))
    assert ei.value.field == "teacher" and needle in ei.value.message


def test_teacher_errors(tmp_path):
    from nas.teachers.load import teacher_config

    with pytest.raises(SpecError) as ei:
        teacher_config(str(tmp_path / "missing"))
    assert ei.value.field == "teacher" and "not a directory" in ei.value.message
    cfg = {"model_type": "bert", "num_hidden_layers": 2, "hidden_size": 64, "num_attention_heads": 2,
           "intermediate_size": 128}
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    # a config alone is not a model: the weights and the tokenizer are looked for before anything runs
    with pytest.raises(SpecError) as ei:
        teacher_config(str(tmp_path))
    assert ei.value.field == "teacher" and "no model weights" in ei.value.message
    (tmp_path / "model.safetensors").write_bytes(b"")
    with pytest.raises(SpecError) as ei:
        teacher_config(str(tmp_path))
    assert ei.value.field == "teacher" and "no tokenizer" in ei.value.message
    (tmp_path / "vocab.txt").write_text("[PAD]\n")
    # a local BERT directory is accepted and its config returned as is
    assert teacher_config(str(tmp_path)) == cfg


def test_a_saved_tiny_bert_is_a_valid_teacher(tmp_path):
    from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification

    from nas.teachers.load import teacher_config, teacher_path

    cfg = BertConfig(num_hidden_layers=2, hidden_size=64, num_attention_heads=2, intermediate_size=128,
                     vocab_size=30522, max_position_embeddings=128)
    BertForSequenceClassification(cfg).save_pretrained(tmp_path / "tiny")
    AutoTokenizer.from_pretrained(teacher_path("minilm-l6")).save_pretrained(tmp_path / "tiny")
    got = teacher_config(str(tmp_path / "tiny"))
    assert (got["num_hidden_layers"], got["hidden_size"], got["max_position_embeddings"]) == (2, 64, 128)
    # and the search space is checked against *this* teacher
    with pytest.raises(SpecError) as ei:
        load_search_space("tiny", got)
    assert ei.value.field.startswith("search_space.") and "larger than the teacher's" in ei.value.message
