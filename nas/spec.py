"""Job specs and search spaces: load YAML, validate, explain every error with the field path.

A spec error is a user error: `SpecError(field, message)`, printed as one line by the CLI with exit code 2, and raised before
anything is written to the store.
"""

from __future__ import annotations

import json
import pathlib
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

REPO_ROOT = pathlib.Path(__file__).resolve().parent.parent
SEARCH_SPACE_DIR = REPO_ROOT / "search_spaces"
NAMED_TEACHERS = ("minilm-l6",)
NAMED_DATASETS = ("bbc-news", "rotten-tomatoes", "bbc-news-pairs")


class SpecError(Exception):
    """A user error in a spec, a search space or a dataset: `field` says where, `message` what was expected and found."""

    def __init__(self, field: str, message: str):
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=False, validate_default=True)


class Objectives(Strict):
    metric: Literal["accuracy", "f1_macro"] = "accuracy"
    latency: Literal["p50", "p90"] = "p50"
    size: bool = False


class LatencySettings(Strict):
    device: Literal["cpu", "cuda", "auto"] = "cpu"
    batch: int = Field(1, ge=1, le=1024)
    seq_len: int = Field(128, ge=8, le=512)
    dtype: Literal["fp32", "fp16", "bf16", "int8"] = "fp32"
    runtime: Literal["eager", "onnx", "int8"] = "eager"  # the runtime the front is drawn with
    extra_runtimes: list[Literal["eager", "onnx", "int8"]] = []  # also measured and stored, as separate rows
    threads: int = Field(2, ge=1, le=256)
    warmup: int = Field(10, ge=0)
    min_runs: int = Field(20, ge=5)
    max_runs: int = Field(200, ge=5)
    rel_ci: float = Field(0.02, gt=0, lt=1)
    rounds: int = Field(10, ge=1, le=20)  # interleaved rounds, the teacher re-measured in each as the reference

    @model_validator(mode="after")
    def _runs(self):
        if self.max_runs < self.min_runs:
            raise ValueError(f"max_runs ({self.max_runs}) must be >= min_runs ({self.min_runs})")
        if (self.dtype == "int8") != (self.runtime == "int8"):
            raise ValueError("int8 is the int8 runtime: set both runtime and dtype to int8 (dynamic quantisation, CPU)")
        return self


class Constraints(Strict):
    """Hard limits on a student. A candidate the latency predictor is sure will miss the limit is not measured."""

    latency_p90_ms: float | None = Field(None, gt=0)
    latency_p50_ms: float | None = Field(None, gt=0)


class Budgets(Strict):
    trials: int = Field(8, ge=1, le=100000)
    epochs: float = Field(2.0, gt=0, le=100)
    steps: int | None = Field(None, ge=1)  # when set, overrides epochs
    data_fraction: float = Field(1.0, gt=0, le=1)
    max_seq_len: int = Field(128, ge=8, le=512)
    teacher_epochs: float = Field(3.0, gt=0, le=100)
    max_concurrent: int = Field(1, ge=1, le=1024)
    # wall-clock budget of the search stage in seconds (none: trials decide); no trial, proxy generation or final starts
    # after it, and the supernet schedule's finals go teacher -> student (no assistant distillation) under it
    time_s: float | None = Field(None, gt=0, le=30 * 86400)


class SupernetSettings(Strict):
    """Train one weight-sharing supernet (sandwich rule) instead of distilling every candidate from scratch."""

    steps: int | None = Field(None, ge=1)  # default: `epochs` over the train split
    epochs: float = Field(3.0, gt=0, le=100)
    n_random: int = Field(2, ge=0, le=16)
    hidden_weight: float = Field(1.0, ge=0)
    rewire: bool = True
    rewire_rows: int = Field(256, ge=8)
    lr: float = Field(2e-4, gt=0, lt=1)
    checkpoint_every: int = Field(50, ge=1)
    # how a shape's `proxy` dev metric is read from the supernet: its inherited classifier head ("inherited"), or a
    # logistic regression fitted on `probe_rows` train rows of the shape's own inherited features ("probe")
    proxy: Literal["inherited", "probe"] = "inherited"
    probe_rows: int = Field(2000, ge=16)


