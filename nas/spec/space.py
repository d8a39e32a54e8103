"""Search spaces (`search_spaces/*.yaml`): the student and assistant shape axes and the distillation defaults,
checked against the teacher's limits."""

from __future__ import annotations

import pathlib
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, create_model, field_validator

from nas.spec.errors import SpecError, explain, read_yaml
from nas.students import FAMILIES
from nas.students.arch import AXES, MAY_BE_ZERO, SLICED
from nas.teachers import FAMILIES as TEACHER_FAMILIES

REPO_ROOT = pathlib.Path(__file__).resolve().parents[2]
SEARCH_SPACE_DIR = REPO_ROOT / "search_spaces"


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=False, validate_default=True)


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
    # > 0: every student's training (supernet, trials, finals) draws batches of rows of similar length from pools of
    # this many batches (Hugging Face's group_by_length uses 50): less padding to compute on varied text; 0: random
    length_groups: int = Field(0, ge=0, le=10000)


def _axis_list(axis: str):
    low = 0 if axis in MAY_BE_ZERO else 1

    def check(v: list[int]) -> list[int]:
        for i, x in enumerate(v):
            if x < low:
                raise ValueError(f"item [{i}] must be >= {low}, found {x}")
        return sorted(set(v))

    return check


def _family_space(name: str) -> type[Strict]:
    """The space of one non-bert student family: a list of choices per axis of arch.AXES[name], and optionally its
    own distillation settings and epochs (these students learn from scratch above their embeddings: they usually
    want a larger lr and more passes than BERT slices)."""
    fields = {axis: (list[int], Field(min_length=1)) for axis in AXES[name]}
    validators = {f"_check_{axis}": field_validator(axis)(classmethod(lambda cls, v, _c=_axis_list(axis): _c(v)))
                  for axis in AXES[name]}
    return create_model(f"{name.capitalize()}Space", __base__=Strict, __validators__=validators,
                        distill=(DistillDefaults | None, None), epochs=(float | None, Field(None, gt=0, le=1000)),
                        **fields)


FAMILY_SPACES = {name: _family_space(name) for name in AXES if name in FAMILIES}
FamiliesSpace = create_model("FamiliesSpace", __base__=Strict,
                             **{name: (model | None, None) for name, model in FAMILY_SPACES.items()})


class SearchSpace(Strict):
    family: Literal["bert"] = "bert"  # the family of the `student:` axes (BERT slices)
    student: StudentSpace
    # other student families searched on the same front (nas/students/): {textcnn: {emb: [...], ...}, bilstm: ...}
    families: FamiliesSpace = FamiliesSpace()
    assistant: StudentSpace | None = None
    distill: DistillDefaults = DistillDefaults()

    def other_families(self) -> dict[str, BaseModel]:
        """{family: its space} of the non-bert families this space searches."""
        return {name: sub for name in FAMILY_SPACES if (sub := getattr(self.families, name)) is not None}

    def distill_for(self, family: str) -> DistillDefaults:
        """The distillation settings of a family's students: its own where the space gives them."""
        sub = self.other_families().get(family)
        return sub.distill if sub is not None and sub.distill is not None else self.distill


def search_space_path(name: str) -> pathlib.Path:
    """A name in search_spaces/, or a path: confined like dataset paths (no `..`; with $NAS_DATA_ROOT set, inside it
    or search_spaces/), checked before the file is opened."""
    import os

    from nas.paths import confined_path

    p = pathlib.Path(name)
    if ".." in p.parts:
        raise SpecError("search_space", f"'..' is not allowed in a path; found {name!r}")
    if not (p.suffix in (".yaml", ".yml") or p.exists()):
        return SEARCH_SPACE_DIR / f"{name}.yaml"
    resolved = p.expanduser().resolve()
    if os.environ.get("NAS_DATA_ROOT") and SEARCH_SPACE_DIR.resolve() not in resolved.parents:
        return confined_path(p, "search_space", "NAS_DATA_ROOT")
    return resolved


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
            fam = TEACHER_FAMILIES[teacher_config.get("model_type", "bert")]()
            for axis, limit in fam.shape_limits(teacher_config).items():
                for x in getattr(sub, axis):
                    if x > limit:
                        raise SpecError(f"search_space.{part}.{axis}", f"{x} is larger than the teacher's {limit}")
            for h in sub.hidden:
                why = fam.hidden_refused(teacher_config, h)
                if why:
                    raise SpecError(f"search_space.{part}.hidden", why)
    check_sliced_families(space, teacher_config)
    return space


def check_sliced_families(space: SearchSpace, teacher_config: dict | None) -> None:
    """A family whose axes slice the source (albert: hidden, heads, ffn) stays within it; hidden divisible by heads."""
    for name, sub in space.other_families().items():
        axes = SLICED.get(name)
        if not axes:
            continue
        if "hidden" in axes and "heads" in axes:
            for h in sub.hidden:
                if not any(h % a == 0 for a in sub.heads):
                    raise SpecError(f"search_space.families.{name}.hidden",
                                    f"{h} is not divisible by any head count in {sub.heads}")
        if teacher_config:
            limits = TEACHER_FAMILIES[teacher_config.get("model_type", "bert")]().shape_limits(teacher_config)
            for axis, of in axes.items():
                for x in getattr(sub, axis):
                    if x > limits[of]:
                        raise SpecError(f"search_space.families.{name}.{axis}",
                                        f"{x} is larger than the source's {limits[of]}")
