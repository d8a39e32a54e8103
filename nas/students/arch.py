"""The shape of a student of a family other than `bert`: its family's name and one integer per axis of that family
(nas/students/<family>.py names its axes in `AXES`). No torch here: the spec, the search and the store read it without
loading a model. `student_shape(d)` turns any stored shape dict back into a `Shape` (bert) or an `Arch`."""

from __future__ import annotations

from dataclasses import dataclass

# each family's axes, in key order, with the letter its key writes them with (the modules' AXES say what they mean)
AXES: dict[str, dict[str, str]] = {
    "textcnn": {"emb": "E", "channels": "C", "kernels": "K", "mlp": "M"},
    "bilstm": {"emb": "E", "hidden": "H", "layers": "L", "mlp": "M"},
    "boe": {"emb": "E", "ngrams": "N", "mlp": "M"},
    "albert": {"emb": "E", "hidden": "H", "heads": "A", "ffn": "F", "layers": "L"},
}
# the axes that are slices of what students are sliced from (no larger than its own), by family
SLICED = {"albert": {"hidden": "hidden", "heads": "heads", "ffn": "ffn"}}
# an axis that may be 0 (off); every other axis is >= 1
MAY_BE_ZERO = {"mlp"}


@dataclass(frozen=True, order=True)
class Arch:
    family: str
    dims: tuple[tuple[str, int], ...]  # (axis, value) in the family's AXES order

    @classmethod
    def of(cls, family: str, **values: int) -> "Arch":
        if family not in AXES:
            raise ValueError(f"unknown student family {family!r}; known: bert, {', '.join(AXES)}")
        axes = AXES[family]
        missing, extra = set(axes) - set(values), set(values) - set(axes)
        if missing or extra:
            raise ValueError(f"a {family} shape has the axes {', '.join(axes)}; got {', '.join(sorted(values))}")
        return cls(family, tuple((a, int(values[a])) for a in axes))

    def __getitem__(self, axis: str) -> int:
        return dict(self.dims)[axis]

    @property
    def key(self) -> str:
        letters = AXES[self.family]
        return f"{self.family}-" + "-".join(f"{letters[a]}{v}" for a, v in self.dims)

    def as_dict(self) -> dict:
        return {"family": self.family, **dict(self.dims)}

    @classmethod
    def from_dict(cls, d: dict) -> "Arch":
        return cls.of(d["family"], **{k: v for k, v in d.items() if k != "family"})

    def is_valid(self) -> bool:
        ok = all(v >= (0 if a in MAY_BE_ZERO else 1) for a, v in self.dims)
        return ok and (self.family != "albert" or self["hidden"] % self["heads"] == 0)


def family_of(d: dict) -> str:
    """The student family of a stored shape dict (a BERT shape has no `family` key)."""
    return d.get("family", "bert")


def student_shape(d: dict):
    """A stored shape dict as a `Shape` (the bert family) or an `Arch` (any other family)."""
    from nas.students.shape import Shape

    return Shape.from_dict(d) if family_of(d) == "bert" else Arch.from_dict(d)


def shape_from_key(key: str):
    """The inverse of `.key` for every family."""
    from nas.students.shape import Shape

    fam = key.split("-", 1)[0]
    if fam not in AXES:
        return Shape.from_key(key)
    letters = AXES[fam]
    parts = key.split("-")[1:]
    if len(parts) != len(letters) or any(p[:1] != letters[a] or not p[1:].isdigit() for p, a in zip(parts, letters)):
        raise ValueError(f"{key!r} is not a {fam} shape key like {fam}-" + "-".join(f"{x}1" for x in letters.values()))
    return Arch.of(fam, **{a: int(p[1:]) for p, a in zip(parts, letters)})