class AutoDiscSettings(Strict):
    """Pick a teacher assistant from the search space's assistant grid by τ = P + λ·(1 − scale)."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)
    enabled: bool = True
    lam: float = Field(0.2, ge=0, le=10, alias="lambda")
    scale_by: Literal["params", "latency"] = "params"
    # AutoDisc's optional second round: a new supernet over the student shapes, initialised from the distilled assistant
    # (rewired again when search.supernet.rewire) and trained on its soft targets; the student search and the finals
    # then slice from it. Student choices larger than the assistant on an axis are dropped from the search.
    second_round: bool = False
    second_round_epochs: float | None = Field(None, gt=0, le=100)  # default: what search.supernet trains for


class FinalSettings(Strict):
    """Standalone distillation of the chosen front points: the `final` accuracy (the supernet's is a `proxy`)."""

    top_k: int = Field(4, ge=0, le=100)
    epochs: float = Field(4.0, gt=0, le=100)
    lr: float | None = Field(None, gt=0, lt=1)  # default: the search space's distill.lr
    # the lr a student of the teacher's own size would get: each final's lr runs geometrically from `lr` (tiny students)
    # to this by the shape's share of the teacher's encoder weights (nas/distill.py: lr_by_size); null: `lr` for all
    lr_teacher_size: float | None = Field(5e-5, gt=0, lt=1)
    two_step: bool = True  # teacher -> assistant -> student when an assistant was chosen
    one_step_baseline: bool = False  # also distil teacher -> student directly, for comparison
    augment: int = Field(0, ge=0, le=50)  # teacher-labelled perturbed copies per train text (0: off); nas/augment.py
    soft_targets: Literal["assistant", "average"] = "assistant"  # two-step targets: the assistant's, or teacher+assistant
    # where a two-step student's weights come from: its slice of the supernet, or its slice of the distilled assistant
    # (progressive shrinking: teacher -> assistant -> student in weights as well as in targets; shapes that do not fit
    # inside the assistant fall back to the supernet), or (teacher) its slice of the task-fine-tuned teacher itself, as
    # the plain recipe starts, for every final student including the one-step baseline
    student_init: Literal["supernet", "assistant", "teacher"] = "supernet"
    # TinyBERT-style intermediate losses in every final, against the fine-tuned teacher's forward on each batch:
    # hidden-state MSE and attention-map KL (weights; 0 = off), each student layer matched to the teacher layer it was
    # sliced from (sliced) or by TinyBERT's uniform map (a 1-layer student learns the teacher's top layer)
    hidden_weight: float = Field(0.0, ge=0, le=100)
    attention_weight: float = Field(0.0, ge=0, le=100)
    layer_map: Literal["sliced", "uniform"] = "sliced"


class Search(Strict):
    strategy: Literal["random", "evolution", "optuna-nsga2", "nni-evolution"] = "random"  # the last two: nas/baselines.py
    population: int = Field(12, ge=2, le=10000)
    supernet: SupernetSettings | None = None  # absent: every candidate is distilled from scratch (per-trial KD)
    autodisc: AutoDiscSettings = AutoDiscSettings()
    final: FinalSettings = FinalSettings()


class ShapeSpec(Strict):
    layers: int = Field(ge=1)
    hidden: int = Field(ge=1)
    heads: int = Field(ge=1)
    ffn: int = Field(ge=1)

    @model_validator(mode="after")
    def _divisible(self):
        if self.hidden % self.heads:
            raise ValueError(f"hidden {self.hidden} is not divisible by heads {self.heads}")
        return self


class HPOSettings(Strict):
    """Venus-style AutoML of the distillation hyperparameters of the front's best shapes (nas/hpo.py): a search on a
    stratified sample of train under Ray Tune with early stopping, then the top-k configurations re-trained on all data."""

    algorithm: Literal["random", "optuna-tpe", "optuna-nsga2", "nni-tpe", "nni-evolution", "nni-regevo", "bohb"] = "optuna-tpe"
    scheduler: Literal["asha", "hyperband", "fifo"] = "asha"  # bohb always runs under its own HyperBandForBOHB
    space: str = "default"  # a name in search_spaces/hpo/ or a YAML path
    shapes: list[ShapeSpec] = []  # explicit shapes; default: the top_k_shapes best front points
    top_k_shapes: int = Field(1, ge=1, le=20)
    samples: int = Field(12, ge=1, le=10000)  # configurations tried in the sample search
    sample_fraction: float = Field(0.06, gt=0, le=1)
    epochs: float = Field(3.0, gt=0, le=100)  # budget of one sample configuration, over the sample
    reports: int = Field(4, ge=1, le=100)  # dev evaluations per configuration: the early-stopping rungs
    top_k: int = Field(3, ge=1, le=100)  # configurations re-trained on all of train (plus the defaults)
    full_epochs: float | None = Field(None, gt=0, le=100)  # default: budgets.epochs
    max_concurrent: int = Field(2, ge=1, le=1024)
    include_default: bool = True  # the space's default settings are the first configuration tried


class DatasetRef(Strict):
    """`dataset: bbc-news` is shorthand for `dataset: {name: bbc-news}`; a path to a CSV/JSONL file works the same way."""

    name: str | None = None
    path: str | None = None
    max_rows: int | None = Field(None, ge=10)  # a stratified slice of the whole dataset, before splitting

    @model_validator(mode="after")
    def _one(self):
        if (self.name is None) == (self.path is None):
            raise ValueError("give exactly one of name or path")
        if self.name is not None and self.name not in NAMED_DATASETS:
            raise ValueError(f"unknown dataset name {self.name!r}; known: {', '.join(NAMED_DATASETS)} (or give a path)")
        return self


class ModelReference(Strict):
    """The user's current model: a local Hugging Face sequence-classification directory (with its tokenizer)."""

    model: str = Field(min_length=1)
    name: str | None = Field(None, min_length=1, max_length=64)


REFERENCE_KINDS = ("tfidf-linear",)


class JobSpec(Strict):
    name: str = Field(min_length=1, max_length=200)
    teacher: str = "minilm-l6"
    dataset: DatasetRef
    task: Literal["classification", "pair"] = "classification"
    search_space: str = "bert_small"
    objectives: Objectives = Objectives()
    latency: LatencySettings = LatencySettings()
    constraints: Constraints = Constraints()
    references: list[Literal["tfidf-linear"] | ModelReference] = []  # the teacher is always a reference
    budgets: Budgets = Budgets()
    search: Search = Search()
    hpo: HPOSettings | None = None  # absent: no hyperparameter stage
    storage: str | None = None
    seed: int = Field(0, ge=0, le=2**31 - 1)

    @field_validator("dataset", mode="before")
    @classmethod
    def _dataset_shorthand(cls, v: Any) -> Any:
        if isinstance(v, str):
            return {"name": v} if v in NAMED_DATASETS else {"path": v}
        return v

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        if not v.strip() or any(c in v for c in "\n\r\t"):
            raise ValueError("must be a non-empty single-line string")
        return v


class StudentSpace(Strict):
    layers: list[int] = Field(min_length=1)
    hidden: list[int] = Field(min_length=1)
    heads: list[int] = Field(min_length=1)
    ffn: list[int] = Field(min_length=1)

    @field_validator("layers", "hidden", "heads", "ffn")
    @classmethod
    def _positive(cls, v: list[int]) -> list[int]:
        for i, x in enumerate(v):
            if x < 1:
                raise ValueError(f"item [{i}] must be >= 1, found {x}")
        return sorted(set(v))


class DistillDefaults(Strict):
    lr: float = Field(1e-3, gt=0, lt=1)
    alpha_soft: float = Field(0.5, ge=0)
    beta_hard: float = Field(0.5, ge=0)
    temperature: float = Field(2.0, gt=0)
    warmup_ratio: float = Field(0.1, ge=0, lt=1)
    batch_size: int = Field(32, ge=1, le=4096)
    weight_decay: float = Field(0.01, ge=0)


class SearchSpace(Strict):
    student: StudentSpace
    assistant: StudentSpace | None = None
    distill: DistillDefaults = DistillDefaults()


# ----------------------------------------------------------------------------------------------------------------------
def _loc(loc: tuple) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + str(part)
    return out or "(spec)"


def _short(value: Any) -> str:
    text = json.dumps(_bounded(value), default=str) if not isinstance(value, str) else repr(value[:100])
    return text if len(text) <= 60 else text[:57] + "..."


def _bounded(value: Any, depth: int = 3) -> Any:
    """A few items of a few levels: YAML aliases can make a tiny file a huge structure (a "billion laughs")."""
    if isinstance(value, dict):
        return {str(k): _bounded(v, depth - 1) for k, v in list(value.items())[:8]} if depth else "{...}"
    if isinstance(value, (list, tuple)):
        return [_bounded(v, depth - 1) for v in value[:8]] if depth else "[...]"
    return value


def explain(err: ValidationError, prefix: str = "") -> SpecError:
    """First pydantic error as one SpecError with the dotted field path, what was expected and what was found."""
    e = err.errors()[0]
    loc = tuple(p for p in e["loc"] if p not in ("function-after",))
    field = _loc(loc)
    if prefix:
        field = prefix + ("." + field if field != "(spec)" else "")
    msg = e["msg"].removeprefix("Value error, ")
    if e["type"] == "extra_forbidden":
        return SpecError(field, "unknown key")
    if e["type"] == "missing":
        return SpecError(field, "required key is missing")
    found = e.get("input")
    return SpecError(field, f"{msg}; found {_short(found)}")


def read_yaml(path: str | pathlib.Path, field: str) -> Any:
    p = pathlib.Path(path)
    if not p.is_file():
        raise SpecError(field, f"file not found: {p}")
    try:
        return yaml.safe_load(p.read_text())
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark else ""
        raise SpecError(field, f"not valid YAML{where}: {getattr(exc, 'problem', exc)}") from None
    except UnicodeDecodeError:
        raise SpecError(field, f"not a text file: {p}") from None


def parse_spec(data: Any) -> JobSpec:
    if not isinstance(data, dict):
        raise SpecError("(spec)", f"expected a mapping of keys, found {type(data).__name__}")
    try:
        return JobSpec.model_validate(data)
    except ValidationError as err:
        raise explain(err) from None


def load_spec(path: str | pathlib.Path) -> JobSpec:
    return parse_spec(read_yaml(path, "(spec file)"))


def search_space_path(name: str) -> pathlib.Path:
    p = pathlib.Path(name)
    if p.suffix in (".yaml", ".yml") or p.exists():
        return p
    return SEARCH_SPACE_DIR / f"{name}.yaml"


def load_search_space(name: str, teacher_config: dict | None = None) -> SearchSpace:
    """Parse the space and check it against the teacher: no axis above the teacher's, every hidden size divisible by some
    head count (a BertConfig requirement)."""
    path = search_space_path(name)
    if not path.is_file():
        known = sorted(x.stem for x in SEARCH_SPACE_DIR.glob("*.yaml"))
        raise SpecError("search_space", f"no such search space {name!r} (known: {', '.join(known)}; or a path to a YAML file)")
    data = read_yaml(path, "search_space")
    if not isinstance(data, dict):
        raise SpecError("search_space", f"{path} must hold a mapping, found {type(data).__name__}")
    try:
        space = SearchSpace.model_validate(data)
    except ValidationError as err:
        raise explain(err, prefix="search_space") from None
    for part in ("student", "assistant"):
        sub: StudentSpace | None = getattr(space, part)
        if sub is None:
            continue
        for h in sub.hidden:
            if not any(h % a == 0 for a in sub.heads):
                raise SpecError(f"search_space.{part}.hidden", f"{h} is not divisible by any head count in {sub.heads}")
        if teacher_config:
            limits = {
                "layers": teacher_config["num_hidden_layers"],
                "hidden": teacher_config["hidden_size"],
                "heads": teacher_config["num_attention_heads"],
                "ffn": teacher_config["intermediate_size"],
            }
            for axis, limit in limits.items():
                for x in getattr(sub, axis):
                    if x > limit:
                        raise SpecError(f"search_space.{part}.{axis}", f"{x} is larger than the teacher's {limit}")
    return space
