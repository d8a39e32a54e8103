"""The reference stage: the teacher, TF-IDF + logistic regression and the user's own models, scored on dev and test and
timed end to end from raw text, as `reference` trials."""

from __future__ import annotations

import pathlib
import time
from typing import Callable

import numpy as np

from nas.context import JobContext
from nas.latency.text import measure_text_latency, runtime_predictor, sklearn_predictor, tokenizer_only
from nas.spec.errors import SpecError
from nas.spec.job import JobSpec
from nas.store.store import Store


def reference_name(ref) -> str:
    return ref if isinstance(ref, str) else (ref.name or pathlib.Path(ref.model).name)


def check_reference_model(path: str, field: str) -> None:
    import json as _json

    p = pathlib.Path(path).expanduser()
    if not p.is_dir():
        raise SpecError(field, f"{path} is not a directory (a local Hugging Face model directory is expected)")
    cfg = p / "config.json"
    if not cfg.is_file():
        raise SpecError(field, f"{path} has no config.json")
    try:
        archs = _json.loads(cfg.read_text()).get("architectures") or []
    except ValueError as exc:
        raise SpecError(field, f"{cfg} is not valid JSON: {exc}") from None
    if not any(str(a).endswith("ForSequenceClassification") for a in archs):
        raise SpecError(field, f"{path} is not a sequence-classification model (architectures {archs})")
    if not any((p / t).is_file() for t in ("tokenizer.json", "vocab.txt", "tokenizer_config.json")):
        raise SpecError(field, f"{path} has no tokenizer files")


def check(spec: JobSpec, teacher_config: dict) -> None:
    """Each user model is a local sequence-classification directory with a tokenizer; names are unique, not 'teacher'."""
    for i, ref in enumerate(spec.references):
        if not isinstance(ref, str):
            check_reference_model(ref.model, f"references.{i}.model")
    names = [reference_name(r) for r in spec.references]
    if len(set(names)) != len(names) or "teacher" in names:
        raise SpecError("references", f"reference names must be unique and not 'teacher': {names}")


def run(ctx: JobContext, store: Store) -> None:
    """The teacher, TF-IDF + logistic regression and the user's models as `reference` trials, timed end to end."""
    from nas.latency.measure import target_settings

    spec, ds = ctx.spec, ctx.dataset
    done = {t["config"].get("name") for t in store.trials(ctx.job_id, kind="reference", state="COMPLETE")}
    texts = [t if isinstance(t, str) else f"{t[0]} [SEP] {t[1]}" for t in ds.texts]
    # timed on the first (objective) deployment target only: references are compared with the front it draws
    timing = (target_settings(spec.latency)[0], [texts[i] for i in ctx.dev_idx])
    splits = {"train": np.asarray(ctx.train_idx), "dev": np.asarray(ctx.dev_idx), "test": np.asarray(ctx.test_idx)}
    store.set_job_stage(ctx.job_id, "references")
    if "teacher" not in done:
        teacher_reference(ctx, store, timing)
    for ref in spec.references:
        name = reference_name(ref)
        if name in done:
            continue
        if ref == "tfidf-linear":
            pipe, info = fit_tfidf(texts, np.asarray(ds.labels), splits, spec.seed)
            path = save_sklearn(pipe, pathlib.Path(ctx.artefact_dir) / f"reference-{name}" / "model.joblib")
            lat = measure_text_latency(sklearn_predictor(pipe), timing[1], timing[0])
            record(ctx, store, name, "tfidf-linear", info, lat, {"C": info["C"]}, artefact=("sklearn", path))
        else:
            model_reference(ctx, store, ref, name, splits, timing)


def record(ctx: JobContext, store: Store, name: str, kind: str, info: dict, lat: dict, extra: dict | None = None,
           artefact=None) -> None:
    """One reference as a COMPLETE trial: its dev/test metrics, its end-to-end latency, its model's path."""
    metric = ctx.spec.objectives.metric
    t = store.add_trial(ctx.job_id, "reference", {"name": name, "type": kind, **(extra or {})}, state="RUNNING")
    store.start_trial(t["id"])
    for split in ("dev", "test"):
        for m, value in info[split].items():
            store.add_metric(t["id"], m, value, split, "final")
    for m, value in (info.get("metrics") or {}).items():
        store.add_metric(t["id"], m, value, "dev", "final")
    store.add_latency(t["id"], f"reference:{name}", lat)
    if artefact:
        store.add_artefact(ctx.job_id, t["id"], artefact[0], str(artefact[1]))
    store.finish_trial(t["id"], "COMPLETE")
    ctx.say(f"reference {name}: dev {metric} {info['dev'][metric]:.4f}, test {info['test'][metric]:.4f}, "
            f"p50 {lat['p50_ms']:.3f} ms end to end")


