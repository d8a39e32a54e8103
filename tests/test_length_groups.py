"""Length-grouped batches (`distill.length_groups`): every row once an epoch, batches of similar length in a shuffled
order, deterministic by seed (a killed run resumes to the uninterrupted weights), less padding to compute, and the
random order of runs that leave it off unchanged."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from nas.distill.loop import DistillSettings, batches, distill, trim_padding


def lengths_like_text(n: int, seed: int = 0) -> np.ndarray:
    """Token counts shaped like sentences (IMDB's: median ~23, a long tail to the 128 cap)."""
    return np.clip(np.random.default_rng(seed).lognormal(3.1, 0.5, n).astype(int) + 2, 3, 128)


def padded_slots(order, lengths) -> int:
    return sum(int(lengths[b].max()) * len(b) for b in order)


def test_every_row_once_an_epoch_in_batches_of_similar_length():
    n, bs = 3200, 32
    lengths = lengths_like_text(n)
    grouped = list(batches(n, bs, 2 * n // bs, seed=7, lengths=lengths, pool=20))
    for epoch in (grouped[:n // bs], grouped[n // bs:]):
        rows = np.concatenate(epoch)
        assert len(rows) == n and len(np.unique(rows)) == n
    plain = list(batches(n, bs, n // bs, seed=7))
    # the padding a batch carries after trimming: grouped batches carry far less than random ones
    assert padded_slots(grouped[:n // bs], lengths) < 0.6 * padded_slots(plain, lengths)
    assert padded_slots(grouped[:n // bs], lengths) < 1.2 * lengths.sum()
    # the batches' order is shuffled, not longest first: the first epoch's batch widths are far from sorted
    widths = [int(lengths[b].max()) for b in grouped[:n // bs]]
    assert widths != sorted(widths) and widths != sorted(widths, reverse=True)
    assert np.corrcoef(widths, np.arange(len(widths)))[0, 1] ** 2 < 0.1
    # nor longest first within each pool: a batch is no wider than the next about as often as a coin says
    assert np.mean(np.diff(widths) <= 0) < 0.75
    # the two epochs differ (a new shuffle each), as do seeds; one seed is one order
    assert [b.tolist() for b in grouped[:5]] != [b.tolist() for b in grouped[n // bs:n // bs + 5]]
    again = list(batches(n, bs, 2 * n // bs, seed=7, lengths=lengths, pool=20))
    assert all(np.array_equal(a, b) for a, b in zip(grouped, again))
    other = list(batches(n, bs, 5, seed=8, lengths=lengths, pool=20))
    assert any(not np.array_equal(a, b) for a, b in zip(grouped, other))


def test_off_is_the_random_order_and_a_tail_short_of_a_batch_is_dropped():
    lengths = lengths_like_text(1000, seed=1)
    plain = [b.tolist() for b in batches(1000, 32, 40, seed=3)]
    assert plain == [b.tolist() for b in batches(1000, 32, 40, seed=3, lengths=lengths, pool=0)]
    assert plain == [b.tolist() for b in batches(1000, 32, 40, seed=3, lengths=None, pool=50)]
    grouped = list(batches(1000, 32, 31, seed=3, lengths=lengths, pool=8))  # 1000 = 31 batches + 8 rows
    assert all(len(b) == 32 for b in grouped) and len(np.unique(np.concatenate(grouped))) == 992


def problem(n: int = 1200, width: int = 40):
    """A tiny random BERT and rows of varied length whose label is the parity rule on the first token: padded ids."""
    from transformers import BertConfig, BertForSequenceClassification

    torch.manual_seed(0)
    model = BertForSequenceClassification(BertConfig(vocab_size=60, hidden_size=32, num_hidden_layers=2,
                                                     num_attention_heads=2, intermediate_size=64, num_labels=2))
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(5, 60, (n, width), generator=g)
    lens = torch.as_tensor(np.clip(lengths_like_text(n, seed=2) // 3, 4, width))
    mask = (torch.arange(width)[None, :] < lens[:, None]).long()
    ids = ids * mask
    labels = (ids[:, 1] > 32).long()
    return model, {"input_ids": ids, "attention_mask": mask}, labels


def accuracy(model, tensors, labels) -> float:
    model.eval()
    with torch.no_grad():
        return float((model(**trim_padding(tensors)).logits.argmax(-1) == labels).float().mean())


def test_a_grouped_distillation_learns_and_a_killed_one_resumes_to_the_same_weights(tmp_path):
    from nas.distill.resume import TrainCheckpoint

    torch.set_num_threads(1)
    settings = DistillSettings(lr=3e-3, alpha_soft=0.0, beta_hard=1.0, batch_size=32, length_groups=10)
    steps = 150
    model, x, y = problem()
    train, dev = slice(0, 1000), slice(1000, None)
    tr = {k: v[train] for k, v in x.items()}
    before = accuracy(model, {k: v[dev] for k, v in x.items()}, y[dev])
    straight = distill(model, tr, y[train], None, settings, steps, seed=4)
    after = accuracy(model, {k: v[dev] for k, v in x.items()}, y[dev])
    assert straight["steps"] == steps and after > max(0.8, before + 0.2), (before, after)

    class Killed(Exception):
        pass

    def kill_at_60(step, loss):
        if step == 60:  # step 60 trained, not saved: the checkpoint (saved after every step) holds 60 steps
            raise Killed

    stopped, _, _ = problem()  # the same start
    ckpt = TrainCheckpoint(tmp_path / "run.pt", every_s=0, key="grouped")
    with pytest.raises(Killed):
        distill(stopped, tr, y[train], None, settings, steps, seed=4, checkpoint=ckpt, on_step=kill_at_60)
    resumed, _, _ = problem()
    ckpt = TrainCheckpoint(tmp_path / "run.pt", every_s=0, key="grouped")
    distill(resumed, tr, y[train], None, settings, steps, seed=4, checkpoint=ckpt)
    assert ckpt.resumed_from == 60
    for (k, a), b in zip(model.state_dict().items(), resumed.state_dict().values()):
        assert torch.equal(a, b), k
    # the same run with random batches ends elsewhere: the grouping is what the replay reproduced
    plain, _, _ = problem()
    distill(plain, tr, y[train], None, DistillSettings(**{**settings.__dict__, "length_groups": 0}), steps, seed=4)
    assert not torch.equal(plain.classifier.weight, model.classifier.weight)


def test_the_space_takes_length_groups_and_refuses_a_negative_one(tmp_path):
    from nas.spec.errors import SpecError
    from nas.spec.space import load_search_space

    base = (tmp_path / "s.yaml")
    base.write_text("student: {layers: [1], hidden: [32], heads: [2], ffn: [64]}\ndistill: {length_groups: 50}\n")
    assert load_search_space(str(base)).distill.length_groups == 50
    assert DistillSettings(**load_search_space(str(base)).distill.model_dump()).length_groups == 50
    base.write_text("student: {layers: [1], hidden: [32], heads: [2], ffn: [64]}\ndistill: {length_groups: -1}\n")
    with pytest.raises(SpecError, match="distill.length_groups"):
        load_search_space(str(base))
    # off, a final's settings print as they did before the setting existed (its checkpoint key is unchanged)
    assert "length_groups" not in repr(DistillSettings())
    assert "length_groups=5" in repr(DistillSettings(length_groups=5))  # on, another run's checkpoint is not its


def test_nas_plan_counts_grouped_steps_at_their_measured_share(minilm_tokenizer):
    """`nas plan` times a training step again at the mean width of length-grouped batches (`grouped_width`), where the
    space or the initialiser's budget asks for them, and counts every student step (the initialiser's) at that share."""
    import yaml
    from conftest import TINY_SUPERNET_SPEC

    from nas.data import load_dataset
    from nas.distill.loop import steps_for
    from nas.plan import Calibration, Work, estimate, grouped_width, text_lengths
    from nas.spec.job import DatasetRef, parse_spec
    from nas.students.shape import Shape
    from nas.teachers.load import TEACHER_BATCH

    texts = load_dataset(DatasetRef(name="rotten-tomatoes", max_rows=3000), "classification", 0).texts
    lengths = minilm_tokenizer(list(texts), truncation=True, max_length=64)["attention_mask"]
    lengths = np.array([sum(m) for m in lengths])
    width = grouped_width(text_lengths(minilm_tokenizer, texts, 64), 64, 32, 50)
    random_width = np.mean([lengths[b].max() for b in batches(len(lengths), 32, len(lengths) // 32, 0)])
    assert lengths.mean() <= width < 0.85 * random_width, (lengths.mean(), width, random_width)

    def cal(share: float, init_share: float) -> Calibration:
        return Calibration(teacher_step=0.5, teacher_row=0.002, teacher_latency=0.01,
                           small={"weights": 1e5, "step": 0.02, "row": 0.0001, "latency": 0.001},
                           large={"weights": 2e6, "step": 0.2, "row": 0.001, "latency": 0.004},
                           init={"step": 0.3, "row": 0.002}, grouped_step=share, grouped_init_step=init_share)

    shapes = [Shape(layers=1, hidden=128, heads=2, ffn=256), Shape(layers=2, hidden=256, heads=4, ffn=512)]
    raw = yaml.safe_load(TINY_SUPERNET_SPEC)
    raw["search"]["final"].update(augment=0)
    spec = parse_spec(raw)
    work = Work(n_rows=1000, initialiser=True)
    full, half = estimate(spec, work, cal(1.0, 1.0), shapes), estimate(spec, work, cal(0.5, 1.0), shapes)
    assert half["search"] < full["search"] and half["teacher"] == full["teacher"]
    assert cal(0.5, 1.0).student(1e6, "step") == pytest.approx(0.5 * cal(1.0, 1.0).student(1e6, "step"))
    assert cal(0.5, 1.0).student(1e6, "row") == cal(1.0, 1.0).student(1e6, "row")  # scoring is not grouped
    # the initialiser's distillation (in the teacher stage) at its own share: that many steps at 0.3 s, less 40%
    grouped_init = estimate(spec, work, cal(1.0, 0.6), shapes)
    n_all = int(0.8 * 1000)
    init_steps = steps_for(n_all, TEACHER_BATCH, spec.budgets.init_epochs(), None)
    assert full["teacher"] - grouped_init["teacher"] == pytest.approx(init_steps * 0.3 * 0.4, rel=1e-6)
    assert grouped_init["search"] == full["search"]
