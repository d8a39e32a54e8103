"""Per-trial search: every candidate distilled from scratch (initialised from the teacher's slices), one Ray Tune trial
each. The usual practice, kept as the baseline the supernet schedule is measured against.

Random search asks for the whole budget at once; the other strategies one population per generation. With a deadline
(`ctx.deadline`), candidates are asked `max_concurrent` at a time and none is started after it (wall-clock budget)."""

from __future__ import annotations

import os
import time

from nas.context import JobContext
from nas.search.constraints import as_told
from nas.search.space import searched_space
from nas.search.strategies import make_strategy
from nas.spec.errors import SpecError
from nas.spec.job import JobSpec
from nas.store.engine import nas_home
from nas.store.records import trial_objectives
from nas.store.store import Store
from nas.students.arch import student_shape

MIXED_STRATEGIES = ("random", "evolution")  # the strategies that search several student families at once


def check(spec: JobSpec, teacher_config: dict) -> None:
    """A space of several student families needs a strategy that searches them (the strategy names themselves come
    from the strategy registry)."""
    from nas.spec.space import load_search_space

    if spec.search.strategy not in MIXED_STRATEGIES and load_search_space(spec.search_space).other_families():
        raise SpecError("search.strategy", f"{spec.search.strategy} searches BERT shapes only; a search space with "
                        f"`families:` is searched by {' or '.join(MIXED_STRATEGIES)}")


def run(ctx: JobContext, store: Store) -> None:
    from tqdm import tqdm

    spec = ctx.spec
    store.set_job_stage(ctx.job_id, "search")
    strategy = make_strategy(spec.search.strategy, searched_space(ctx.space), spec.seed, population=spec.search.population,
                             use_size=spec.objectives.size)
    students = store.trials(ctx.job_id, kind="student")
    for t in students:
        strategy.tell(student_shape(t["config"]["shape"]), completed_objectives(t, spec))
    bar = tqdm(total=spec.budgets.trials, initial=len(students), desc=f"job {ctx.job_id} trials", unit="trial",
               disable=not ctx.progress)
    generation = 0
    while True:
        students = store.trials(ctx.job_id, kind="student")
        waiting = [t for t in students if t["state"] == "WAITING"]
        if waiting:
            run_waiting(ctx, store, waiting, strategy, generation, bar)
        elif not propose(ctx, store, strategy, len(students), generation):
            break
        else:
            generation += 1
    bar.close()


def propose(ctx: JobContext, store: Store, strategy, n_students: int, generation: int) -> bool:
    """Add the next generation's candidates as WAITING trials; False when the budget, the clock or the space is spent."""
    from nas.distill.loop import steps_for

    spec = ctx.spec
    missing = spec.budgets.trials - n_students
    if missing <= 0:
        return False
    n = missing if spec.search.strategy == "random" else min(missing, spec.search.population)
    if ctx.deadline is not None:
        if time.time() >= ctx.deadline:
            ctx.say(f"search: the wall-clock budget is spent after {n_students} trials")
            return False
        n = min(n, spec.budgets.max_concurrent)
    shapes = strategy.ask(n)
    if not shapes:
        ctx.say("search: the space is exhausted")
        return False
    others = ctx.space.other_families()
    for shape in shapes:  # each family with its own distillation settings and epochs where the space gives them
        distill_cfg = ctx.space.distill_for(shape.family).model_dump()
        epochs = getattr(others.get(shape.family), "epochs", None)  # a family's own epochs win over budgets.steps
        steps = steps_for(ctx.train_rows(), distill_cfg["batch_size"], epochs or spec.budgets.epochs,
                          None if epochs else spec.budgets.steps)
        store.add_trial(ctx.job_id, "student", {"shape": shape.as_dict(), "distill": distill_cfg, "steps": steps,
                                                "strategy": spec.search.strategy, "generation": generation})
    return True


def run_waiting(ctx: JobContext, store: Store, waiting: list[dict], strategy, generation: int, bar) -> None:
    """Run the WAITING trials as Ray Tune trials, then tell the strategy what each one measured."""
    from nas.service.cluster import run_trials
    from nas.workers.student_trial import run_student_trial

    spec = ctx.spec

    def on_result(result: dict) -> None:
        bar.update(1)
        if result.get("state") == "COMPLETE":
            bar.set_postfix(last=f"#{result['trial_number']} acc {result.get('accuracy', float('nan')):.3f} "
                                 f"{result.get('p50_ms', float('nan')):.2f}ms")
        else:
            bar.write(f"trial {result.get('trial_number')} failed: {result.get('error')}")

    threads = ctx.trial_threads()
    # fault injection for tests: these trial numbers get poisoned soft targets (a real NaN loss)
    nan_trials = [int(x) for x in os.environ.get("NAS_INJECT_NAN_TRIALS", "").split(",") if x.strip()]
    rerun = sum(t["attempts"] > 0 for t in waiting)
    run_trials(run_student_trial, [t["id"] for t in waiting], ctx, nas_home() / "ray_results",
               {"cpu": threads, "gpu": ctx.compute.gpus_per_trial}, spec.budgets.max_concurrent,
               f"job-{ctx.job_id}-gen-{generation}" + (f"-retry-{rerun}" if rerun else ""), on_result, threads=threads,
               nan_trial_numbers=nan_trials)
    # a trial whose worker (or node) died past Tune's own retry is still RUNNING: run it again, at most 3 starts
    requeued, lost = store.requeue_lost_trials(ctx.job_id, "student", max_attempts=3)
    if requeued or lost:
        ctx.say(f"search: {requeued} trial(s) lost with their Ray worker run again, {lost} failed for good")
    for t in waiting:
        done = store.get_trial(t["id"])
        if done["state"] != "WAITING":  # a requeued one is told when it ends
            strategy.tell(student_shape(done["config"]["shape"]), completed_objectives(done, spec))


def completed_objectives(t: dict, spec: JobSpec) -> dict:
    """What the strategy is told of a trial: {} unless COMPLETE; a trial over the job's constraints ranked below every
    one within them (nas/search/constraints.py)."""
    if t["state"] != "COMPLETE":
        return {}
    return as_told(trial_objectives(t, spec.objectives.metric, spec.objectives.latency), spec.constraints.model_dump())
