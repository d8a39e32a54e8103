"""A job is its stages in order: teacher -> transfer -> search (per-trial KD, or the supernet schedule) -> hpo ->
scoring (front points on test) -> references. This is the only place that knows the order. Every stage checks its own
part of the input before the job row is written, and every stage resumes from what the store holds (the contract is
in `nas/stages/__init__.py`), so `nas resume JOB` continues a killed job, losing at most the trials that were running."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from typing import Callable

from nas import compute
from nas.context import JobContext
from nas.data import Dataset, load_dataset
from nas.service.cluster import cluster_gpus, init_ray
from nas.spec.errors import SpecError
from nas.spec.job import JobSpec, parse_spec, with_latency_device
from nas.spec.space import SearchSpace, load_search_space
from nas.stages import hpo, references, scoring, search, supernet, teacher, transfer
from nas.store.engine import nas_home
from nas.store.store import Store
from nas.teachers.load import root_of, teacher_config

CHECKED = (teacher, transfer, search, supernet, hpo, references)  # every stage checks its part, whether or not the job runs it


@dataclass
class Prepared:
    spec: JobSpec
    teacher_config: dict  # of what students slice: the teacher, or spec.student_init (`root_of`)
    space: SearchSpace
    dataset: Dataset


def prepare(spec: JobSpec, cluster: bool = False) -> Prepared:
    """Everything that can be wrong with the user's input is found here, before the store is touched. `cluster`: the
    job does not run on this machine's devices (it joins a Ray cluster, whose GPUs are the workers', or it is only
    queued), so whether a GPU is visible here is not checked."""
    compute.check(spec.compute, cluster)
    # the search space, the shapes and the sequence length are checked against what students slice
    _, tcfg = root_of(spec.teacher, spec.student_init, teacher_config(spec.teacher))
    space = load_search_space(spec.search_space, tcfg)
    for stage in CHECKED:
        stage.check(spec, tcfg)
    if not cluster:  # after what is wrong with the spec itself: whether this machine can run it
        teacher.check_visible(spec)
    return Prepared(spec, tcfg, space, load_dataset(spec.dataset, spec.task, spec.seed))


def job_context(prep: Prepared, store: Store, job_id: int, log: Callable[[str], None] = print, progress: bool = True,
                ray_address: str | None = None) -> JobContext:
    """The context of job `job_id` before its teacher stage has run (the stage fills in the rest)."""
    return JobContext(spec=prep.spec, space=prep.space, teacher_config=prep.teacher_config, job_id=job_id,
                      storage=store.url, artefact_dir=str(nas_home() / "artefacts" / f"job-{job_id}"),
                      threads=max(1, os.cpu_count() or 1),
                      compute=compute.resolve(prep.spec.compute, prep.spec.budgets.max_concurrent),
                      dataset=prep.dataset, log=log, progress=progress, ray_address=ray_address)


class JobInterrupted(KeyboardInterrupt):
    """A job stopped by Ctrl-C or SIGTERM: marked INTERRUPTED in the store, its running trials back in the queue."""

    def __init__(self, job_id: int, stage: str | None):
        super().__init__(f"job {job_id} interrupted in stage {stage}")
        self.job_id, self.stage = job_id, stage


def search_stage(spec: JobSpec):
    """The search stage this job runs: the supernet schedule when `search.supernet` is set, else per-trial KD."""
    return supernet if spec.search.supernet is not None else search


def run_job(spec: JobSpec, store: Store, job_id: int | None = None, log: Callable[[str], None] = print,
            progress: bool = True, ray_address: str | None = None, search_budget_s: float | None = None,
            marks: dict | None = None, plan: dict | None = None) -> int:
    """Validate, create the job (unless resuming `job_id`), run every stage. Returns the job id.

    `plan`: the job's time estimate (nas/plan.py), stored on the job beside the stage times it measures.
    `search_budget_s` (default: `budgets.time_s`): no trial, proxy generation or final starts after it. `marks`, when
    given, receives `search_start` / `search_end` (time.time()) around the search stage, for hypervolume-over-time
    curves (benchmarks/head_to_head.py)."""
    prep = prepare(spec, cluster=ray_address is not None)
    for note in prep.dataset.meta.get("notes", []):  # what was read differently from the file, or looks too small
        log(f"data: {note}")
    if job_id is None:
        job_id = store.create_job(spec.name, spec.model_dump(mode="json"), status="RUNNING", plan=plan)
        store.set_job_status(job_id, "RUNNING", stage="teacher")
    else:
        reset = store.reset_unfinished_trials(job_id)
        if reset:
            log(f"job {job_id}: {reset} interrupted trial(s) go back to the queue")
        store.set_job_status(job_id, "RUNNING")
    ctx = job_context(prep, store, job_id, log=log, progress=progress, ray_address=ray_address)
    marks = marks if marks is not None else {}
    try:
        init_ray(ray_address)
        ctx.compute = compute.resolve(spec.compute, spec.budgets.max_concurrent, cuda_available=cluster_gpus() > 0)
        # latency.device auto follows the compute: measured on cuda where the job trains on cuda
        ctx.spec = with_latency_device(spec, "cuda" if ctx.compute.cuda else "cpu")
        if ctx.spec is not spec:
            store.set_job_spec(job_id, ctx.spec.model_dump(mode="json"))
        walls: dict[str, float] = {}

        def timed(name: str, stage) -> None:
            t0 = time.perf_counter()
            stage.run(ctx, store)
            walls[name] = walls.get(name, 0.0) + time.perf_counter() - t0

        with compute.strict_devices():  # a no-op unless the test hook is set
            timed("teacher", teacher)
            timed("transfer", transfer)
            budget = search_budget_s or spec.budgets.time_s
            marks["search_start"] = time.time()
            ctx.deadline = marks["search_start"] + budget if budget else None
            timed("search", search_stage(spec))
            marks["search_end"] = time.time()
            if spec.hpo is not None:
                timed("hpo", hpo)
            timed("scoring", scoring)
            timed("references", references)
        record_walls(store, job_id, walls, log)
        store.set_job_status(job_id, "COMPLETE", stage="done")
    except KeyboardInterrupt:  # Ctrl-C or SIGTERM (nas/ui/base.py: stop_on_signals): nothing left RUNNING
        stage = (store.get_job(job_id) or {}).get("stage")
        store.reset_unfinished_trials(job_id)
        store.set_job_status(job_id, "INTERRUPTED", error=f"interrupted in stage {stage}; `nas resume {job_id}` continues it")
        raise JobInterrupted(job_id, stage) from None
    except Exception as exc:
        store.set_job_status(job_id, "FAILED", error=f"{type(exc).__name__}: {exc}")
        raise
    return job_id


def record_walls(store: Store, job_id: int, walls: dict[str, float], log: Callable[[str], None]) -> None:
    """Each stage's wall time in this run, on the teacher's trial (`wall_s_<stage>`, train split) and in the log."""
    t = next(iter(store.trials(job_id, kind="teacher")), None)
    if t is not None:
        for name, s in walls.items():
            store.add_metric(t["id"], f"wall_s_{name}", s, "train", "final")
    log("stage wall times (this run): " + ", ".join(f"{k} {v:.0f} s" for k, v in walls.items())
        + f"; total {sum(walls.values()):.0f} s")


def run_timed_job(spec: JobSpec, store: Store, budget_s: float | None = None, log: Callable[[str], None] = print,
                  progress: bool = False) -> dict:
    """`run_job` with a wall-clock budget on its search stage. Returns {"job_id", "search_start", "search_end"}
    (time.time() values); the teacher stage (a shared, cached input) and the references are outside the timed span."""
    marks: dict = {}
    job_id = run_job(spec, store, log=log, progress=progress, search_budget_s=budget_s, marks=marks)
    return {"job_id": job_id, **marks}


def resume_job(store: Store, job_id: int, log=print, progress: bool = True, ray_address: str | None = None) -> int:
    job = store.get_job(job_id)
    if job is None:
        raise SpecError("JOB", f"no job {job_id} in {store.url}")
    spec = parse_spec(job["spec"])
    return run_job(spec, store, job_id=job_id, log=log, progress=progress, ray_address=ray_address)
