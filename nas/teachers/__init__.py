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