def teacher_reference(ctx: JobContext, store: Store, timing: tuple) -> None:
    """The teacher timed end to end from raw text in the objective target's runtime, and its tokenizer alone (the overhead
    every student shares)."""
    from transformers import AutoTokenizer

    from nas.teachers.load import load_teacher

    settings, dev_texts = timing
    tok = AutoTokenizer.from_pretrained(ctx.teacher["dir"])
    teacher = load_teacher(ctx.teacher)
    seq = settings.seq_len
    tok_lat = measure_text_latency(tokenizer_only(tok, seq), dev_texts, settings)
    lat = measure_text_latency(runtime_predictor(teacher, tok, settings), dev_texts, settings)
    info = {"dev": ctx.teacher["dev"], "test": ctx.teacher["test"],
            "metrics": {"tokenizer_p50_ms": tok_lat["p50_ms"], "tokenizer_p90_ms": tok_lat["p90_ms"]}}
    record(ctx, store, "teacher", "teacher", info, lat, artefact=("teacher", ctx.teacher["dir"]))


def model_reference(ctx: JobContext, store: Store, ref, name: str, splits: dict, timing: tuple) -> None:
    """The user's own model: scored on dev and test from its own tokenizer, timed end to end."""
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from nas.compute import on_host
    from nas.data import encode
    from nas.distill.evaluate import predict_logits, scores

    ds, max_len = ctx.dataset, ctx.spec.budgets.max_seq_len
    path = str(pathlib.Path(ref.model).expanduser().resolve())
    tok = AutoTokenizer.from_pretrained(path)
    with on_host():
        model = AutoModelForSequenceClassification.from_pretrained(path).eval()
    if model.config.num_labels != ds.num_labels:
        raise SpecError("references", f"{path} has {model.config.num_labels} labels, the dataset {ds.num_labels}")
    tensors = encode(tok, ds.texts, max_len, pair=ds.task == "pair")
    labels = torch.as_tensor(np.asarray(ds.labels), device="cpu")
    info = {}
    for split in ("dev", "test"):
        idx = torch.as_tensor(splits[split], device="cpu")
        info[split] = scores(predict_logits(model, {k: v[idx] for k, v in tensors.items()}), labels[idx])
    lat = measure_text_latency(runtime_predictor(model, tok, timing[0]), timing[1], timing[0])
    record(ctx, store, name, "model", info, lat, {"path": path}, artefact=("model", path))


C_GRID = (0.25, 1.0, 4.0, 16.0, 64.0)


def _accuracy_f1(pred: np.ndarray, y: np.ndarray) -> dict[str, float]:
    from sklearn.metrics import accuracy_score, f1_score

    return {"accuracy": float(accuracy_score(y, pred)), "f1_macro": float(f1_score(y, pred, average="macro"))}


def fit_tfidf(texts: list[str], labels: np.ndarray, splits: dict, seed: int = 0,
              preprocessor: Callable[[str], str] | None = None) -> tuple[object, dict]:
    """TF-IDF + logistic regression fitted on train, C chosen on dev. Returns (sklearn Pipeline, info with dev/test
    scores, chosen C and fit time)."""
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline

    t0 = time.perf_counter()
    tr, dev, test = (np.asarray(splits[k]) for k in ("train", "dev", "test"))
    x_tr, x_dev, x_test = ([texts[i] for i in idx] for idx in (tr, dev, test))
    best = None
    for c in C_GRID:
        pipe = Pipeline([("tfidf", TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True, min_df=1,
                                                   preprocessor=preprocessor, lowercase=preprocessor is None)),
                         ("clf", LogisticRegression(C=c, max_iter=2000, random_state=seed))])
        pipe.fit(x_tr, labels[tr])
        dev_scores = _accuracy_f1(pipe.predict(x_dev), labels[dev])
        if best is None or dev_scores["accuracy"] > best[1]["accuracy"]:
            best = (pipe, dev_scores, c)
    pipe, dev_scores, c = best
    info = {"dev": dev_scores, "test": _accuracy_f1(pipe.predict(x_test), labels[test]), "C": c,
            "fit_s": time.perf_counter() - t0}
    return pipe, info


def save_sklearn(pipe, path: str | pathlib.Path) -> pathlib.Path:
    import joblib
    import sklearn

    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    joblib.dump({"model": pipe, "sklearn": sklearn.__version__}, path)
    return path
