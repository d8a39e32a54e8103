"""The supernet schedule (AutoDisc-style), in the order `schedule.py` runs it (`state.py`: what its steps share): `rounds.py` (rewire the teacher and
sandwich-train a supernet; AutoDisc's optional second round from the distilled assistant), `autodisc.py` (choose the
assistant by tau = P + lambda (1 - scale)), `search.py` (student search on inherited weights, pruned by the latency
predictor), `finals.py` (standalone distillation of the chosen front points)."""

from __future__ import annotations

from nas.stages.supernet.schedule import check, run

__all__ = ["check", "run"]
