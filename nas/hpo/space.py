"""Hyperparameter spaces (`search_spaces/hpo/*.yaml`): the parameter table, checked with field paths, and the
space's default point."""

from __future__ import annotations

import pathlib

import numpy as np

from nas.distill.losses import SOFT_LOSSES
from nas.spec.errors import SpecError, read_yaml
from nas.spec.space import SEARCH_SPACE_DIR

PARAM_TYPES = ("loguniform", "uniform", "quniform", "choice")
HPO_SPACE_DIR = SEARCH_SPACE_DIR / "hpo"
KNOWN_PARAMS = ("lr", "alpha_soft", "beta_hard", "temperature", "warmup_ratio", "batch_size", "weight_decay",
                "soft_loss", "hidden_weight", "attention_weight", "relevance_weight", "hinge_weight", "hinge_margin")


def load_hpo_space(name: str) -> dict[str, dict]:
    """`search_spaces/hpo/<name>.yaml` (or a path): {params: {name: {type, low, high[, q] | values}}}, checked with
    field paths (`hpo.space.params.lr.low`)."""
    p = pathlib.Path(name)
    path = p if (p.suffix in (".yaml", ".yml") or p.exists()) else HPO_SPACE_DIR / f"{name}.yaml"
    if not path.is_file():
        known = ", ".join(sorted(x.stem for x in HPO_SPACE_DIR.glob("*.yaml")))
        raise SpecError("hpo.space", f"no such hyperparameter space {name!r} (known: {known}; or a YAML path)")
    data = read_yaml(path, "hpo.space")
    if not isinstance(data, dict) or not isinstance(data.get("params"), dict) or not data["params"]:
        raise SpecError("hpo.space.params", f"{path} must hold `params:`, a non-empty mapping of parameter tables")
    out = {}
    for name_, p_ in data["params"].items():
        f = f"hpo.space.params.{name_}"
        if name_ not in KNOWN_PARAMS:
            raise SpecError(f, f"unknown hyperparameter; known: {', '.join(KNOWN_PARAMS)}")
        if not isinstance(p_, dict) or p_.get("type") not in PARAM_TYPES:
            raise SpecError(f + ".type", f"expected one of {', '.join(PARAM_TYPES)}; found {p_!r}")
        t = p_["type"]
        if t == "choice":
            vals = p_.get("values")
            if not isinstance(vals, list) or not vals:
                raise SpecError(f + ".values", "a choice needs a non-empty list of values")
            if name_ == "soft_loss" and any(v not in SOFT_LOSSES for v in vals):
                raise SpecError(f + ".values", f"soft losses are {', '.join(SOFT_LOSSES)}; found {vals}")
            out[name_] = {"type": t, "values": vals}
            continue
        lo, hi = p_.get("low"), p_.get("high")
        if not all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in (lo, hi)) or not lo < hi:
            raise SpecError(f + ".low", f"needs numbers low < high; found low={lo!r} high={hi!r}")
        if t == "loguniform" and lo <= 0:
            raise SpecError(f + ".low", f"loguniform needs low > 0; found {lo}")
        entry = {"type": t, "low": float(lo), "high": float(hi)}
        if t == "quniform":
            q = p_.get("q")
            if not isinstance(q, (int, float)) or q <= 0:
                raise SpecError(f + ".q", f"quniform needs a step q > 0; found {q!r}")
            entry["q"] = float(q)
        out[name_] = entry
    return out


def default_point(params: dict[str, dict], defaults: dict) -> dict:
    """The space's own defaults (search space `distill:` block) as a point of the HPO space, clipped into it."""
    point = {}
    for name, p in params.items():
        d = defaults.get(name, 0.0 if name.endswith("_weight") else None)
        if p["type"] == "choice":
            point[name] = d if d in p["values"] else p["values"][0]
        else:
            point[name] = float(np.clip(d if d is not None else p["low"], p["low"], p["high"]))
    return point
