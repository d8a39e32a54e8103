"""Winner -> a directory a user can deploy: config.yaml (shape, distillation settings, measured figures, provenance, the
formats and their sizes), a `save_pretrained` model with its tokenizer, ONNX fp32 and int8 beside their tokenizer
(nas/results/formats.py), and a short model card."""

from __future__ import annotations

import datetime as dt
import pathlib
import shutil

import yaml

from nas import __version__
from nas.paths import confined_path
from nas.results.formats import FORMATS, size_mb, write_onnx
from nas.spec.errors import SpecError
from nas.store.records import metric_value
from nas.store.store import Store


def export_trial(store: Store, job_id: int, trial_number: int, out_dir: str | pathlib.Path,
                 formats: tuple[str, ...] = FORMATS) -> pathlib.Path:
    """Trial `trial_number` of job `job_id` in `out_dir` (created; must be empty or absent), in `formats` (a student:
    hf always, onnx, int8; a TF-IDF reference: its joblib file)."""
    job = store.get_job(job_id)
    if job is None:
        raise SpecError("JOB", f"no job {job_id} in {store.url}")
    trial = store.get_trial_by_number(job_id, trial_number)
    if trial is None:
        raise SpecError("--trial", f"job {job_id} has no trial {trial_number}")
    if trial["state"] != "COMPLETE":
        raise SpecError("--trial", f"trial {trial_number} is {trial['state']}, only COMPLETE trials can be exported")
    sk = [a["path"] for a in trial["artefacts"] if a["kind"] == "sklearn"]
    if sk:
        return _export_sklearn(store, job, trial, sk[-1], out_dir)
    models = [a["path"] for a in trial["artefacts"] if a["kind"] in ("model", "teacher")]
    # a proxy-only point is sliced from the supernet its proxy was read from (a second round has its own)
    supernets = ([a["path"] for a in trial["artefacts"] if a["kind"] == "proxy_source"]
                 or [a["path"] for a in store.job_artefacts(job_id, "supernet")])
    if (not models or not pathlib.Path(models[-1]).is_dir()) and not (supernets and pathlib.Path(supernets[-1]).is_dir()):
        raise SpecError("--trial", f"trial {trial_number} has no saved model on this machine")
    out = _output_dir(out_dir)
    if models and pathlib.Path(models[-1]).is_dir():
        shutil.copytree(models[-1], out / "model")
    else:  # a proxy-only point: its weights are the supernet's slice, extracted now (identical outputs)
        from transformers import AutoTokenizer

        from nas.teachers import load_pretrained

        from nas.students.bert_slice import extract_subnet
        from nas.students.shape import Shape

        sub = extract_subnet(load_pretrained(supernets[-1]),
                             Shape.from_dict(trial["config"]["shape"]))
        sub.config.architectures = [type(sub).__name__]
        sub.save_pretrained(out / "model")
        AutoTokenizer.from_pretrained(supernets[-1]).save_pretrained(out / "model")
    spec = job["spec"]
    lat = trial["latency"][-1] if trial["latency"] else None
    from nas.students.small import is_small

    sizes = {"native" if is_small(out / "model") else "hf": size_mb(out / "model" / "model.safetensors")}
    if "onnx" in formats or "int8" in formats:
        sizes.update(write_onnx(out, int8="int8" in formats))
    id2label = yaml.safe_load((out / "model" / "config.json").read_text()).get("id2label") or {}
    card = {
        "job": {"id": job_id, "name": job["name"], "storage": _safe_url(store.url)},
        "trial": {"number": trial_number, "kind": trial["kind"], "state": trial["state"]},
        "shape": trial["config"].get("shape"),
        "labels": [id2label[k] for k in sorted(id2label, key=int)] or None,
        "formats": sizes,  # MB on disk
        "distillation": trial["config"].get("distill"),
        "training_steps": trial["config"].get("steps"),
        "metrics": [{k: m[k] for k in ("name", "value", "split", "source")} for m in trial["metrics"]],
        "latency": None if lat is None else {k: lat[k] for k in ("device", "runtime", "dtype", "batch", "seq_len", "threads",
                                                                  "n", "p50_ms", "p90_ms", "mean_ms", "cv", "fingerprint")},
        "provenance": {"teacher": spec["teacher"], "dataset": spec["dataset"], "task": spec["task"], "seed": spec["seed"],
                       "max_seq_len": spec["budgets"]["max_seq_len"], "exported_at": dt.datetime.now(dt.timezone.utc).isoformat(),
                       "nas_version": __version__},
        "spec": spec,
    }
    (out / "config.yaml").write_text(yaml.safe_dump(card, sort_keys=False))
    (out / "README.md").write_text(_model_card(card, trial))
    return out


def _output_dir(out_dir) -> pathlib.Path:
    """The export directory, created: confined (no `..`, inside $NAS_EXPORT_ROOT when set), empty or absent."""
    out = confined_path(out_dir, "--out", "NAS_EXPORT_ROOT")
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise SpecError("--out", f"{out} exists and is not an empty directory")
    out.mkdir(parents=True, exist_ok=True)
    return out


