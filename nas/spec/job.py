"""The job spec: one pydantic model per section, unknown keys refused, every error explained with its field path."""

from __future__ import annotations

import pathlib
from typing import Any, Literal

from pydantic import ConfigDict, Field, ValidationError, field_validator, model_validator

from nas.hpo import SEARCHERS
from nas.search.strategies import STRATEGIES
from nas.spec.errors import SpecError, explain, read_yaml
from nas.spec.space import Strict

NAMED_TEACHERS = ("minilm-l6",)
NAMED_DATASETS = ("bbc-news", "rotten-tomatoes", "bbc-news-pairs")
# the allowed names of plugin families come from their registries: adding a strategy or a searcher is one file and
# one registry line, and the spec accepts it
StrategyName = Literal[tuple(STRATEGIES)]
SearcherName = Literal[tuple(SEARCHERS)]


class Objectives(Strict):
    metric: Literal["accuracy", "f1_macro"] = "accuracy"
    latency: Literal["p50", "p90"] = "p50"
    size: bool = False


Device = Literal["cpu", "cuda", "auto"]
DType = Literal["fp32", "fp16", "bf16", "int8"]
Runtime = Literal["eager", "onnx", "int8"]
TARGET_FIELDS = ("device", "runtime", "dtype", "batch", "seq_len", "threads")  # what a deployment target may override


class LatencyTarget(Strict):
    """One deployment target: any of the section's device settings overridden, the rest taken from the section."""

    name: str | None = Field(None, min_length=1, max_length=64)  # default: device-runtime[-dtype]-bBATCH
    device: Device | None = None
    runtime: Runtime | None = None
    dtype: DType | None = None  # default: the section's; int8 with runtime int8, fp32 when leaving an int8 section
    batch: int | None = Field(None, ge=1, le=1024)
    seq_len: int | None = Field(None, ge=8, le=512)
    threads: int | None = Field(None, ge=1, le=256)


class LatencySettings(Strict):
    # auto: the device the job's compute policy resolves to when the job starts (cuda where the cluster has GPUs);
    # the job's stored spec then names it (JobSpec.with_latency_device)
    device: Device = "auto"
    batch: int = Field(1, ge=1, le=1024)
    seq_len: int = Field(128, ge=8, le=512)
    dtype: DType = "fp32"
    runtime: Runtime = "eager"  # the runtime the front is drawn with
    extra_runtimes: list[Runtime] = []  # also measured and stored, as separate rows (of the first target)
    threads: int = Field(2, ge=1, le=256)
    warmup: int = Field(10, ge=0)
    min_runs: int = Field(20, ge=5)
    max_runs: int = Field(200, ge=5)
    rel_ci: float = Field(0.02, gt=0, lt=1)
    rounds: int = Field(10, ge=1, le=20)  # interleaved rounds, the teacher re-measured in each as the reference
    # deployment targets, each measured for every candidate and kept as its own front; the first is the search
    # objective. Absent: one target, the section's own settings
    targets: list[LatencyTarget] = []

    @model_validator(mode="after")
    def _runs(self):
        if self.max_runs < self.min_runs:
            raise ValueError(f"max_runs ({self.max_runs}) must be >= min_runs ({self.min_runs})")
        if (self.dtype == "int8") != (self.runtime == "int8"):
            raise ValueError("int8 is the int8 runtime: set both runtime and dtype to int8 (dynamic quantisation, CPU)")
        return self

    def resolved_targets(self) -> list[dict]:
        return latency_targets(self.model_dump())


def target_names(targets: list[dict]) -> list[str]:
    """Default names: device-runtime[-dtype]-bBATCH, then -sSEQ_LEN and -tTHREADS where that alone repeats."""
    names = [f"{t['device']}-{t['runtime']}{'' if t['dtype'] in ('fp32', 'int8') else '-' + t['dtype']}-b{t['batch']}"
             for t in targets]
    for more in ("seq_len", "threads"):
        names = [n + f"-{more[0]}{t[more]}" if names.count(n) > 1 else n for n, t in zip(names, targets)]
    return names


def latency_targets(lat: dict) -> list[dict]:
    """Every deployment target of a `latency:` section (a dict, as a job's spec is stored) with all of TARGET_FIELDS and
    a `name`, the search objective first. Without `targets` the one target is the section's own settings."""
    base = {f: lat.get(f, LatencySettings.model_fields[f].default) for f in TARGET_FIELDS if f != "device"}
    base["device"] = lat.get("device", "auto")
    items, out = lat.get("targets") or [{}], []
    for item in items:
        t = {**base, **{k: v for k, v in item.items() if k in TARGET_FIELDS and v is not None}}
        if item.get("dtype") is None and item.get("runtime") is not None:
            t["dtype"] = "int8" if t["runtime"] == "int8" else ("fp32" if base["dtype"] == "int8" else base["dtype"])
        out.append(t)
    return [{"name": item.get("name") or default, **t} for item, t, default in zip(items, out, target_names(out))]


