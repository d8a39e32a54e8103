"""Reference points on every front: what a user could deploy instead of a distilled student.

- `teacher`: the (fine-tuned) teacher itself, always on.
- `tfidf-linear`: scikit-learn TF-IDF (word 1–2-grams, sublinear tf) + logistic regression, C chosen on dev.
- `model: PATH`: the user's current production model, any local Hugging Face sequence-classification directory.

Every reference is scored on dev and test and timed end to end from raw text to scores (tokenisation or vectorisation
included), with the same stopping rule, threads, batch and sequence length as the students, in the node's exclusive
latency slot. Students are timed on token ids; `tokenizer_p50_ms` (the job tokenizer's own time on the same texts,
stored on the teacher reference) is what a student adds end to end, and dominance statements use it.
"""

from __future__ import annotations

import pathlib
import time
from typing import Callable

import numpy as np

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


def text_batches(texts: list[str], batch: int, n: int = 64) -> list[list[str]]:
    """`n` batches of real texts (cycled), so that end-to-end timings see real lengths and vocabulary."""
    out, i = [], 0
    for _ in range(n):
        out.append([texts[(i + j) % len(texts)] for j in range(batch)])
        i += batch
    return out


def measure_text_latency(predict: Callable[[list[str]], object], texts: list[str], settings) -> dict:
    """End-to-end latency of `predict(list of raw texts)` with the students' protocol (warm-up, stopping rule, threads,
    batch), in the exclusive latency slot. Returns a measurement row with runtime `text-e2e`."""
    import torch

    from nas.latency.measure import _row, timed_runs
    from nas.latency.slot import exclusive_measurement

    batches = text_batches(texts, settings.batch)
    pos = [0]

    def once():
        predict(batches[pos[0] % len(batches)])
        pos[0] += 1

    prev = torch.get_num_threads()
    torch.set_num_threads(settings.threads)
    try:
        with exclusive_measurement():
            samples = timed_runs(once, settings)
    finally:
        torch.set_num_threads(prev)
    row = _row(settings, "cpu", samples)
    row["runtime"] = "text-e2e"
    return row


def hf_predictor(model, tokenizer, seq_len: int) -> Callable[[list[str]], object]:
    """Raw texts -> logits through the model's own tokenizer, padded to the job's sequence length like the students."""
    import torch

    model = model.eval()

    def predict(texts: list[str]):
        enc = tokenizer(texts, truncation=True, max_length=seq_len, padding="max_length", return_tensors="pt")
        with torch.inference_mode():
            return model(**enc).logits

    return predict


def tokenizer_only(tokenizer, seq_len: int) -> Callable[[list[str]], object]:
    return lambda texts: tokenizer(texts, truncation=True, max_length=seq_len, padding="max_length", return_tensors="pt")


def sklearn_predictor(pipe) -> Callable[[list[str]], object]:
    return pipe.predict_proba


def dominance(front: list[dict], ref: dict, student_overhead_ms: float = 0.0) -> int:
    """How many front points `ref` dominates: at least as good on the metric and at least as fast end to end (the
    student's latency plus `student_overhead_ms`), strictly better on one."""
    n = 0
    for p in front:
        lat = p["latency_ms"] + student_overhead_ms
        if ref["metric"] >= p["metric"] and ref["latency_ms"] <= lat and (ref["metric"] > p["metric"] or ref["latency_ms"] < lat):
            n += 1
    return n


def save_sklearn(pipe, path: str | pathlib.Path) -> pathlib.Path:
    import joblib
    import sklearn

    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    joblib.dump({"model": pipe, "sklearn": sklearn.__version__}, path)
    return path


__all__ = ["fit_tfidf", "measure_text_latency", "hf_predictor", "tokenizer_only", "sklearn_predictor", "dominance",
           "save_sklearn", "text_batches"]