def _export_sklearn(store: Store, job: dict, trial: dict, path: str, out_dir) -> pathlib.Path:
    """A scikit-learn reference (TF-IDF + logistic regression): the joblib file (with the scikit-learn version it was
    saved with) and a config.yaml card."""
    import sklearn

    src = pathlib.Path(path)
    if not src.is_file():
        raise SpecError("--trial", f"trial {trial['number']} has no saved model on this machine ({src})")
    out = _output_dir(out_dir)
    shutil.copy2(src, out / "model.joblib")
    lat = trial["latency"][-1] if trial["latency"] else None
    card = {
        "job": {"id": job["id"], "name": job["name"], "storage": _safe_url(store.url)},
        "trial": {"number": trial["number"], "kind": trial["kind"], "state": trial["state"]},
        "reference": trial["config"], "sklearn": sklearn.__version__, "formats": {"sklearn": size_mb(out / "model.joblib")},
        "metrics": [{k: m[k] for k in ("name", "value", "split", "source")} for m in trial["metrics"]],
        "latency": None if lat is None else {k: lat[k] for k in ("device", "runtime", "batch", "seq_len", "threads", "n",
                                                                  "p50_ms", "p90_ms", "cv", "fingerprint")},
        "exported_by": f"nas {__version__}", "spec": job["spec"],
    }
    (out / "config.yaml").write_text(yaml.safe_dump(card, sort_keys=False))
    (out / "README.md").write_text(
        f"# Reference model {trial['config'].get('name')}: job {job['id']} trial {trial['number']}\n\n"
        "```python\nimport joblib\nbundle = joblib.load('model.joblib')   # {'model': sklearn Pipeline, 'sklearn': version}\n"
        "bundle['model'].predict(['some text'])\n```\n\nLoad it with the scikit-learn version in config.yaml.\n")
    return out


def _safe_url(url: str) -> str:
    from sqlalchemy.engine import make_url

    return make_url(url).render_as_string(hide_password=True)


def _model_card(card: dict, trial: dict) -> str:
    acc = metric_value(trial, "accuracy", "dev")
    lat = card["latency"] or {}
    s = card["shape"] or {}
    return (
        f"# Distilled student: job {card['job']['id']} trial {card['trial']['number']}\n\n"
        f"Shape: {s.get('layers')} layers, hidden {s.get('hidden')}, {s.get('heads')} heads, FFN {s.get('ffn')}.\n\n"
        f"Dev accuracy {acc:.4f}; p50 {lat.get('p50_ms', float('nan')):.3f} ms, p90 {lat.get('p90_ms', float('nan')):.3f} ms "
        f"({lat.get('device')}, {lat.get('dtype')}, batch {lat.get('batch')}, seq {lat.get('seq_len')}, "
        f"{lat.get('threads')} threads) on {lat.get('fingerprint', {}).get('cpu')}.\n\n"
        "```python\nfrom transformers import AutoModelForSequenceClassification, AutoTokenizer\n"
        "model = AutoModelForSequenceClassification.from_pretrained('model')\n"
        "tokenizer = AutoTokenizer.from_pretrained('model')\n```\n\n"
        f"Teacher: {card['provenance']['teacher']}; dataset: {card['provenance']['dataset']}; see config.yaml for everything.\n"
    )


def export_dev_split(out_dir: str | pathlib.Path):
    """The raw dev texts and labels (a numpy array) of the job an export came from, rebuilt from the provenance in
    its config.yaml."""
    import numpy as np

    from nas.data import load_dataset, split_indices
    from nas.spec.job import parse_spec

    spec = parse_spec(yaml.safe_load((pathlib.Path(out_dir) / "config.yaml").read_text())["spec"])
    ds = load_dataset(spec.dataset, spec.task, spec.seed)
    dev = split_indices(ds.labels, spec.seed)["dev"]
    return [ds.texts[i] for i in dev], np.asarray(ds.labels)[dev]


def evaluate_export(out_dir: str | pathlib.Path, fmt: str | None = None) -> dict:
    """Load an exported model the way a user would (transformers, ONNX Runtime or joblib: format `fmt`, default the
    first the export holds) and score it on the job's dev split, rebuilt from the provenance in config.yaml, from raw
    text. Returns {"format", "dev_accuracy", "stored_dev_accuracy", "abs_diff"}."""
    from nas.results.formats import formats_of, predictor

    out = pathlib.Path(out_dir)
    card = yaml.safe_load((out / "config.yaml").read_text())
    texts, labels = export_dev_split(out)
    acc = float((predictor(out, fmt)(texts).argmax(-1) == labels).mean())
    dev_acc = [m for m in card["metrics"] if m["name"] == "accuracy" and m["split"] == "dev"]
    final = [m for m in dev_acc if m["source"] == "final"]
    # a probe proxy scored a classifier the export does not carry: its weights reproduce the inherited head's figure
    head = [m for m in card["metrics"] if m["name"] == "head_accuracy" and m["split"] == "dev"]
    stored = (final or head or dev_acc or [{"value": None}])[-1]["value"]
    return {"format": fmt or formats_of(out)[0], "dev_accuracy": acc,
            "stored_dev_accuracy": stored, "abs_diff": None if stored is None else abs(acc - stored)}
