"""An auxiliary teacher that is not a network: gradient-boosted trees on simple lexical features, fitted in the job.

Tencent's query-doc distillation added a relevance loss against such a model beside the BERT teacher's soft targets.
For pairs the features are query/document overlap statistics (counts, Jaccard, IDF-weighted overlap, TF-IDF cosine,
lengths); for single texts a 64-dimensional LSA projection of TF-IDF. Its probabilities for every row are cached
beside the teacher; rows of train get out-of-fold probabilities (3-fold), so the student never learns from trees that
saw the row's own label."""

from __future__ import annotations

import hashlib
import json
import math
import pathlib
import re

import numpy as np

from nas.paths import save_atomic

WORD = re.compile(r"\w+")


def _tokens(text: str) -> list[str]:
    return WORD.findall(text.lower())


def pair_features(pairs: list[tuple[str, str]], idf: dict[str, float] | None = None) -> np.ndarray:
    """(n, 8) features of (query, doc) pairs: overlap count, overlap / |q|, Jaccard, IDF-weighted overlap share,
    overlap with the doc's first 50 tokens / |q|, TF-IDF-free cosine of binary bags, |q|, log(1 + |d|)."""
    docs = [set(_tokens(d)) for _, d in pairs]
    if idf is None:
        n = len(docs)
        df: dict[str, int] = {}
        for d in docs:
            for w in d:
                df[w] = df.get(w, 0) + 1
        idf = {w: math.log((n + 1) / (c + 1)) + 1 for w, c in df.items()}
    rows = []
    for (q, d_text), d in zip(pairs, docs):
        qt = set(_tokens(q))
        head = set(_tokens(d_text)[:50])
        ov = qt & d
        q_idf = sum(idf.get(w, 1.0) for w in qt) or 1.0
        rows.append([len(ov), len(ov) / max(1, len(qt)), len(ov) / max(1, len(qt | d)),
                     sum(idf.get(w, 1.0) for w in ov) / q_idf, len(qt & head) / max(1, len(qt)),
                     len(ov) / math.sqrt(max(1, len(qt)) * max(1, len(d))), len(qt), math.log1p(len(d))])
    return np.asarray(rows, dtype=np.float64)


def text_features(texts: list[str], train_rows: np.ndarray, seed: int) -> np.ndarray:
    from sklearn.decomposition import TruncatedSVD
    from sklearn.feature_extraction.text import TfidfVectorizer

    vec = TfidfVectorizer(ngram_range=(1, 2), min_df=2, max_features=50000, sublinear_tf=True)
    vec.fit([texts[i] for i in train_rows])
    x = vec.transform(texts)
    k = max(2, min(64, x.shape[1] - 1))
    return TruncatedSVD(n_components=k, random_state=seed).fit(x[train_rows]).transform(x)


def fit_aux_probs(texts: list, labels: np.ndarray, train_rows: np.ndarray, task: str, seed: int = 0) -> np.ndarray:
    """(n, classes) probabilities of a HistGradientBoosting classifier on lexical features; out-of-fold on train."""
    from sklearn.ensemble import HistGradientBoostingClassifier
    from sklearn.model_selection import StratifiedKFold

    x = pair_features(texts) if task == "pair" else text_features(texts, train_rows, seed)
    classes = int(labels.max()) + 1
    probs = np.zeros((len(labels), classes))

    def model():
        return HistGradientBoostingClassifier(max_iter=200, learning_rate=0.1, random_state=seed)

    full = model().fit(x[train_rows], labels[train_rows])
    probs[:, full.classes_] = full.predict_proba(x)
    folds = StratifiedKFold(n_splits=3, shuffle=True, random_state=seed)
    for fit_part, held in folds.split(train_rows, labels[train_rows]):
        m = model().fit(x[train_rows[fit_part]], labels[train_rows[fit_part]])
        p = np.zeros((len(held), classes))
        p[:, m.classes_] = m.predict_proba(x[train_rows[held]])
        probs[train_rows[held]] = p
    return probs


def aux_probs_path(dataset, train_idx, dev_idx, seed: int, log=print) -> pathlib.Path:
    """Fit (or reuse) the auxiliary teacher for this dataset and train split; a float32 tensor file (n, classes)."""
    import torch

    from nas.data import cache_dir
    from nas.distill.evaluate import scores

    train = np.asarray(train_idx)
    key = hashlib.sha256(json.dumps([dataset.fingerprint(), seed, hashlib.sha256(train.tobytes()).hexdigest()])
                         .encode()).hexdigest()[:16]
    path = cache_dir() / "aux" / f"gbdt-{key}.pt"
    if path.is_file():
        return path
    probs = fit_aux_probs(dataset.texts, np.asarray(dataset.labels), train, dataset.task, seed)
    dev = np.asarray(dev_idx)
    acc = scores(torch.as_tensor(probs[dev], device="cpu"),
                 torch.as_tensor(np.asarray(dataset.labels)[dev], device="cpu"))["accuracy"]
    log(f"auxiliary teacher (gradient-boosted trees on lexical features): dev accuracy {acc:.4f}")
    save_atomic(torch.as_tensor(probs, dtype=torch.float32, device="cpu"), path)
    return path
