"""Datasets, deterministic stratified splits and the tokenised cache, on real data slices."""

from __future__ import annotations

import json
import pathlib

import numpy as np
import pytest
import torch
from conftest import write_csv

from nas.data import SPLIT_FRACTIONS, Dataset, cache_dir, load_dataset, split_indices, stratified_sample, tokenize
from nas.spec.errors import SpecError
from nas.spec.job import DatasetRef

BBC_LABELS = ["business", "entertainment", "politics", "sports", "tech"]


def random_labels(seed: int, n: int, k: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    # uneven class sizes, every class with at least 3 rows
    p = rng.dirichlet(np.ones(k))
    labels = rng.choice(k, size=n, p=p)
    return np.concatenate([np.repeat(np.arange(k), 3), labels])


# -- split_indices -------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("seed", range(8))
def test_split_is_a_stratified_partition(seed):
    labels = random_labels(seed, n=int(200 + 300 * (seed % 3)), k=2 + seed % 5)
    s = split_indices(labels, seed)
    assert set(s) == {"train", "dev", "test"}
    tr, dv, te = s["train"], s["dev"], s["test"]
    for part in (tr, dv, te):
        assert np.all(np.diff(part) > 0)  # sorted, no duplicates
    # disjoint and covering every row exactly once
    both = np.concatenate([tr, dv, te])
    assert len(both) == len(labels)
    assert np.array_equal(np.sort(both), np.arange(len(labels)))
    # every class in every split, with per-class proportions close to 80/10/10
    for c in np.unique(labels):
        n = int(np.sum(labels == c))
        n_tr, n_dv, n_te = (int(np.sum(labels[p] == c)) for p in (tr, dv, te))
        assert min(n_tr, n_dv, n_te) >= 1, (c, n, n_tr, n_dv, n_te)
        assert abs(n_dv - SPLIT_FRACTIONS[1] * n) <= 1
        assert abs(n_te - SPLIT_FRACTIONS[2] * n) <= 1
        assert abs(n_tr - SPLIT_FRACTIONS[0] * n) <= 2
    # overall proportions too
    n = len(labels)
    assert abs(len(dv) / n - 0.1) < 0.02 and abs(len(te) / n - 0.1) < 0.02 and abs(len(tr) / n - 0.8) < 0.04


def test_split_is_deterministic_for_a_seed_and_changes_with_it():
    labels = random_labels(0, 500, 4)
    a, b = split_indices(labels, 7), split_indices(labels.copy(), 7)
    for k in a:
        assert np.array_equal(a[k], b[k])
    c = split_indices(labels, 8)
    assert not np.array_equal(a["dev"], c["dev"])
    assert not np.array_equal(a["test"], c["test"])


def test_split_does_not_modify_labels():
    labels = random_labels(1, 100, 3)
    before = labels.copy()
    split_indices(labels, 0)
    assert np.array_equal(labels, before)


def test_split_of_tiny_classes_puts_one_row_in_each_split():
    labels = np.array([0, 0, 0, 1, 1, 1, 1])
    s = split_indices(labels, 3)
    for part in ("dev", "test"):
        assert sorted(labels[s[part]].tolist()) == [0, 1]
    assert sorted(labels[s["train"]].tolist()) == [0, 1, 1]


def test_split_with_non_contiguous_label_values():
    labels = np.array([5] * 20 + [9] * 30)
    s = split_indices(labels, 0)
    assert sorted(set(labels[s["dev"]])) == [5, 9]
    assert len(s["dev"]) == 2 + 3 and len(s["test"]) == 2 + 3 and len(s["train"]) == 40


# -- stratified_sample ---------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("fraction", [0.01, 0.06, 0.25, 0.5, 1.0])
def test_stratified_sample(fraction):
    labels = random_labels(3, 800, 5)
    idx = stratified_sample(labels, fraction, seed=11)
    assert np.all(np.diff(idx) > 0) and idx.min() >= 0 and idx.max() < len(labels)
    for c in np.unique(labels):
        n = int(np.sum(labels == c))
        assert int(np.sum(labels[idx] == c)) == max(1, int(round(fraction * n)))
    assert np.array_equal(idx, stratified_sample(labels, fraction, seed=11))
    if fraction < 1:
        assert not np.array_equal(idx, stratified_sample(labels, fraction, seed=12))
    else:
        assert np.array_equal(idx, np.arange(len(labels)))


# -- named datasets ------------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def bbc_slice() -> Dataset:
    return load_dataset(DatasetRef(name="bbc-news", max_rows=120), "classification", seed=0)


def test_bbc_news_slice(bbc_slice):
    ds = bbc_slice
    assert ds.name == "bbc-news" and ds.task == "classification"
    assert ds.label_names == BBC_LABELS and ds.num_labels == 5
    assert abs(len(ds.labels) - 120) <= 3 and len(ds.texts) == len(ds.labels)
    assert all(isinstance(t, str) and t.strip() for t in ds.texts)
    counts = np.bincount(ds.labels, minlength=5)
    assert counts.min() >= 15  # stratified: the 5 topics are roughly balanced in BBC News (~17-23%)
    assert ds.meta["max_rows"] == 120
    # the slice is fixed by the seed
    again = load_dataset(DatasetRef(name="bbc-news", max_rows=120), "classification", seed=0)
    assert again.fingerprint() == ds.fingerprint()
    other = load_dataset(DatasetRef(name="bbc-news", max_rows=120), "classification", seed=1)
    assert other.fingerprint() != ds.fingerprint()
    s = split_indices(ds.labels, 0)
    assert all(len(np.unique(ds.labels[s[k]])) == 5 for k in s)


def test_rotten_tomatoes_slice():
    ds = load_dataset(DatasetRef(name="rotten-tomatoes", max_rows=200), "classification", seed=0)
    assert ds.label_names == ["rotten", "fresh"]
    assert abs(len(ds.labels) - 200) <= 2
    counts = np.bincount(ds.labels, minlength=2)
    assert counts.min() >= 60
    assert all(isinstance(t, str) and t == t.strip() and t for t in ds.texts)


def test_bbc_news_pairs_slice():
    ds = load_dataset(DatasetRef(name="bbc-news-pairs", max_rows=100), "pair", seed=0)
    assert ds.task == "pair" and ds.label_names == ["different", "match"]
    assert abs(len(ds.labels) - 100) <= 2
    assert all(isinstance(t, tuple) and len(t) == 2 and t[0] and t[1] for t in ds.texts)
    assert np.bincount(ds.labels).tolist() == [50, 50]


@pytest.mark.parametrize("name, task", [("bbc-news", "pair"), ("rotten-tomatoes", "pair"),
                                        ("bbc-news-pairs", "classification")])
def test_named_dataset_with_the_wrong_task(name, task):
    with pytest.raises(SpecError) as ei:
        load_dataset(DatasetRef(name=name), task)
    assert ei.value.field == "task"


# -- user files ----------------------------------------------------------------------------------------------------------
def small_rows(n: int = 30, labels=("neg", "pos", "neutral")) -> list[list[str]]:
    return [[f"review number {i}, with a comma and \"quotes\"", labels[i % len(labels)]] for i in range(n)]


def test_csv_dataset(tmp_path):
    p = write_csv(tmp_path / "d.csv", ["id", "text", "label"],
                  [[i, t, lab] for i, (t, lab) in enumerate(small_rows(30))] + [[99, "   ", "pos"]])
    ds = load_dataset(DatasetRef(path=str(p)), "classification")
    assert ds.name == "d.csv" and ds.task == "classification"
    assert ds.label_names == ["neg", "pos", "neutral"]  # shortest first, then alphabetical
    assert len(ds.texts) == 30  # the blank row is dropped
    assert ds.texts[0] == 'review number 0, with a comma and "quotes"'
    assert [ds.label_names[i] for i in ds.labels[:3]] == ["neg", "pos", "neutral"]
    assert ds.meta["path"] == str(p.resolve())


def test_rows_with_a_blank_label_are_dropped(tmp_path):
    rows = small_rows(12, labels=("a", "b")) + [[f"unlabelled {i}", " "] for i in range(4)] + [["also unlabelled", ""]]
    ds = load_dataset(DatasetRef(path=str(write_csv(tmp_path / "d.csv", ["text", "label"], rows))), "classification")
    assert ds.label_names == ["a", "b"] and len(ds.texts) == 12
    assert not any(t.startswith(("unlabelled", "also")) for t in ds.texts)


def test_csv_slice_with_max_rows(tmp_path):
    p = write_csv(tmp_path / "d.csv", ["text", "label"], small_rows(90))
    ds = load_dataset(DatasetRef(path=str(p), max_rows=30), "classification", seed=0)
    assert np.bincount(ds.labels).tolist() == [10, 10, 10]


def test_tsv_dataset(tmp_path):
    p = tmp_path / "d.tsv"
    p.write_text("text\tlabel\n" + "".join(f"row {i}, fine\t{'ab'[i % 2]}\n" for i in range(12)))
    ds = load_dataset(DatasetRef(path=str(p)), "classification")
    assert ds.label_names == ["a", "b"] and len(ds.texts) == 12 and ds.texts[0] == "row 0, fine"


def test_jsonl_dataset(tmp_path):
    p = tmp_path / "d.jsonl"
    lines = [{"text": f"line {i}", "label": i % 2, "extra": [1, 2]} for i in range(20)]
    lines.append({"label": 1})  # no text: dropped
    p.write_text("\n".join(json.dumps(x) for x in lines) + "\n")
    ds = load_dataset(DatasetRef(path=str(p)), "classification")
    assert ds.label_names == ["0", "1"]
    assert len(ds.texts) == 20 and ds.texts[3] == "line 3" and ds.labels[3] == 1


def test_pair_csv_dataset(tmp_path):
    rows = [[f"query {i}", f"document {i} text", str(i % 2)] for i in range(24)]
    p = write_csv(tmp_path / "pairs.csv", ["query", "doc", "label"], rows)
    ds = load_dataset(DatasetRef(path=str(p)), "pair")
    assert ds.task == "pair" and ds.label_names == ["0", "1"]
    assert ds.texts[5] == ("query 5", "document 5 text") and ds.labels[5] == 1
    # the same file is not a classification dataset: it has no text column
    with pytest.raises(SpecError) as ei:
        load_dataset(DatasetRef(path=str(p)), "classification")
    assert ei.value.field == "dataset.path" and "'text'" in ei.value.message


def test_classification_csv_is_not_a_pair_dataset(tmp_path):
    p = write_csv(tmp_path / "d.csv", ["text", "label"], small_rows(12))
    with pytest.raises(SpecError) as ei:
        load_dataset(DatasetRef(path=str(p)), "pair")
    assert ei.value.field == "dataset.path" and "query" in ei.value.message and "doc" in ei.value.message


def test_fingerprint_follows_content(tmp_path):
    a = load_dataset(DatasetRef(path=str(write_csv(tmp_path / "a.csv", ["text", "label"], small_rows(12)))), "classification")
    b = load_dataset(DatasetRef(path=str(write_csv(tmp_path / "b.csv", ["text", "label"], small_rows(12)))), "classification")
    rows = small_rows(12)
    rows[4][0] = "changed"
    c = load_dataset(DatasetRef(path=str(write_csv(tmp_path / "c.csv", ["text", "label"], rows))), "classification")
    assert a.fingerprint() == b.fingerprint() != c.fingerprint()


@pytest.mark.parametrize("content, needle", [
    ("", "empty"),
    ("text,label\n", "no usable rows"),
    ("words,label\nhi,a\nho,b\n", "lacks column(s) ['text']"),
    ("text,label\n" + "".join(f"t{i},only\n" for i in range(10)), "at least 2 classes"),
    ("text,label\n" + "".join(f"t{i},a\n" for i in range(10)) + "x,b\ny,b\n", "class 'b' has 2 row(s)"),
])
def test_bad_csv_files(tmp_path, content, needle):
    p = tmp_path / "bad.csv"
    p.write_text(content)
    with pytest.raises(SpecError) as ei:
        load_dataset(DatasetRef(path=str(p)), "classification")
    assert ei.value.field == "dataset.path"
    assert needle in ei.value.message


def test_bad_file_kinds(tmp_path):
    with pytest.raises(SpecError) as ei:
        load_dataset(DatasetRef(path=str(tmp_path / "nope.csv")), "classification")
    assert ei.value.field == "dataset.path" and "file not found" in ei.value.message
    txt = tmp_path / "d.txt"
    txt.write_text("hello\n")
    with pytest.raises(SpecError) as ei:
        load_dataset(DatasetRef(path=str(txt)), "classification")
    assert ei.value.field == "dataset.path" and ".jsonl" in ei.value.message
    bad = tmp_path / "d.jsonl"
    bad.write_text('{"text": "a", "label": 1}\n{not json\n')
    with pytest.raises(SpecError) as ei:
        load_dataset(DatasetRef(path=str(bad)), "classification")
    assert ei.value.field == "dataset.path" and "cannot parse" in ei.value.message
    with pytest.raises(SpecError) as ei:
        load_dataset(DatasetRef(path=str(tmp_path)), "classification")  # a directory
    assert ei.value.field == "dataset.path"


# -- tokenisation cache --------------------------------------------------------------------------------------------------
class CountingTokenizer:
    """The real MiniLM tokenizer, counting how often it is asked to encode."""

    def __init__(self, tok):
        self.tok = tok
        self.calls = 0

    def get_vocab(self):
        return self.tok.get_vocab()

    def __call__(self, *args, **kwargs):
        self.calls += 1
        return self.tok(*args, **kwargs)


@pytest.fixture
def private_cache(tmp_path, monkeypatch) -> pathlib.Path:
    d = tmp_path / "cache"
    monkeypatch.setenv("NAS_CACHE", str(d))
    return d


def test_cache_dir_follows_nas_cache_then_nas_home(tmp_path, monkeypatch):
    monkeypatch.setenv("NAS_CACHE", str(tmp_path / "c"))
    assert cache_dir() == (tmp_path / "c").resolve() and (tmp_path / "c").is_dir()
    monkeypatch.delenv("NAS_CACHE")
    monkeypatch.setenv("NAS_HOME", str(tmp_path / "home"))
    assert cache_dir() == (tmp_path / "home" / "cache").resolve()


def test_tokenize_caches_on_disk(tmp_path, private_cache, minilm_tokenizer):
    long = " ".join(["word"] * 300)
    rows = [[long if i == 0 else f"short review {i}", "ab"[i % 2]] for i in range(12)]
    ds = load_dataset(DatasetRef(path=str(write_csv(tmp_path / "d.csv", ["text", "label"], rows))), "classification")
    tok = CountingTokenizer(minilm_tokenizer)
    first = tokenize(tok, ds, 24)
    assert tok.calls == 1
    files = list((private_cache / "tokens").glob("tok-*.pt"))
    assert len(files) == 1 and f"-{ds.fingerprint()}-" in files[0].name and files[0].name.endswith("-24.pt")
    mtime = files[0].stat().st_mtime_ns

    assert set(first) == {"input_ids", "attention_mask", "token_type_ids"}
    for v in first.values():
        assert v.shape == (12, 24)
    # max_len honoured: the long row is truncated and ends with [SEP]; short rows are padded
    sep, pad = minilm_tokenizer.sep_token_id, minilm_tokenizer.pad_token_id
    assert first["attention_mask"][0].sum() == 24 and first["input_ids"][0, -1] == sep
    assert first["attention_mask"][1].sum() < 24 and first["input_ids"][1, -1] == pad
    assert torch.equal(first["input_ids"][1], minilm_tokenizer(ds.texts[1], max_length=24, padding="max_length",
                                                                 truncation=True, return_tensors="pt")["input_ids"][0])

    second = tokenize(tok, ds, 24)
    assert tok.calls == 1  # read back from disk, not encoded again
    assert files[0].stat().st_mtime_ns == mtime
    assert set(second) == set(first)
    for k in first:
        assert torch.equal(first[k], second[k]) and first[k].dtype == second[k].dtype

    # another max_len is another cache entry
    third = tokenize(tok, ds, 16)
    assert tok.calls == 2 and third["input_ids"].shape == (12, 16)
    assert len(list((private_cache / "tokens").glob("tok-*.pt"))) == 2
    assert not list((private_cache / "tokens").glob("*.tmp"))


def test_tokenize_pairs(tmp_path, private_cache, minilm_tokenizer):
    rows = [[f"query {i}", " ".join(["doc"] * (5 + 20 * i)), str(i % 2)] for i in range(8)]
    ds = load_dataset(DatasetRef(path=str(write_csv(tmp_path / "p.csv", ["query", "doc", "label"], rows))), "pair")
    out = tokenize(minilm_tokenizer, ds, 32)
    assert out["input_ids"].shape == (8, 32)
    # the document (second segment) is what gets truncated; the query is kept whole
    assert out["token_type_ids"][7].sum() > 0 and out["attention_mask"][7].sum() == 32
    ids = out["input_ids"][7].tolist()
    assert minilm_tokenizer.decode(ids[: ids.index(minilm_tokenizer.sep_token_id)], skip_special_tokens=True) == "query 7"
    again = tokenize(minilm_tokenizer, ds, 32)
    assert all(torch.equal(out[k], again[k]) for k in out)


def test_token_cache_is_keyed_by_the_tokenizer_vocabulary(tmp_path, private_cache, minilm_tokenizer):
    """Two teachers with different vocabularies on the same data must never share token ids (the path Ray workers load)."""
    import copy

    from nas.data import token_cache_path

    ds = load_dataset(DatasetRef(path=str(write_csv(tmp_path / "d.csv", ["text", "label"],
                                                    [[f"review {i}", "ab"[i % 2]] for i in range(12)]))), "classification")
    other = copy.deepcopy(minilm_tokenizer)
    other.add_tokens(["zzqxnewtoken"])
    a, b = token_cache_path(minilm_tokenizer, ds, 24), token_cache_path(other, ds, 24)
    assert a != b
    tokenize(minilm_tokenizer, ds, 24)
    assert a.is_file() and not b.is_file()
