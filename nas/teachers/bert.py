"""The BERT teacher family: a `BertForSequenceClassification`, sliced directly by `nas/students/bert_slice.py`."""

from __future__ import annotations

MODEL_TYPE = "bert"
DESCRIPTION = "a BERT-family model (model_type: bert)"


def model_class():
    from transformers import BertForSequenceClassification

    return BertForSequenceClassification


def shape_limits(config: dict) -> dict[str, int]:
    """The largest student shape this teacher's weights can be sliced into, by axis."""
    return {"layers": config["num_hidden_layers"], "hidden": config["hidden_size"],
            "heads": config["num_attention_heads"], "ffn": config["intermediate_size"]}
