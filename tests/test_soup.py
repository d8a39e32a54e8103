"""The uniform weight average of models trained from one start (nas/distill/soup.py) on real tiny BERT students."""

from __future__ import annotations

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
