"""Student search on inherited supernet weights: each generation's shapes scored with the supernet's weights and
measured (`evaluate_new`), pruned first by the latency predictor when the job has a latency constraint."""

from __future__ import annotations

import time

from nas.search.constraints import as_told
from nas.search.strategies import make_strategy
from nas.spec.space import StudentSpace
from nas.stages.supernet.state import SupernetRun
from nas.store.records import metric_value, trial_objectives
from nas.store.store import Store
from nas.students.shape import Shape


def evaluate_new(state: SupernetRun, kind: str, shapes: list[Shape], extra: dict | None = None) -> list[dict]:
    """Add one trial of `kind` per shape and score them all in one Ray task on the current supernet."""
    items = []
    for s in shapes:
        t = state.store.add_trial(state.ctx.job_id, kind, {"shape": s.as_dict(), **(extra or {})})
        items.append({"trial_id": t["id"], "shape": s.as_dict()})
    return evaluate(state, items) if items else []


def evaluate(state: SupernetRun, items: list[dict]) -> list[dict]:
    import ray

    from nas.workers.supernet import evaluate_shapes_task

    task = ray.remote(num_cpus=state.ctx.threads, **state.ctx.compute.ray_resources())(evaluate_shapes_task)
    return ray.get(task.remote(state.ctx, state.supernet_dir, items, state.probe_idx))


def search_students(state: SupernetRun, space: StudentSpace) -> None:
    """Ask the strategy one population per generation until the trial budget (or the clock, or the space) is spent;
    the strategy is first told every student the store already holds. With a latency limit the last `climb_reserve`
    trials climb to the limit instead (`climb_to_limit`)."""
    from tqdm import tqdm

    ctx, store = state.ctx, state.store
    spec = ctx.spec
    store.set_job_stage(ctx.job_id, "search")
    strategy = make_strategy(spec.search.strategy, space, spec.seed, population=spec.search.population,
                             use_size=spec.objectives.size)
    students = store.trials(ctx.job_id, kind="student")
    cons = spec.constraints.model_dump()
    for t in students:
        done = t["state"] == "COMPLETE"
        strategy.tell(Shape.from_dict(t["config"]["shape"]), as_told(
            trial_objectives(t, spec.objectives.metric, spec.objectives.latency, "proxy") if done else {}, cons))
    waiting = [t for t in students if t["state"] == "WAITING"]
    if waiting:
        evaluate(state, [{"trial_id": t["id"], "shape": t["config"]["shape"]} for t in waiting])
    bar = tqdm(total=spec.budgets.trials, initial=len(students), desc="search", unit="shape", disable=not ctx.progress)
    generation, n_done = 0, len(students)
    latency_field = "p50_ms" if spec.objectives.latency == "p50" else "p90_ms"
    reserve = climb_reserve(spec, space)
    while n_done < spec.budgets.trials - reserve:
        if ctx.deadline is not None and time.time() >= ctx.deadline:
            ctx.say(f"search: the wall-clock budget is spent after {n_done} proxy evaluations")
            break
        n = min(spec.search.population, spec.budgets.trials - reserve - n_done)
        shapes = strategy.ask(n)
        if not shapes:
            ctx.say("search: the space is exhausted")
            break
        shapes = prune_by_predictor(store, ctx.job_id, shapes, spec, generation, ctx.say)
        extra = {"strategy": spec.search.strategy, "generation": generation, "source": "proxy"}
        for r in evaluate_new(state, "student", shapes, extra):
            if r["state"] == "COMPLETE":
                strategy.tell(Shape.from_dict(r["shape"]), as_told({
                    "metric": r[spec.objectives.metric], "latency_ms": r[latency_field], "params": r["params"],
                    "p50_ms": r["p50_ms"], "p90_ms": r["p90_ms"], "speedup": r.get("speedup")}, cons))
        generation += 1
        n_done += n
        bar.update(n)
    if reserve:
        n_done += climb_to_limit(state, space, spec.budgets.trials - n_done, generation, bar)
    bar.close()


