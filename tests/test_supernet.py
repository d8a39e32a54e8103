"""Supernet core: slicing equals extraction, rewiring keeps the function and orders units, sandwich training and resume.

Real components throughout: a tiny BERT built from BertConfig over the MiniLM tokenizer's vocabulary, real BBC News text,
and one check on the real MiniLM weights.
"""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from transformers import BertConfig, BertForSequenceClassification

from nas.data import load_dataset
from nas.distill.evaluate import predict_logits
from nas.distill.loop import DistillSettings, distill
from nas.distill.losses import hidden_mse, soft_kl
from nas.distill.proxy import evaluate_shape
from nas.distill.supernet import largest_shape, sandwich_shapes, smallest_shape, train_supernet
from nas.spec.job import DatasetRef
from nas.spec.space import StudentSpace
from nas.students.bert_slice import extract_subnet, supernet_forward
from nas.students.rewire import importance_scores, rewire
from nas.students.shape import Shape
from nas.teachers.load import teacher_path

TINY_SPACE = StudentSpace(layers=[1, 2, 4], hidden=[32, 48, 64], heads=[2, 4], ffn=[32, 64, 128])


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Small matrices on a shared machine: one intra-op thread is much faster than two fighting other processes."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def tokenizer(minilm_tokenizer):
    return minilm_tokenizer


@pytest.fixture(scope="module")
def bbc(tokenizer):
    """200 BBC News rows tokenised to 32 tokens; the first 24 cut to varied lengths so that padding is real."""
    ds = load_dataset(DatasetRef(name="bbc-news", max_rows=200), "classification")
    texts = [t[: 15 + 11 * i] if i < 24 else t for i, t in enumerate(ds.texts)]
    enc = tokenizer(texts, truncation=True, max_length=32, padding="max_length", return_tensors="pt")
    tensors = {k: enc[k] for k in ("input_ids", "attention_mask", "token_type_ids")}
    assert (tensors["attention_mask"][:24] == 0).any()
    return tensors, torch.as_tensor(ds.labels), ds.num_labels


def tiny_bert(vocab_size: int, num_labels: int, seed: int = 0) -> BertForSequenceClassification:
    torch.manual_seed(seed)
    cfg = BertConfig(vocab_size=vocab_size, hidden_size=64, num_hidden_layers=4, num_attention_heads=4,
                     intermediate_size=128, max_position_embeddings=64, num_labels=num_labels)
    cfg._attn_implementation = "eager"
    return BertForSequenceClassification(cfg).eval()


@pytest.fixture(scope="module")
def tiny_teacher(tokenizer, bbc):
    """The tiny BERT briefly fine-tuned on the slice, with its logits on every row."""
    tensors, labels, n_labels = bbc
    model = tiny_bert(len(tokenizer), n_labels)
    distill(model, tensors, labels, None, DistillSettings(lr=3e-3, alpha_soft=0, beta_hard=1), steps=40, seed=0)
    return model, predict_logits(model, tensors)


def random_shapes(full: Shape, n: int, seed: int, hidden_choices: list[int]) -> list[Shape]:
    rng = np.random.default_rng(seed)
    out = []
    while len(out) < n:
        s = Shape(int(rng.integers(1, full.layers + 1)), int(rng.choice(hidden_choices)),
                  int(rng.choice([h for h in (1, 2, 3, 4, 6, 8, 12) if h <= full.heads])), int(rng.integers(1, full.ffn + 1)))
        if s.is_valid():
            out.append(s)
    return out


def max_diff(model, shapes, inputs) -> float:
    worst = 0.0
    with torch.no_grad():
        for s in shapes:
            ref = extract_subnet(model, s)(**inputs, output_hidden_states=True)
            logits, hidden = supernet_forward(model, s, inputs, output_hidden_states=True)
            assert len(hidden) == len(ref.hidden_states) == s.layers + 1
            worst = max(worst, (ref.logits - logits).abs().max().item(),
                        *((a - b).abs().max().item() for a, b in zip(ref.hidden_states, hidden)))
    return worst


