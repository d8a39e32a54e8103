"""Teachers: where they come from and how they are read (`load.py`: a named packaged teacher or a local Hugging Face
directory, fine-tuned for the task when it has no head, cached), and one small adapter per teacher family.

`FAMILIES` maps a config's `model_type` to a loader of its `Family` (nas/teachers/adapter.py: where the embeddings,
layers, heads, FFN and classifier live, what the config calls the shape axes, how positions are numbered). It gives
`model_class()` (the transformers class with a sequence-classification head) and `shape_limits(config)` (the largest
shape its weights can be sliced into), which the search space is checked against. Families whose layers have BERT's
structure, so that students slice the teacher's own weights:

- `bert` (bert.py), `roberta` and `xlm-roberta` (roberta.py), `electra` (electra.py), `mpnet` (mpnet.py),
  `distilbert` (distilbert.py).

Adding one: an adapter module with one `Family(...)` and one line here (docs/ARCHITECTURE.md shows an example).
"""

from __future__ import annotations

import importlib


def _family(module: str, name: str = "FAMILY"):
    return lambda: getattr(importlib.import_module(f"nas.teachers.{module}"), name)


FAMILIES = {"bert": _family("bert"), "roberta": _family("roberta", "ROBERTA"),
            "xlm-roberta": _family("roberta", "XLM_ROBERTA"), "electra": _family("electra"), "mpnet": _family("mpnet"),
            "distilbert": _family("distilbert")}


def family(model_type: str):
    """The `Family` of a config's model_type (KeyError for one not in FAMILIES)."""
    return FAMILIES[model_type]()


def model_class_of(path):
    """The sequence-classification class of the saved model in `path`: its family's where the service slices it, else
    whatever AutoModelForSequenceClassification picks (a teacher that is only distilled from)."""
    import json
    import pathlib

    model_type = json.loads((pathlib.Path(path) / "config.json").read_text())["model_type"]
    if model_type in FAMILIES:
        return family(model_type).model_class()
    from transformers import AutoModelForSequenceClassification

    return AutoModelForSequenceClassification


def load_pretrained(path, **kwargs):
    """The saved model in `path` as its sequence-classification class (`model_class_of`), eager attention (attention
    maps), in eval mode, on the CPU (named explicitly: models are loaded on the host and the loops move them). A saved
    student of any family: `nas.students.load_student`."""
    from nas.compute import on_host

    with on_host():
        return model_class_of(path).from_pretrained(path, attn_implementation="eager", **kwargs).eval()