def climb_reserve(spec, space) -> int:
    """The proxy evaluations of `budgets.trials` the climb to the latency limit keeps (`search.climb`, at most a
    quarter of the trials): none without a limit, or where the space is not BERT slices alone."""
    if not has_limit(spec) or not isinstance(space, StudentSpace):
        return 0
    return min(spec.search.climb, spec.budgets.trials // 4)


def has_limit(spec) -> bool:
    c = spec.constraints
    return not (c.latency_p90_ms is None and c.latency_p50_ms is None and c.min_speedup is None)


def measured_students(done: list[dict]) -> list[tuple[Shape, dict]]:
    """(shape, its last latency row with its speedup) of each completed student trial that was measured."""
    return [(Shape.from_dict(t["config"]["shape"]), {**t["latency"][-1], "speedup": metric_value(t, "speedup")})
            for t in done if t["state"] == "COMPLETE" and t["latency"]]


def climb_to_limit(state: SupernetRun, space: StudentSpace, budget: int, generation: int, bar) -> int:
    """Score up to `budget` more shapes, a few at a time, each the larger neighbours of the most accurate student
    within the limits that the latency predictor (fitted on the job's own measurements) says fit
    (nas/search/climb.py); the trials say `"source": "climb"`. Returns how many were scored."""
    from nas.latency.predictor import fit_predictor
    from nas.search.climb import climb_candidates
    from nas.search.constraints import violation

    ctx, store, spec = state.ctx, state.store, state.ctx.spec
    cons = spec.constraints.model_dump()
    spent = 0
    while spent < budget and (ctx.deadline is None or time.time() < ctx.deadline):
        students = store.trials(ctx.job_id, kind="student")
        done = [t for t in students if t["state"] == "COMPLETE" and t["latency"]]
        measured = measured_students(done)
        limit = latency_limit(spec, measured)
        if limit is None or len(measured) < 3:
            break
        field, ms = limit
        pred = fit_predictor([s for s, _ in measured], [row[field] for _, row in measured])
        scored = []
        for t in done:
            o = trial_objectives(t, spec.objectives.metric, spec.objectives.latency, "proxy")
            if o and o["metric"] is not None and violation(o, cons) == 0.0:
                scored.append((Shape.from_dict(t["config"]["shape"]), o["metric"]))
        tried = {Shape.from_dict(t["config"]["shape"]).key for t in students}
        shapes = climb_candidates(space, scored, tried, lambda s: pred.predict(s) <= ms, budget - spent)
        if not shapes:
            ctx.say(f"search: the climb to the latency limit ({field[:3]} {round(ms, 3)} ms) found nothing left to "
                    f"try after {spent} shapes")
            break
        ctx.say("search: climbing to the latency limit: " + ", ".join(
            f"{s.key} (predicted {pred.predict(s):.2f} ms)" for s in shapes))
        evaluate_new(state, "student", shapes, {"strategy": "climb", "generation": generation, "source": "climb"})
        spent += len(shapes)
        bar.update(len(shapes))
        generation += 1
    return spent


def latency_limit(spec, measured: list[tuple[Shape, dict]] = ()) -> tuple[str, float] | None:
    """The limit the predictor prunes by: p90 or p50 in ms, else the p50 that `min_speedup` allows, from the teacher's
    p50 in the rounds the job's students were measured in (the median of speedup x p50 over `measured`)."""
    c = spec.constraints
    if c.latency_p90_ms is not None:
        return "p90_ms", c.latency_p90_ms
    if c.latency_p50_ms is not None:
        return "p50_ms", c.latency_p50_ms
    implied = sorted(row["speedup"] * row["p50_ms"] for _, row in measured if row.get("speedup"))
    if c.min_speedup is not None and implied:
        return "p50_ms", implied[len(implied) // 2] / c.min_speedup
    return None


def prune_by_predictor(store: Store, job_id: int, shapes: list[Shape], spec, generation: int, log,
                       min_fit: int = 8) -> list[Shape]:
    """With a latency constraint and enough of the job's own measurements, fit the additive predictor and record the
    shapes it is sure miss the limit as PRUNED trials (never measured); the rest, ordered fastest-predicted first."""
    from nas.latency.predictor import feasible, fit_predictor

    if not has_limit(spec):
        return shapes
    measured = measured_students(store.trials(job_id, kind="student", state="COMPLETE"))
    limit = latency_limit(spec, measured)
    if len(measured) < min_fit or limit is None:
        return shapes
    field, ms = limit
    pred = fit_predictor([s for s, _ in measured], [row[field] for _, row in measured])
    keep = []
    for s in shapes:
        if feasible(pred, s, ms):
            keep.append(s)
        else:
            t = store.add_trial(job_id, "student", {"shape": s.as_dict(), "strategy": spec.search.strategy,
                                                    "generation": generation, "source": "predictor"})
            store.finish_trial(t["id"], "PRUNED", error=f"predicted {field[:3]} {pred.predict(s):.2f} ms > limit {round(ms, 3)} ms "
                                                      f"(predictor fitted on {pred.n_fit} measurements, MAPE {pred.fit_mape:.3f})")
    if len(keep) < len(shapes):
        log(f"search: the latency predictor pruned {len(shapes) - len(keep)} of {len(shapes)} candidates "
            f"({field[:3]} limit {round(ms, 3)} ms)")
    return sorted(keep, key=pred.predict)
