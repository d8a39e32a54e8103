"""References: TF-IDF + logistic regression fitted with C chosen on dev, end-to-end latency that includes preprocessing,
dominance on a hand-made front, and the spec's checks on user models."""

from __future__ import annotations

import time

import numpy as np
import torch
import pytest

from nas.data import load_dataset, split_indices
from nas.latency.measure import MeasureSettings
from nas.latency.text import measure_text_latency, sklearn_predictor, text_batches
from nas.results.front import dominance
from nas.spec.errors import SpecError
from nas.spec.job import DatasetRef, parse_spec
from nas.stages.references import C_GRID, fit_tfidf


@pytest.fixture(scope="module")
def bbc():
    ds = load_dataset(DatasetRef(name="bbc-news", max_rows=300), "classification", 0)
    return ds, split_indices(ds.labels, 0)


def test_tfidf_reference_is_fitted_with_c_chosen_on_dev(bbc):
    ds, splits = bbc
    pipe, info = fit_tfidf(list(ds.texts), ds.labels, splits)
    assert info["C"] in C_GRID
    assert info["dev"]["accuracy"] > 0.8 and info["test"]["accuracy"] > 0.8  # BBC topics are easy for TF-IDF
    dev = splits["dev"]
    assert info["dev"]["accuracy"] == pytest.approx(float(np.mean(pipe.predict([ds.texts[i] for i in dev]) == ds.labels[dev])))


def test_end_to_end_latency_includes_preprocessing(bbc):
    ds, splits = bbc
    slow = lambda text: (time.sleep(0.004), text.lower())[1]  # noqa: E731  a 4 ms preprocessing step per text
    fast_pipe, _ = fit_tfidf(list(ds.texts), ds.labels, splits)
    slow_pipe, _ = fit_tfidf(list(ds.texts), ds.labels, splits, preprocessor=slow)
    settings = MeasureSettings(threads=1, batch=1, warmup=2, min_runs=10, max_runs=30)
    texts = [ds.texts[i] for i in splits["dev"]]
    fast = measure_text_latency(sklearn_predictor(fast_pipe), texts, settings)
    slowed = measure_text_latency(sklearn_predictor(slow_pipe), texts, settings)
    assert fast["runtime"] == slowed["runtime"] == "text-e2e"
    assert slowed["p50_ms"] >= 4.0 > fast["p50_ms"]
    assert slowed["p50_ms"] - fast["p50_ms"] == pytest.approx(4.0, abs=2.5)
    assert [len(b) for b in text_batches(texts, 3, n=4)] == [3, 3, 3, 3]


def test_dominance_on_a_hand_made_front():
    front = [{"metric": 0.70, "latency_ms": 1.0}, {"metric": 0.80, "latency_ms": 2.0}, {"metric": 0.90, "latency_ms": 5.0}]
    assert dominance(front, {"metric": 0.85, "latency_ms": 0.5}) == 2
    assert dominance(front, {"metric": 0.95, "latency_ms": 0.1}) == 3
    assert dominance(front, {"metric": 0.60, "latency_ms": 0.1}) == 0
    assert dominance(front, {"metric": 0.80, "latency_ms": 2.0}) == 0  # equal is not dominance
    # the students' tokenisation counts against them end to end
    assert dominance(front, {"metric": 0.80, "latency_ms": 2.2}) == 0
    assert dominance(front, {"metric": 0.80, "latency_ms": 2.2}, student_overhead_ms=0.5) == 1


def test_spec_checks_reference_models(tmp_path):
    from nas.pipeline import prepare

    spec = {"name": "r", "dataset": {"name": "bbc-news", "max_rows": 50}}
    with pytest.raises(SpecError) as e:
        prepare(parse_spec({**spec, "references": [{"model": str(tmp_path / "missing")}]}))
    assert e.value.field == "references.0.model"
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "config.json").write_text('{"architectures": ["BertModel"]}')
    with pytest.raises(SpecError, match="sequence-classification"):
        prepare(parse_spec({**spec, "references": ["tfidf-linear", {"model": str(tmp_path / "m")}]}))
    with pytest.raises(SpecError) as e:
        parse_spec({**spec, "references": ["bm25"]})
    assert e.value.field.startswith("references")
    with pytest.raises(SpecError, match="unique"):
        prepare(parse_spec({**spec, "references": ["tfidf-linear", "tfidf-linear"]}))


# -- the tokenizer's fast path that every end-to-end timing and every export's predictor runs ----------------------
def _wordpiece_without_pad(tmp_path):
    """A fast tokenizer with no pad token (FastEncoder cannot pad with it: it must fall back to `encode`'s error)."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.WordLevel({"[UNK]": 0, "a": 1, "b": 2}, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    return PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]")


@pytest.mark.parametrize("pair", [False, True])
def test_the_fast_encoder_gives_encodes_tensors_on_real_texts(bbc, minilm_tokenizer, pair):
    from nas.data import FastEncoder, encode

    ds, _ = bbc
    texts = [t[:40 * (i % 7 + 1)] for i, t in enumerate(ds.texts[:60])] + ["", "  ", "it's NOT bad!!", "é" * 300]
    rows = [(t[:30], d) for t, d in zip(texts, texts[::-1])] if pair else texts
    enc = FastEncoder(minilm_tokenizer, 48, pair=pair)
    assert enc.fast
    want, got = encode(minilm_tokenizer, rows, 48, pair=pair), enc(rows)
    assert list(got) == list(want)
    for k in want:
        assert got[k].dtype == want[k].dtype and torch.equal(got[k], want[k]), k
    assert (want["attention_mask"].sum(1) == 48).any() and (want["attention_mask"].sum(1) < 48).any()


def test_the_fast_encoder_falls_back_to_encode_where_it_cannot_pad(tmp_path):
    from nas.data import FastEncoder

    plain = FastEncoder(_wordpiece_without_pad(tmp_path), 8)
    assert not plain.fast
    with pytest.raises(ValueError, match="pad"):
        plain(["a b"])


def test_a_reference_is_timed_in_its_targets_runtime_with_the_same_logits(bbc, minilm_tokenizer):
    """eager, onnx (the model exported and run by ONNX Runtime) and int8 predictors of one tiny BERT agree on raw text,
    and each is timed end to end by the same protocol."""
    from transformers import BertConfig, BertForSequenceClassification

    from nas.latency.text import runtime_predictor

    ds, _ = bbc
    torch.manual_seed(0)
    model = BertForSequenceClassification(BertConfig(vocab_size=minilm_tokenizer.vocab_size, hidden_size=32,
                                                     num_hidden_layers=1, num_attention_heads=2, intermediate_size=64,
                                                     num_labels=3)).eval()
    texts = list(ds.texts[:6])
    settings = {rt: MeasureSettings(runtime=rt, dtype="int8" if rt == "int8" else "fp32", seq_len=32, threads=1,
                                    batch=1, warmup=2, min_runs=5, max_runs=10) for rt in ("eager", "onnx", "int8")}
    out = {rt: np.asarray(runtime_predictor(model, minilm_tokenizer, s)(texts)) for rt, s in settings.items()}
    assert out["eager"].shape == (6, 3)
    np.testing.assert_allclose(out["onnx"], out["eager"], atol=1e-4)
    np.testing.assert_allclose(out["int8"], out["eager"], atol=0.05)
    assert not np.allclose(out["int8"], out["eager"], atol=1e-7)  # the int8 graph really is another graph
    row = measure_text_latency(runtime_predictor(model, minilm_tokenizer, settings["onnx"]), texts, settings["onnx"])
    assert row["runtime"] == "text-e2e" and 0 < row["p50_ms"] < 1000