def check_latency_targets(lat: LatencySettings) -> None:
    """What can be wrong with the targets without looking at the machine: int8 pairs with int8, names and settings are
    unique. (The device checks, e.g. fp16 needs cuda, are the teacher stage's: they resolve `auto`.)"""
    seen: dict[str, int] = {}
    settings: dict[tuple, int] = {}
    for i, t in enumerate(lat.resolved_targets() if lat.targets else []):
        field = f"latency.targets[{i}]"
        if (t["dtype"] == "int8") != (t["runtime"] == "int8"):
            raise SpecError(f"{field}.dtype", f"int8 is the int8 runtime: set both runtime and dtype to int8; found "
                                              f"runtime {t['runtime']}, dtype {t['dtype']}")
        key = tuple(t[f] for f in TARGET_FIELDS)
        if key in settings:
            raise SpecError(field, f"the same settings as latency.targets[{settings[key]}]")
        if t["name"] in seen:
            raise SpecError(f"{field}.name", f"{t['name']!r} is also the name of latency.targets[{seen[t['name']]}]; "
                                             "give the targets distinct names")
        seen[t["name"]], settings[key] = i, i


class Constraints(Strict):
    """Hard limits on a student (nas/search/constraints.py). A candidate the latency predictor is sure will miss a
    limit is not measured; one measured over a limit ranks below every one within them, is never chosen for a final
    while any within them is, and never reaches the front."""

    latency_p90_ms: float | None = Field(None, gt=0)
    latency_p50_ms: float | None = Field(None, gt=0)
    # a latency budget relative to the teacher (its p50 over the student's, measured in the same rounds): the same
    # spec means the same budget on any machine
    min_speedup: float | None = Field(None, gt=1, le=10000)


class Budgets(Strict):
    trials: int = Field(8, ge=1, le=100000)
    epochs: float = Field(2.0, gt=0, le=100)
    steps: int | None = Field(None, ge=1)  # when set, overrides epochs
    data_fraction: float = Field(1.0, gt=0, le=1)
    max_seq_len: int = Field(128, ge=8, le=512)
    teacher_epochs: float = Field(3.0, ge=0, le=100)  # at least 60 steps; 0: no fine-tuning (the head as initialised)
    # The student initialiser's distillation (`student_init`, or a teacher the service cannot slice): epochs (none:
    # teacher_epochs; best on dev kept), peak lr, loss on the logits (KL at T=2 or MSE), weights (0: none) of the teacher's
    # pooled state, attention maps and hidden states (nas/teachers/training.py), batches of similar length (> 0: pools).
    student_init_epochs: float | None = Field(None, gt=0, le=100)
    student_init_lr: float = Field(1e-4, gt=0, le=1)
    student_init_soft_loss: Literal["soft_kl", "soft_mse"] = "soft_kl"
    student_init_embedding: float = Field(0.0, ge=0, le=100)
    student_init_attention: float = Field(0.0, ge=0, le=100)
    student_init_hidden: float = Field(0.0, ge=0, le=100)
    student_init_length_groups: int = Field(0, ge=0, le=10000)
    max_concurrent: int = Field(1, ge=1, le=1024)
    # wall-clock budget of the search stage in seconds (none: trials decide); no trial, proxy generation or final starts
    # after it, and the supernet schedule's finals go teacher -> student (no assistant distillation) under it
    time_s: float | None = Field(None, gt=0, le=30 * 86400)
    # a trial that makes no progress for this long while its process lives (a hung kernel or collective) is killed and
    # run again, as a trial whose worker died is; training steps and latency measurement both count as progress
    trial_stale_s: float = Field(300.0, ge=5, le=86400)

    def init_epochs(self) -> float:
        """The student initialiser's epochs: `student_init_epochs`, else `teacher_epochs`."""
        return self.teacher_epochs if self.student_init_epochs is None else self.student_init_epochs


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
    # to this by the shape's share of the teacher's encoder weights (nas/distill/loop.py: lr_by_size); null: `lr` for all
    lr_teacher_size: float | None = Field(5e-5, gt=0, lt=1)
    two_step: bool = True  # teacher -> assistant -> student when an assistant was chosen
    one_step_baseline: bool = False  # also distil teacher -> student directly, for comparison
    augment: int = Field(0, ge=0, le=50)  # teacher-labelled perturbed copies per train text (0: off); nas/distill/augment.py
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
    # each final student trained this many times from the same slice, on the same rows and settings, with training
    # seeds seed, seed+1, ...; it keeps the uniform average of their weights (a "model soup": one model, the same shape
    # and latency) and records each member's dev and test scores; costs `seeds` finals per shape
    seeds: int = Field(1, ge=1, le=16)