def test_slicing_equals_extraction(tokenizer, bbc):
    tensors, _, n_labels = bbc
    model = tiny_bert(len(tokenizer), n_labels)
    inputs = {k: v[:24] for k, v in tensors.items()}
    assert max_diff(model, random_shapes(Shape.of_config(model.config), 20, 0, [16, 32, 48, 64]), inputs) <= 1e-5


def test_supernet_forward_gradients_reach_shared_weights(tokenizer, bbc):
    tensors, labels, n_labels = bbc
    model = tiny_bert(len(tokenizer), n_labels)
    logits, _ = supernet_forward(model, Shape(2, 32, 2, 64), {k: v[:4] for k, v in tensors.items()}, train=True)
    torch.nn.functional.cross_entropy(logits, labels[:4]).backward()
    g = model.bert.encoder.layer[3].intermediate.dense.weight.grad  # layer_indices(2, 4) == [0, 3]
    assert g[:64, :32].abs().sum() > 0 and g[64:].abs().sum() == 0 and g[:, 32:].abs().sum() == 0
    assert model.bert.encoder.layer[1].intermediate.dense.weight.grad is None
    with pytest.raises(ValueError):
        supernet_forward(model, Shape(5, 64, 4, 128), tensors)


@pytest.mark.parametrize("reorder_hidden", [False, True])
def test_rewiring_keeps_outputs_and_orders_units(tokenizer, bbc, reorder_hidden):
    tensors, labels, n_labels = bbc
    model = tiny_bert(len(tokenizer), n_labels)
    rows, check = np.arange(24, 88), {k: v[:40] for k, v in tensors.items()}
    with torch.no_grad():
        before = model(**check, output_hidden_states=True)
    scores = importance_scores(model, tensors, labels, rows, hidden=reorder_hidden)
    rewire(model, tensors, labels, rows, reorder_hidden=reorder_hidden)
    with torch.no_grad():
        after = model(**check, output_hidden_states=True)
    assert (before.logits - after.logits).abs().max().item() <= 1e-5
    if not reorder_hidden:  # head/FFN permutations are internal to a layer: every hidden state is unchanged too
        assert max((a - b).abs().max().item() for a, b in zip(before.hidden_states, after.hidden_states)) <= 1e-5
    rescored = importance_scores(model, tensors, labels, rows, hidden=reorder_hidden)
    for key, s in scores.items():
        expected = torch.sort(s, dim=-1, descending=True).values
        torch.testing.assert_close(rescored[key], expected, rtol=1e-4, atol=1e-7)
        assert (rescored[key].diff(dim=-1) <= 1e-6 * rescored[key].abs().max()).all(), key
    # extraction still equals slicing on the rewired weights
    assert max_diff(model, random_shapes(Shape.of_config(model.config), 5, 1, [32, 64]), check) <= 1e-5


def test_rewiring_with_teacher_logits_scores_every_unit(tokenizer, bbc):
    tensors, labels, n_labels = bbc
    model = tiny_bert(len(tokenizer), n_labels)
    t_logits = torch.randn(len(labels), n_labels)
    s = importance_scores(model, tensors, labels, np.arange(32), teacher_logits=t_logits)
    assert s["head"].shape == (4, 4) and s["ffn"].shape == (4, 128) and (s["head"] > 0).all()
    assert all(p.grad is None for p in model.parameters())


def test_sandwich_covers_smallest_and_largest():
    space = StudentSpace(layers=[1, 3, 2], hidden=[96, 64], heads=[3, 4], ffn=[256, 128])
    rng = np.random.default_rng(0)
    assert largest_shape(space) == Shape(3, 96, 4, 256)
    assert smallest_shape(space) == Shape(1, 64, 4, 128)  # 64 is not divisible by 3
    seen = set()
    for _ in range(50):
        shapes = sandwich_shapes(space, rng, n_random=3)
        assert len(shapes) == 5 and shapes[0] == largest_shape(space) and shapes[1] == smallest_shape(space)
        for s in shapes[2:]:
            assert s.is_valid() and s.layers in space.layers and s.hidden in space.hidden and s.ffn in space.ffn
            seen.add(s)
    assert len(seen) > 5
    with pytest.raises(ValueError):
        largest_shape(StudentSpace(layers=[1], hidden=[64], heads=[3], ffn=[32]))


