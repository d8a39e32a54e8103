"""The typed state a job hands its stages and workers.

The pipeline builds one `JobContext` per run from the checked input; the teacher stage fills in what every later stage
reads (the teacher's cached info, the splits, the token cache); workers receive it pickled by Ray, without the
driver-only fields (the dataset's texts, the log function), and open their own store connection from `storage`.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Callable

from nas.compute import CPU, Compute
from nas.data import Dataset
from nas.spec.job import JobSpec
from nas.spec.space import SearchSpace

DRIVER_ONLY = ("dataset", "log")


@dataclass
class JobContext:
    spec: JobSpec
    space: SearchSpace
    teacher_config: dict  # the config.json students slice: the teacher's, or spec.student_init's
    job_id: int
    storage: str  # the store's URL: every worker opens its own connection
    artefact_dir: str  # where the job's models, logits and checkpoints go
    threads: int  # CPU threads of this node: a worker that has the node to itself uses them all
    compute: Compute = CPU  # the device and precision every stage trains and infers on, and what trials ask Ray for

    # filled by the teacher stage
    teacher: dict = field(default_factory=dict)  # the cached teacher.json: dir, logits_path, source, fine_tuned, dev, test
    # what students slice (the cached teacher.json of the teacher itself, or of the student initialiser distilled from
    # its logits) and its shape; the teacher's logits are the targets either way
    source: dict = field(default_factory=dict)
    teacher_shape: dict | None = None  # Shape.as_dict() of what students slice (the source)
    teacher_p50_ms: float | None = None  # the teacher's measured p50 (the front's reference)
    teacher_params: int | None = None
    tokens_path: str | None = None  # the token cache: input_ids etc. (n, seq) for every row of the dataset
    labels: list[int] = field(default_factory=list)
    train_idx: list[int] = field(default_factory=list)  # after budgets.data_fraction
    dev_idx: list[int] = field(default_factory=list)
    test_idx: list[int] = field(default_factory=list)
    # the teacher-labelled transfer corpus every student trains on beside the train rows (spec `transfer:`; None: off)
    transfer_path: str | None = None
    transfer_rows: int = 0
    # where any teacher-labelled transfer set of the job is cached, and the tokenizer its rows are in (None: the
    # teacher's): beside the teacher, or, where students slice a student initialiser, in a folder beside it keyed by
    # the initialiser, whose tokens the set holds (it is labelled before the initialiser, which learns from it too)
    transfer_dir: str | None = None
    transfer_tokenizer: str | None = None

    # driver only: never shipped to a worker
    dataset: Dataset | None = None
    log: Callable[[str], None] | None = print
    progress: bool = True  # progress bars on the driver
    ray_address: str | None = None  # None: local Ray
    deadline: float | None = None  # time.time() after which the search starts nothing new (budgets.time_s or a caller)

    @property
    def seed(self) -> int:
        return self.spec.seed

    def train_rows(self) -> int:
        """Rows a student trains on: the train split (after budgets.data_fraction) and the transfer corpus."""
        return len(self.train_idx) + self.transfer_rows

    def one_off_in_ray_task(self) -> bool:
        """Where the job's one-off heavy work (the teacher's fine-tuning, the transfer set's labelling) runs: in a Ray
        task where the GPUs are, or on a cluster whose driver stays on the head; else in the job's own process, with
        a progress bar (Ray's workers do not log to the driver)."""
        return bool(self.compute.cuda or self.ray_address)

    def trial_threads(self) -> int:
        """CPU threads of one small trial: compute.cpus_per_trial, else the node's share of max_concurrent trials."""
        return self.compute.cpus_per_trial or max(1, self.threads // self.spec.budgets.max_concurrent)

    def say(self, message: str) -> None:
        """Log a line on the driver (a worker has no log function: it writes to the store)."""
        if self.log is not None:
            self.log(message)

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        for name in DRIVER_ONLY:
            state[name] = None
        return state

    def to_dict(self) -> dict:
        """The shipped fields as plain JSON-able values (what a worker could rebuild the context from)."""
        out = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name not in DRIVER_ONLY}
        out["spec"] = self.spec.model_dump(mode="json")
        out["space"] = self.space.model_dump(mode="json")
        out["compute"] = dataclasses.asdict(self.compute)
        return out
