"""User-supplied paths confined to where they belong: dataset files under $NAS_DATA_ROOT, export directories under
$NAS_EXPORT_ROOT (a shared service sets both; unset, a local user may read and write where their own account can).
A path that climbs out with `..` is refused everywhere: nobody needs it, and it is how a hostile spec escapes a root.
And `save_atomic`: every cache and checkpoint file is written whole or not at all."""

from __future__ import annotations

import os
import pathlib

from nas.spec.errors import SpecError


def confined_path(path_text: str | os.PathLike, field: str, root_var: str) -> pathlib.Path:
    """The resolved path, or SpecError(field) if it contains `..` or resolves (symlinks followed) outside $root_var."""
    raw = pathlib.Path(path_text).expanduser()
    if ".." in raw.parts:
        raise SpecError(field, f"'..' is not allowed in a path; found {str(path_text)!r}")
    resolved = raw.resolve()
    root_text = os.environ.get(root_var)
    if root_text:
        root = pathlib.Path(root_text).expanduser().resolve()
        if resolved != root and root not in resolved.parents:
            raise SpecError(field, f"{resolved} is outside {root_var} ({root})")
    return resolved


def save_atomic(obj, path: str | os.PathLike) -> pathlib.Path:
    """`torch.save(obj)` to a temporary file beside `path`, then renamed over it: a killed process never leaves a torn
    cache or checkpoint, and readers see the old file or the new one."""
    import torch

    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)
    return path


__all__ = ["confined_path", "save_atomic"]
