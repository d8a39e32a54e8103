"""Teachers: where they come from and how they are read (`load.py`: a named packaged teacher or a local Hugging Face
directory, fine-tuned for the task when it has no head, cached), and one small adapter per teacher family.

`FAMILIES` maps a config's `model_type` to a loader of its adapter module. An adapter gives `MODEL_TYPE`, `model_class()`
(the transformers class with a sequence-classification head) and `shape_limits(config)` (the largest shape its weights
can be sliced into: layers, hidden, heads, ffn), which the search space is checked against:

- `bert`: BERT itself (`bert.py`).

Adding one: an adapter module and one line here (docs/ARCHITECTURE.md shows an example).
"""

from __future__ import annotations


def _bert():
    from nas.teachers import bert

    return bert


FAMILIES = {"bert": _bert}


def family_of(path) -> object:
    """The adapter module of the saved model in directory `path` (its config.json's `model_type`)."""
    import json
    import pathlib

    return FAMILIES[json.loads((pathlib.Path(path) / "config.json").read_text())["model_type"]]()


def load_pretrained(path, **kwargs):
    """The saved model in `path` as its family's sequence-classification class, eager attention (attention maps), in
    eval mode, on the CPU (named explicitly: models are loaded on the host and the loops move them)."""
    from nas.compute import on_host

    with on_host():
        return family_of(path).model_class().from_pretrained(path, attn_implementation="eager", **kwargs).eval()
