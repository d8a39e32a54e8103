"""`nas export`, `nas check-export` and `nas predict`: a trial as a deployable directory, checked format by format in
fresh processes, and raw text scored with any of its formats."""

from __future__ import annotations

import json
from typing import Optional

import typer

from nas.ui.base import STORAGE_HELP
from nas.ui.base import open_store as _store
from nas.ui.base import user_error as _user_error


def export(job: int = typer.Argument(..., help="Job id."), trial: int = typer.Option(..., help="Trial number."),
           out: str = typer.Option(..., help="Directory to create (must be empty or absent)."),
           storage: Optional[str] = typer.Option(None, help=STORAGE_HELP),
           formats: str = typer.Option("hf,onnx,int8", help="Comma-separated: hf (save_pretrained, always), onnx "
                                       "(fp32 ONNX + tokenizer), int8 (dynamically quantised ONNX).")):
    """Export a trial: DIR/config.yaml, DIR/model (save_pretrained + tokenizer), DIR/onnx (model.onnx, model.int8.onnx,
    tokenizer), DIR/README.md. A TF-IDF reference exports its joblib file."""
    from nas.results.export import export_trial
    from nas.spec.errors import SpecError

    store = _store(storage)
    try:
        wanted = tuple(f.strip() for f in formats.split(",") if f.strip())
        bad = [f for f in wanted if f not in ("hf", "onnx", "int8")]
        if bad:
            raise SpecError("--formats", f"unknown format {bad[0]!r}; choose from hf, onnx, int8")
        path = export_trial(store, job, trial, out, formats=wanted)
    except SpecError as exc:
        _user_error(exc)
    typer.echo(f"exported job {job} trial {trial} to {path}")
    from nas.results.formats import formats_of

    if "native" in formats_of(path):  # a textcnn / bilstm / boe student: its own loader, or the ONNX files
        typer.echo(f"load it with nas.students.load_student('{path / 'model'}') or score text with `nas predict {path}`")
    else:
        typer.echo(f"load it with AutoModelForSequenceClassification.from_pretrained('{path / 'model'}')")


def check_export(out_dir: str = typer.Argument(..., help="A directory written by `nas export`."),
                 fmt: Optional[str] = typer.Option(None, "--format", help="One format (hf, onnx, int8, sklearn), in "
                                                   "this process; default: each the export holds, each in a fresh "
                                                   "process.")):
    """Reload an export and re-score it from raw text on the job's dev split; compare with the stored dev accuracy.
    Prints one JSON line per format, then a summary line; exit 1 when a format is more than 0.5 points off."""
    import pathlib
    import subprocess
    import sys

    from nas.results.export import evaluate_export
    from nas.results.formats import formats_of
    from nas.spec.errors import SpecError

    if not (pathlib.Path(out_dir) / "config.yaml").is_file():
        _user_error(SpecError("OUT_DIR", f"{out_dir} is not a directory written by `nas export` (no config.yaml)"))
    if fmt is not None:
        if fmt not in formats_of(out_dir):
            _user_error(SpecError("--format", f"{out_dir} holds {', '.join(formats_of(out_dir))}; not {fmt}"))
        typer.echo(json.dumps(evaluate_export(out_dir, fmt)))
        return
    results = {}
    for f in formats_of(out_dir):
        run = subprocess.run([sys.executable, "-m", "nas", "check-export", out_dir, "--format", f],
                             capture_output=True, text=True)
        if run.returncode != 0:
            typer.echo(run.stderr, err=True)
            raise typer.Exit(1)
        results[f] = json.loads(run.stdout.strip().splitlines()[-1])
        typer.echo(json.dumps(results[f]))
    diffs = [r["abs_diff"] for r in results.values() if r["abs_diff"] is not None]
    typer.echo(json.dumps({"formats": results, "abs_diff": max(diffs) if diffs else None}))
    if diffs and max(diffs) > 0.005:
        raise typer.Exit(1)


def predict(out_dir: str = typer.Argument(..., help="A directory written by `nas export`."),
            texts: Optional[list[str]] = typer.Argument(None, help="Texts to score (for a pair task: QUERY<TAB>DOC)."),
            file: Optional[str] = typer.Option(None, help="A file of texts, one per line (pairs: QUERY<TAB>DOC)."),
            fmt: Optional[str] = typer.Option(None, "--format", help="hf, onnx, int8 or sklearn; default: the first the "
                                              "export holds.")):
    """Score raw text with an export: one JSON line per text with the predicted label and the class probabilities."""
    import pathlib

    from nas.results.formats import formats_of, label_names, predictor
    from nas.spec.errors import SpecError

    out = pathlib.Path(out_dir)
    if not (out / "config.yaml").is_file():
        _user_error(SpecError("OUT_DIR", f"{out_dir} is not a directory written by `nas export` (no config.yaml)"))
    items = list(texts or [])
    if file:
        try:
            items += [line.rstrip("\n") for line in pathlib.Path(file).read_text(encoding="utf-8").splitlines()
                      if line.strip()]
        except (OSError, UnicodeDecodeError) as exc:
            _user_error(SpecError("--file", f"cannot read {file} as UTF-8 text: {exc}"))
    if not items:
        _user_error(SpecError("TEXTS", "give texts as arguments or --file FILE"))
    if fmt is not None and fmt not in formats_of(out):
        _user_error(SpecError("--format", f"{out_dir} holds {', '.join(formats_of(out))}; not {fmt}"))
    import yaml

    pair = yaml.safe_load((out / "config.yaml").read_text())["spec"]["task"] == "pair"
    inputs = [tuple(t.split("\t", 1)) if pair else t for t in items]
    probs = predictor(out, fmt)(inputs)
    names = label_names(out)
    for text, p in zip(items, probs):
        k = int(p.argmax())
        typer.echo(json.dumps({"text": text, "label": names[k] if names else k,
                               "probs": [round(float(x), 6) for x in p]}))
