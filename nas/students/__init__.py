"""What is searched: student shapes (`shape.py` for BERT slices, `arch.py` for the other families; no torch) and the
student families that turn a shape into a model.

`FAMILIES` maps each student family name to a loader of its module; the search space names the families it searches
(`student:` holds the `bert` axes, `families:` the others). Every family module gives `extract_subnet(source, shape)`
(a standalone student built from what students slice: its weights' slices, or its token embeddings),
`count_parameters(model)` and `size_mb(model)`; every student's forward takes the source tokenizer's
`input_ids` / `attention_mask` and returns an output with `.logits`, so all families go through the same trial path,
latency protocol and exports.

- `bert`: prefix slices of a BERT-structured encoder (`bert_slice.py`), rewired by importance (`rewire.py`); the only
  family the supernet covers (it also gives `supernet_forward(model, shape, inputs)`);
- `albert` (`albert.py`): a factorised-embedding encoder applying one shared layer (the source's first, sliced)
  several times; a stock transformers ALBERT;
- `textcnn` (`textcnn.py`): Kim's CNN; `bilstm` (`bilstm.py`): Tang et al.'s BiLSTM; `boe` (`boe.py`): a bag of token
  (and hashed bigram) embeddings with an MLP. Their token embeddings start as the source's table projected onto its
  principal directions (`small.py`, which also saves and loads them).

Adding one: a module with those functions, its axes in `arch.AXES`, and one line here (docs/ARCHITECTURE.md shows an
example).
"""

from __future__ import annotations

import importlib


def _module(name: str):
    return lambda: importlib.import_module(f"nas.students.{name}")


FAMILIES = {"bert": _module("bert_slice"), "albert": _module("albert"), "textcnn": _module("textcnn"),
            "bilstm": _module("bilstm"), "boe": _module("boe")}


def family_module(name: str):
    """The module of student family `name` (KeyError for an unknown one)."""
    return FAMILIES[name]()


def module_of(shape):
    """The family module of a `Shape` (bert) or an `Arch`."""
    return family_module(getattr(shape, "family", "bert"))


def load_student(path):
    """A saved student of any family, in eval mode on the CPU: a non-transformer family's (config.json's model_type
    nas-*, nas/students/small.py), else the transformers model `nas.teachers.load_pretrained` reads."""
    from nas.students.small import is_small, load_small
    from nas.teachers import load_pretrained

    return load_small(path) if is_small(path) else load_pretrained(path)