def _distill_loss(model, teacher, t_logits, labels, tensors, shapes) -> float:
    with torch.no_grad():
        _, t_hidden = supernet_forward(teacher, Shape.of_config(teacher.config), tensors, output_hidden_states=True)
        total = 0.0
        for s in shapes:
            logits, hidden = supernet_forward(model, s, tensors, output_hidden_states=True)
            total += (0.5 * soft_kl(logits, t_logits) + 0.5 * torch.nn.functional.cross_entropy(logits, labels)
                      + hidden_mse(hidden, t_hidden, 4, tensors["attention_mask"])).item()
    return total / len(shapes)


def test_hidden_mse_through_a_projection_reads_the_teachers_full_width_on_real_tokens():
    """A student initialiser (not sliced from the teacher) is compared through its `hidden_projection` with all of the
    teacher's dims, padded tokens left out; the projection gets the gradient."""
    torch.manual_seed(0)
    proj = torch.nn.Linear(8, 16)
    student = [torch.randn(2, 5, 8) for _ in range(3)]  # embeddings + 2 layers
    with torch.no_grad():
        teacher = [proj(s) for s in student] + [torch.randn(2, 5, 16) for _ in range(2)]  # 4 teacher layers
    teacher = [teacher[0], teacher[0], teacher[1], teacher[1], teacher[2]]  # uniform: student j -> teacher 2j + 1
    mask = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]])
    assert hidden_mse(student, teacher, 4, mask, "uniform", proj).item() < 1e-10
    wide = [t.clone() for t in teacher]
    wide[4][1, 0, 12] += 1.0  # a dim past the student's 8 that the sliced comparison never reads
    assert hidden_mse(student, wide, 4, mask, "uniform", proj).item() > 1e-3
    assert hidden_mse(student, wide, 4, mask, "uniform") == hidden_mse(student, teacher, 4, mask, "uniform")
    padded = [t.clone() for t in teacher]
    padded[4][0, 4] += 5.0  # a padded token of row 0
    assert hidden_mse(student, padded, 4, mask, "uniform", proj).item() < 1e-10
    hidden_mse(student, wide, 4, mask, "uniform", proj).backward()
    assert proj.weight.grad is not None and proj.weight.grad.abs().sum() > 0


def test_train_supernet_reduces_loss(bbc, tiny_teacher):
    tensors, labels, _ = bbc
    teacher, t_logits = tiny_teacher
    model = copy.deepcopy(teacher)
    train_idx = np.arange(24, 200)
    shapes = [largest_shape(TINY_SPACE), smallest_shape(TINY_SPACE), Shape(2, 48, 4, 64)]
    rows = torch.as_tensor(train_idx[:96])
    sub = {k: v[rows] for k, v in tensors.items()}
    before = _distill_loss(model, teacher, t_logits[rows], labels[rows], sub, shapes)
    acc_before = evaluate_shape(model, smallest_shape(TINY_SPACE), tensors, labels, train_idx)
    seen = []
    info = train_supernet(model, t_logits, tensors, labels, train_idx, TINY_SPACE, steps=25,
                          settings=DistillSettings(lr=2e-3, batch_size=16), seed=0, on_step=lambda s, l: seen.append(s))
    after = _distill_loss(model, teacher, t_logits[rows], labels[rows], sub, shapes)
    acc_after = evaluate_shape(model, smallest_shape(TINY_SPACE), tensors, labels, train_idx)
    assert seen == list(range(25)) and len(info["losses"]) == 25 and info["resumed_from"] == 0
    assert after < 0.8 * before, (before, after)
    assert acc_after >= acc_before
    assert np.mean(info["losses"][-5:]) < np.mean(info["losses"][:5])


