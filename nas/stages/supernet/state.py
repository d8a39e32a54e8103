"""The state the steps of one run of the supernet schedule share."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from nas.context import JobContext
from nas.store.store import Store


@dataclass
class SupernetRun:
    """What the steps of one run of the schedule share."""

    ctx: JobContext
    store: Store
    held: np.ndarray  # train rows held out for importance rewiring (never trained on by the supernet)
    sn_train: np.ndarray  # the supernet's training rows
    steps: int  # the first round's sandwich steps
    probe_idx: list[int]  # the probe proxy's rows: train rows outside the rewiring slice, never dev
    supernet_dir: str | None = None  # the supernet students are searched and sliced from (round 2 replaces round 1)
    first_supernet_dir: str | None = None  # round 1's (the one-step baseline's source)
    assistant: dict | None = None  # the AutoDisc assistant's trial
    transfer_path: str | None = None  # the teacher-labelled transfer set, once labelled
