"""What a user error is: `SpecError(field, message)`, how a pydantic error becomes one (`explain`), and reading
YAML with the file's own line in the message."""

from __future__ import annotations

import json
import pathlib
from typing import Any

import yaml
from pydantic import ValidationError


class SpecError(Exception):
    """A user error in a spec, a search space or a dataset: `field` says where, `message` what was expected and found."""

    def __init__(self, field: str, message: str):
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


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


def _key_paths(node, path=(), visited=None):
    """Each mapping node of a composed YAML tree with the path of keys that leads to it, each node once: an alias is
    the node it names, so a "billion laughs" document (aliases of aliases) is walked in its own size, not expanded."""
    visited = set() if visited is None else visited
    if id(node) in visited:
        return
    visited.add(id(node))
    if isinstance(node, yaml.MappingNode):
        yield node, path
        for k, v in node.value:
            yield from _key_paths(v, (*path, k.value), visited)
    elif isinstance(node, yaml.SequenceNode):
        for i, v in enumerate(node.value):
            yield from _key_paths(v, (*path, i), visited)


def load_yaml_text(text: str, field: str = "") -> Any:
    """YAML text as Python data; a key given twice in one mapping is a SpecError naming the key, its path and both
    lines."""
    root = yaml.compose(text, Loader=yaml.SafeLoader)
    if root is None:
        return None
    for node, path in _key_paths(root):
        seen: dict = {}
        for k, _ in node.value:
            if k.value in seen:
                where = ".".join(map(str, (*([field] if field else []), *path, k.value)))
                raise SpecError(where, f"the key {k.value!r} appears twice (lines {seen[k.value] + 1} and "
                                f"{k.start_mark.line + 1}); keep one")
            seen[k.value] = k.start_mark.line
    return yaml.safe_load(text)


def read_yaml(path: str | pathlib.Path, field: str) -> Any:
    p = pathlib.Path(path)
    if not p.is_file():
        raise SpecError(field, f"file not found: {p}")
    try:
        return load_yaml_text(p.read_text(), "" if field.startswith("(") else field)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark else ""
        raise SpecError(field, f"not valid YAML{where}: {getattr(exc, 'problem', exc)}") from None
    except UnicodeDecodeError:
        raise SpecError(field, f"not a text file: {p}") from None