def test_checkpoint_resume_matches_uninterrupted_run(bbc, tiny_teacher, tmp_path):
    tensors, labels, _ = bbc
    teacher, t_logits = tiny_teacher
    settings = DistillSettings(lr=2e-3, batch_size=16)
    run = dict(train_idx=np.arange(24, 200), space=TINY_SPACE, steps=6, settings=settings, seed=3, checkpoint_every=2)

    straight = copy.deepcopy(teacher)
    train_supernet(straight, t_logits, tensors, labels, **run)

    class Killed(Exception):
        pass

    def kill_at_4(step, loss):
        if step == 4:
            raise Killed

    ckpt = tmp_path / "supernet.pt"
    with pytest.raises(Killed):
        train_supernet(copy.deepcopy(teacher), t_logits, tensors, labels, checkpoint_path=ckpt, on_step=kill_at_4, **run)
    assert torch.load(ckpt, weights_only=False)["step"] == 4
    assert not (tmp_path / "supernet.pt.tmp").exists()
    resumed = copy.deepcopy(teacher)  # starts from the teacher's weights; the checkpoint overrides them
    steps_seen = []
    info = train_supernet(resumed, t_logits, tensors, labels, checkpoint_path=ckpt,
                          on_step=lambda s, l: steps_seen.append(s), **run)
    assert info["resumed_from"] == 4 and steps_seen == [4, 5] and len(info["losses"]) == 6
    for (k, a), b in zip(straight.state_dict().items(), resumed.state_dict().values()):
        assert torch.equal(a, b), k
    with pytest.raises(ValueError, match="another run"):
        train_supernet(copy.deepcopy(teacher), t_logits, tensors, labels, checkpoint_path=ckpt, **{**run, "seed": 4})


def test_nan_loss_raises(bbc, tiny_teacher):
    tensors, labels, _ = bbc
    teacher, t_logits = tiny_teacher
    with pytest.raises(FloatingPointError):
        train_supernet(copy.deepcopy(teacher), t_logits * float("nan"), tensors, labels, np.arange(24, 200),
                       TINY_SPACE, steps=2, settings=DistillSettings(batch_size=8), hidden_weight=0.0)
    with pytest.raises(ValueError, match="separate frozen copy"):
        train_supernet(teacher, t_logits, tensors, labels, np.arange(24, 200), TINY_SPACE, steps=1,
                       settings=DistillSettings(batch_size=8), teacher=teacher)


def test_real_minilm_rewired_slicing_equals_extraction(tokenizer, bbc):
    tensors, labels, n_labels = bbc
    model = BertForSequenceClassification.from_pretrained(teacher_path("minilm-l6"), num_labels=n_labels,
                                                          attn_implementation="eager").eval()
    check = {k: v[:16] for k, v in tensors.items()}
    with torch.no_grad():
        before = model(**check).logits
    rewire(model, tensors, labels, np.arange(24, 56), reorder_hidden=True)
    with torch.no_grad():
        assert (model(**check).logits - before).abs().max().item() <= 1e-5
    shapes = [Shape(6, 384, 12, 1536), Shape(1, 128, 2, 256)] + random_shapes(Shape.of_config(model.config), 4, 2,
                                                                              [64, 128, 192, 256, 384])
    assert max_diff(model, shapes, check) <= 1e-4


