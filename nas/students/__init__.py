"""What is searched: student shapes (`shape.py`, no torch) and the student families that turn a shape into a model.

`FAMILIES` maps each student family name to a loader of its module (the search space's allowed `family:` names are its
keys). A family module gives `extract_subnet(source, shape)` (a standalone model holding the shape's slices of
`source`), `supernet_forward(model, shape, inputs)` (the same computation on views of shared weights) and
`count_parameters(model)`:

- `bert`: prefix slices of a BERT-structured encoder (`bert_slice.py`), rewired by importance (`rewire.py`).

Adding one: a module with those three functions and one line here (docs/ARCHITECTURE.md shows an example).
"""

from __future__ import annotations


def _bert():
    from nas.students import bert_slice

    return bert_slice


FAMILIES = {"bert": _bert}