class Search(Strict):
    strategy: StrategyName = "random"  # nas/search/strategies/
    population: int = Field(12, ge=2, le=10000)
    # with a latency limit, the last this-many of budgets.trials (at most 1/4) climb to it (nas/search/climb.py)
    climb: int = Field(6, ge=0, le=10000)
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
    """Venus-style AutoML of the distillation hyperparameters of the front's best shapes (nas/stages/hpo.py): a search on a
    stratified sample of train under Ray Tune with early stopping, then the top-k configurations re-trained on all data."""

    algorithm: SearcherName = "optuna-tpe"  # nas/hpo/
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
    # a file's column names, where they are not text / label (query / doc for pairs)
    text_column: str = Field("text", min_length=1)
    label_column: str = Field("label", min_length=1)
    query_column: str = Field("query", min_length=1)
    doc_column: str = Field("doc", min_length=1)

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


class ComputePolicy(Strict):
    """Where every stage trains and infers: the device (auto: CUDA when one is visible), the precision (bf16 / fp16 through
    torch.autocast, fp16 with a gradient scaler) and what each Ray trial or task asks the scheduler for."""

    device: Literal["auto", "cpu", "cuda"] = "auto"
    precision: Literal["fp32", "bf16", "fp16"] = "fp32"
    # GPUs one small trial asks for (per-trial students, proxy evaluation, HPO configurations); a fraction lets several
    # share one GPU. Default on CUDA: 1 / budgets.max_concurrent. Teacher-sized steps (supernet, finals) take a whole GPU.
    gpus_per_trial: float | None = Field(None, ge=0, le=64)
    cpus_per_trial: int | None = Field(None, ge=1, le=1024)  # default: the node's CPUs / budgets.max_concurrent

    @model_validator(mode="after")
    def _combinations(self):
        if self.precision == "fp16" and self.device == "cpu":
            raise ValueError("fp16 trains on cuda (with a gradient scaler); on the CPU use fp32 or bf16")
        if self.device == "cpu" and self.gpus_per_trial:
            raise ValueError(f"device cpu asks for no GPU; found gpus_per_trial {self.gpus_per_trial}")
        g = self.gpus_per_trial
        if g is not None and g > 1 and g != int(g):
            raise ValueError(f"more than one GPU per trial must be a whole number (Ray cannot split it); found {g}")
        return self


class TeacherCheck(Strict):
    """What happens when the fine-tuned teacher is no better than the majority class (within a point on dev), or below
    TF-IDF + logistic regression on dev: stop the job before anything is distilled, or warn and go on."""

    majority: Literal["stop", "warn"] = "stop"
    tfidf: Literal["stop", "warn"] = "warn"  # a saturated task (BBC News) has TF-IDF above a good teacher


class Transfer(Strict):
    """The teacher-labelled transfer corpus every student of the job trains on beside the train rows: `augment`
    perturbed copies of each train text (nas/distill/augment.py) and, from `path`, the user's unlabelled in-domain
    text (one per line, or the `column` of a CSV / TSV / JSONL file), at most `max_rows` of it."""

    path: str | None = None
    column: str = Field("text", min_length=1)
    augment: int = Field(0, ge=0, le=100)
    max_rows: int | None = Field(None, ge=1)


class JobSpec(Strict):
    name: str = Field(min_length=1, max_length=200)
    teacher: str = "minilm-l6"
    # what students are sliced from: default the teacher where its family slices (nas/teachers), else minilm-l6,
    # distilled from the teacher's logits first; or a local directory of a family the service slices
    student_init: str | None = None
    dataset: DatasetRef
    task: Literal["classification", "pair"] = "classification"
    search_space: str = "bert_small"
    objectives: Objectives = Objectives()
    latency: LatencySettings = LatencySettings()
    compute: ComputePolicy = ComputePolicy()
    constraints: Constraints = Constraints()
    references: list[Literal["tfidf-linear"] | ModelReference] = []  # the teacher is always a reference
    budgets: Budgets = Budgets()
    search: Search = Search()
    hpo: HPOSettings | None = None  # absent: no hyperparameter stage
    teacher_check: TeacherCheck = TeacherCheck()
    transfer: Transfer | None = None  # absent: students train on the train rows (and final.augment's copies)
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


def with_latency_device(spec: JobSpec, device: str) -> JobSpec:
    """`spec` with every `auto` latency device (the section's, each target's) replaced by `device`: the device the
    job's compute resolved to. Target names are kept as they were (they name the stored measurements)."""
    lat = spec.latency
    if lat.device != "auto" and all(t.device != "auto" for t in lat.targets):
        return spec
    names = [t["name"] for t in lat.resolved_targets()]
    targets = [t.model_copy(update={"device": device if t.device == "auto" else t.device,
                                    "name": t.name or name}) for t, name in zip(lat.targets, names)]
    new = lat.model_copy(update={"device": device if lat.device == "auto" else lat.device, "targets": targets})
    return spec.model_copy(update={"latency": new})


def parse_spec(data: Any) -> JobSpec:
    if not isinstance(data, dict):
        raise SpecError("(spec)", f"expected a mapping of keys, found {type(data).__name__}")
    try:
        spec = JobSpec.model_validate(data)
    except ValidationError as err:
        raise explain(err) from None
    check_latency_targets(spec.latency)
    return spec


def load_spec(path: str | pathlib.Path) -> JobSpec:
    return parse_spec(read_yaml(path, "(spec file)"))
