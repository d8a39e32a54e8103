"""The uniform weight average of models trained from one start (nas/distill/soup.py) on real tiny BERT students."""

from __future__ import annotations

import math

import pytest
import torch
from transformers import BertConfig, BertForSequenceClassification

from nas.distill.soup import average_state_dicts


def tiny(seed: int, layers: int = 1) -> dict:
    torch.manual_seed(seed)
    cfg = BertConfig(vocab_size=50, hidden_size=16, num_hidden_layers=layers, num_attention_heads=2,
                     intermediate_size=32, max_position_embeddings=32, num_labels=2)
    return BertForSequenceClassification(cfg).state_dict()


def test_the_average_is_the_element_wise_mean_and_integer_buffers_stay():
    states = [tiny(s) for s in range(3)]
    avg = average_state_dicts(iter(states))  # any iterable, read once
    assert avg.keys() == states[0].keys()
    for k, v in avg.items():
        assert v.dtype == states[0][k].dtype
        if v.is_floating_point():
            assert torch.allclose(v, (states[0][k] + states[1][k] + states[2][k]) / 3, atol=1e-6), k
        else:
            assert torch.equal(v, states[0][k]), k
    model = BertForSequenceClassification(BertConfig(vocab_size=50, hidden_size=16, num_hidden_layers=1,
                                                     num_attention_heads=2, intermediate_size=32,
                                                     max_position_embeddings=32, num_labels=2))
    model.load_state_dict(avg)  # a working model of the same shape
    assert model(torch.tensor([[1, 2, 3]])).logits.shape == (1, 2)


def test_models_of_other_shapes_or_none_are_refused():
    with pytest.raises(ValueError, match="no models"):
        average_state_dicts([])
    with pytest.raises(ValueError, match="differ"):
        average_state_dicts([tiny(0, layers=1), tiny(1, layers=2)])
    other = tiny(1)
    other["classifier.weight"] = torch.zeros(3, 16)
    with pytest.raises(ValueError, match="classifier.weight"):
        average_state_dicts([tiny(0), other])


def test_nas_plan_counts_every_member_of_each_final():
    """`nas plan`'s search stage grows by one final's steps per extra member of each final student (final.seeds)."""
    import yaml
    from conftest import TINY_SUPERNET_SPEC

    from nas.distill.loop import steps_for
    from nas.plan import Calibration, Work, estimate
    from nas.spec.job import parse_spec
    from nas.students.shape import Shape

    cal = Calibration(teacher_step=0.5, teacher_row=0.002, teacher_latency=0.01,
                      small={"weights": 1e5, "step": 0.02, "row": 0.0001, "latency": 0.001},
                      large={"weights": 2e6, "step": 0.2, "row": 0.001, "latency": 0.004})
    shapes = [Shape(layers=1, hidden=128, heads=2, ffn=256), Shape(layers=2, hidden=256, heads=4, ffn=512)]
    raw = yaml.safe_load(TINY_SUPERNET_SPEC)
    search = {}
    for seeds in (1, 3):
        raw["search"]["final"].update(seeds=seeds, augment=0)
        spec = parse_spec(raw)
        search[seeds] = estimate(spec, Work(n_rows=1000), cal, shapes)["search"]
    fin = spec.search.final
    n_train = int(int(0.8 * 1000) * spec.budgets.data_fraction)
    avg_w = sum(s.encoder_weights() for s in shapes) / len(shapes)
    per_final = steps_for(n_train, 32, fin.epochs, None) * cal.student(avg_w, "step")  # the plan's batch
    assert search[3] - search[1] == pytest.approx(2 * fin.top_k * per_final, rel=1e-6)
    # where the finals train at once (one per GPU), the stage grows by the rounds of finals, not the finals: 3 GPUs
    # train a final's 3 members in one round, 2 GPUs in two
    at_once = {slots: estimate(spec, Work(n_rows=1000), cal, shapes, final_slots=slots)["search"] for slots in (2, 3)}
    assert search[3] - at_once[3] == pytest.approx((3 * fin.top_k - math.ceil(3 * fin.top_k / 3)) * per_final, rel=1e-6)
    assert search[3] - at_once[2] == pytest.approx((3 * fin.top_k - math.ceil(3 * fin.top_k / 2)) * per_final, rel=1e-6)
