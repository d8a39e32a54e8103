"""Teacher-labelled augmentation and the distillation loop's padding trim / hard-loss mask, on real text and a tiny BERT."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from transformers import BertConfig, BertForSequenceClassification

from nas.data import load_dataset, tokenize
from nas.distill.augment import (
    AugmentSettings,
    augment_text,
    augment_texts,
    embedding_neighbours,
    teacher_transfer_set,
    transfer_set_path,
    with_transfer_set,
)
from nas.distill.evaluate import length_order, predict_logits
from nas.distill.loop import DistillSettings, distill, trim_padding
from nas.spec.job import DatasetRef


@pytest.fixture(scope="module")
def tokenizer(minilm_tokenizer):
    return minilm_tokenizer


@pytest.fixture(scope="module")
def rt():
    return load_dataset(DatasetRef(name="rotten-tomatoes", max_rows=60), "classification", 0)


def tiny(vocab: int, seed: int = 0) -> BertForSequenceClassification:
    torch.manual_seed(seed)
    cfg = BertConfig(vocab_size=vocab, hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                     max_position_embeddings=64, num_labels=2, attn_implementation="eager")
    return BertForSequenceClassification(cfg).eval()


def test_trim_padding_keeps_outputs(tokenizer, rt):
    tensors = tokenize(tokenizer, rt, 64)
    model = tiny(tokenizer.vocab_size)
    batch = {k: v[:8] for k, v in tensors.items()}
    trimmed = trim_padding(batch)
    assert trimmed["input_ids"].shape[1] == int(batch["attention_mask"].sum(1).max()) < 64
    with torch.inference_mode():
        full = model(**batch).logits
        short = model(**trimmed).logits
    assert torch.allclose(full, short, atol=1e-5)
    # predict_logits batches by length and returns rows in their original order
    rowwise = torch.cat([model(**{k: v[i:i + 1] for k, v in tensors.items()}).logits for i in range(20)]).detach()
    assert torch.allclose(predict_logits(model, {k: v[:20] for k, v in tensors.items()}, batch_size=4), rowwise, atol=1e-5)
    order = length_order(tensors)
    lengths = tensors["attention_mask"].sum(1)[order]
    assert bool((lengths[1:] >= lengths[:-1]).all())


def test_hard_mask_limits_hard_loss_to_gold_rows(tokenizer, rt):
    tensors = {k: v[:16] for k, v in tokenize(tokenizer, rt, 32).items()}
    labels = torch.as_tensor(rt.labels[:16])
    no_soft = DistillSettings(alpha_soft=0.0, beta_hard=1.0, lr=1e-3, batch_size=8)
    # no gold rows and no soft loss: nothing to learn, the loss is exactly zero
    out = distill(tiny(tokenizer.vocab_size), tensors, labels, None, no_soft, 3,
                  hard_mask=torch.zeros(16, dtype=torch.bool))
    assert out["final_loss"] == 0.0
    # every row gold: the same training as without a mask
    a, b = tiny(tokenizer.vocab_size), tiny(tokenizer.vocab_size)
    distill(a, tensors, labels, None, no_soft, 4, seed=1)
    distill(b, tensors, labels, None, no_soft, 4, seed=1, hard_mask=torch.ones(16, dtype=torch.bool))
    for pa, pb in zip(a.parameters(), b.parameters()):
        assert torch.allclose(pa, pb, atol=1e-6)


def test_embedding_neighbours_on_a_hand_made_matrix(tokenizer):
    vocab = tokenizer.get_vocab()
    emb = torch.randn(len(vocab), 16, generator=torch.Generator().manual_seed(0))
    emb[vocab["great"]] = emb[vocab["good"]] * 3  # same direction: cosine 1
    nb = embedding_neighbours(tokenizer, emb, k=3)
    assert nb["good"][0] == "great" and nb["great"][0] == "good"
    assert "good" not in nb["good"]
    assert not any(w.startswith("##") or w in tokenizer.all_special_tokens for w in nb)


def test_augment_text_perturbs_words_deterministically():
    nb = {"good": ["great"], "movie": ["film"]}
    s = AugmentSettings(p_mask=0.3, p_neighbour=0.5, p_window=0.0)
    text = "a good movie with a good cast and a good story"
    a = augment_text(text, np.random.default_rng(3), nb, "[MASK]", s)
    b = augment_text(text, np.random.default_rng(3), nb, "[MASK]", s)
    assert a == b and a != text
    words, src = a.split(), text.split()
    assert len(words) == len(src)
    for w, o in zip(words, src):  # every change is a mask or a listed neighbour
        assert w == o or w == "[MASK]" or w in nb.get(o, [])
    window = AugmentSettings(p_mask=0.0, p_neighbour=0.0, p_window=1.0)
    cut = augment_text(text, np.random.default_rng(0), nb, "[MASK]", window)
    assert 1 <= len(cut.split()) < len(src) and cut in text


def test_transfer_set_is_labelled_by_the_teacher_and_cached(tokenizer, rt, tmp_path):
    model = tiny(tokenizer.vocab_size)
    train = np.arange(0, 40)
    s = AugmentSettings(copies=2, seed=0)
    texts, src = augment_texts([rt.texts[i] for i in train], tokenizer, model.get_input_embeddings().weight.detach(), s)
    assert len(texts) == 80 and src[:40] == list(range(40))
    tr = teacher_transfer_set(model, tokenizer, rt, train, 32, s, cache_dir=tmp_path, log=lambda m: None)
    assert tr["tensors"]["input_ids"].shape == (80, 32) and tr["logits"].shape == (80, 2)
    assert torch.equal(tr["source"], torch.as_tensor(np.concatenate([train, train])))
    assert torch.allclose(tr["logits"], predict_logits(model, tr["tensors"]))
    assert transfer_set_path(tmp_path, train, s).is_file()
    again = teacher_transfer_set(None, tokenizer, rt, train, 32, s, cache_dir=tmp_path)  # from the cache: no teacher needed
    assert torch.equal(again["logits"], tr["logits"])
    tensors = tokenize(tokenizer, rt, 32)
    labels = torch.as_tensor(rt.labels)
    soft = predict_logits(model, tensors)
    x, y, t, hard = with_transfer_set(tensors, labels, soft, train, tr)
    assert len(y) == len(t) == len(hard) == 120 and x["input_ids"].shape[0] == 120
    assert bool(hard[:40].all()) and not bool(hard[40:].any())
    assert torch.equal(t[40:], tr["logits"])
