"""Distillation: `losses.py` (plain functions and the LOSSES registry), `loop.py` (settings and the training loop),
`evaluate.py` (logits and scores), `supernet.py` (sandwich-rule supernet training), `proxy.py` (a shape scored with
inherited weights), `augment.py` (the teacher-labelled transfer set), `aux_teacher.py` (a non-neural teacher for the
relevance loss)."""