def test_probe_reads_the_shapes_own_features_and_refuses_overlap(bbc, tiny_teacher):
    from nas.distill.proxy import probe_logits, shape_features

    tensors, labels, n_labels = bbc
    model, _ = tiny_teacher
    shape = Shape(2, 48, 4, 64)
    rows = np.arange(30)
    feats = shape_features(model, shape, tensors, rows, batch_size=7)  # several length-sorted batches, padding trimmed
    ref = extract_subnet(model, shape)(**{k: v[rows] for k, v in tensors.items()}, output_hidden_states=True)
    last, mask = ref.hidden_states[-1], tensors["attention_mask"][rows][..., None].float()
    expected = torch.cat([last[:, 0], (last * mask).sum(1) / mask.sum(1)], 1)
    assert feats.shape == (30, 96) and torch.allclose(feats, expected, atol=1e-5)

    perm = np.random.default_rng(0).permutation(200)  # the slice is ordered by label
    held, fit = np.sort(perm[:40]), np.sort(perm[40:])
    logp = probe_logits(model, shape, tensors, labels, fit, held)
    assert logp.shape == (40, n_labels) and torch.allclose(logp.exp().sum(1), torch.ones(40), atol=1e-4)
    assert torch.isfinite(logp).all()  # log-probabilities stay finite even where the probe is certain
    # the probe is fitted on the same features a direct sklearn fit sees: its held-out accuracy beats the majority class
    acc = float((logp.argmax(1) == labels[held]).float().mean())
    majority = float(torch.bincount(labels[held]).max()) / len(held)
    assert acc > majority
    with pytest.raises(ValueError, match="overlap"):
        probe_logits(model, shape, tensors, labels, np.append(fit, held[:3]), held)


def test_lr_by_size_runs_from_the_small_lr_to_the_teacher_size_lr_by_encoder_share():
    from nas.distill.loop import lr_by_size

    teacher = Shape(6, 384, 12, 1536)
    assert teacher.share_of(teacher) == 1.0
    assert Shape(3, 384, 12, 1536).share_of(teacher) == pytest.approx(0.5)
    # attention 4·H² + FFN 2·H·F per layer: a 1-layer 128-wide student holds ~2% of MiniLM's encoder
    assert Shape(1, 128, 4, 512).share_of(teacher) == pytest.approx((4 * 128 * 128 + 2 * 128 * 512) / (6 * 1769472))
    assert lr_by_size(1e-3, 5e-5, 0.0) == pytest.approx(1e-3)
    assert lr_by_size(1e-3, 5e-5, 1.0) == pytest.approx(5e-5)
    assert lr_by_size(1e-3, 1e-5, 0.5) == pytest.approx(1e-4)  # geometric midpoint
    assert lr_by_size(1e-3, None, 0.7) == 1e-3  # off: one lr for every size
    shapes = sorted((Shape(1, 128, 2, 256), Shape(2, 192, 6, 512), Shape(4, 256, 4, 512), Shape(4, 384, 12, 1536)),
                    key=Shape.encoder_weights)
    lrs = [lr_by_size(1e-3, 5e-5, s.share_of(teacher)) for s in shapes]
    assert lrs == sorted(lrs, reverse=True) and len(set(lrs)) == 4


def test_shape_keys_round_trip_and_fits_in_checks_every_axis():
    from nas.students.shape import Shape

    s = Shape(2, 128, 4, 512)
    assert Shape.from_key(s.key) == s
    assert s.fits_in(Shape(3, 256, 8, 768)) and s.fits_in(s)
    for bigger in (Shape(3, 128, 4, 512), Shape(2, 192, 4, 512), Shape(2, 128, 6, 512), Shape(2, 128, 4, 768)):
        assert not bigger.fits_in(s)  # one axis too large is enough
    with pytest.raises(ValueError, match="not a shape key"):
        Shape.from_key("2x128")


def test_second_round_space_keeps_only_choices_inside_the_assistant():
    from nas.search.space import clip_space
    from nas.spec.space import StudentSpace
    from nas.students.shape import Shape

    space = StudentSpace(layers=[1, 2, 4], hidden=[128, 256, 384], heads=[2, 4, 8, 12], ffn=[256, 512, 1536])
    clipped, dropped = clip_space(space, Shape(3, 256, 8, 1024))
    assert clipped.model_dump() == {"layers": [1, 2], "hidden": [128, 256], "heads": [2, 4, 8], "ffn": [256, 512]}
    assert dropped == {"layers": [4], "hidden": [384], "heads": [12], "ffn": [1536]}
    assert clip_space(space, Shape(4, 384, 12, 1536)) == (space, {})
    none, empty = clip_space(space, Shape(3, 64, 8, 1024))  # no hidden choice fits: no second round
    assert none is None and empty == {"hidden": []}
