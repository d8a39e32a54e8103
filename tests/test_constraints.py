"""A latency budget (`constraints.min_speedup`, or p50/p90 in ms) wherever candidates are compared: the strategy ranks
every candidate within it above every one over it, the finals are spent inside it, the front holds only points within
it, and the predictor prunes by the p50 it allows. Trials are real rows in a real SQLite store."""

from __future__ import annotations

import numpy as np
import pytest

from nas.latency.predictor import features
from nas.spec.job import JobSpec
from nas.store import Store
from nas.students.shape import Shape

TEACHER_MS = 60.0


def lat(p50: float, speedup: float | None = None) -> dict:
    row = {"fingerprint": {"cpu": "here"}, "fingerprint_id": "here", "device": "cpu", "runtime": "eager", "dtype": "fp32",
           "batch": 1, "seq_len": 48, "threads": 2, "warmup": 1, "n": 20, "p50_ms": p50, "p90_ms": p50 * 1.1,
           "mean_ms": p50, "cv": 0.01}
    return {**row, "speedup": speedup} if speedup else row


def job_with_students(store: Store, constraints: dict, points: list[tuple[Shape, float, float]]) -> tuple[int, dict]:
    """A job (its spec stored as a real job's is) with a measured teacher and one COMPLETE proxy-scored student per
    (shape, dev accuracy, speedup)."""
    spec = JobSpec.model_validate({"name": "budget", "dataset": "bbc-news", "constraints": constraints})
    job = store.create_job("budget", spec.model_dump(mode="json"))
    teacher = store.add_trial(job, "teacher", {"shape": Shape(12, 768, 12, 3072).as_dict()})["id"]
    store.add_metric(teacher, "accuracy", 0.89, "dev", "final")
    store.add_latency(teacher, "teacher", lat(TEACHER_MS))
    store.finish_trial(teacher, "COMPLETE")
    for shape, acc, speedup in points:
        t = store.add_trial(job, "student", {"shape": shape.as_dict(), "source": "proxy"})["id"]
        store.add_metric(t, "accuracy", acc, "dev", "proxy")
        store.add_metric(t, "speedup", speedup, "dev", "proxy")
        store.add_latency(t, shape.key, lat(TEACHER_MS / speedup, speedup))
        store.finish_trial(t, "COMPLETE")
    return job, spec.constraints.model_dump()


# accuracy rises as speed falls: without a budget the slow accurate ones win
POINTS = [(Shape(1, 192, 4, 512), 0.78, 60.0), (Shape(2, 384, 6, 512), 0.80, 25.0),
          (Shape(4, 384, 12, 512), 0.83, 13.9), (Shape(4, 384, 12, 768), 0.835, 12.5),
          (Shape(5, 384, 12, 512), 0.838, 10.6), (Shape(4, 384, 12, 1536), 0.842, 8.6),
          (Shape(6, 384, 12, 1536), 0.85, 5.75)]


def test_violation_and_what_a_strategy_is_told():
    from nas.search.constraints import as_told, describe, violation

    cons = {"min_speedup": 10.0, "latency_p90_ms": 8.0}
    assert violation({"speedup": 12.0, "p90_ms": 7.0}, cons) == 0.0
    assert violation({"speedup": 5.0, "p90_ms": 7.0}, cons) == pytest.approx(1.0)
    assert violation({"speedup": 5.0, "p90_ms": 12.0}, cons) == pytest.approx(1.5)
    assert violation({"speedup": 5.0}, {}) == 0.0 and violation({}, cons) == 0.0
    told = as_told({"metric": 0.9, "latency_ms": 12.0, "speedup": 5.0}, {"min_speedup": 10.0})
    assert told["metric"] == pytest.approx(0.9 - 1.0 - 1.0) and told["violation"] == pytest.approx(1.0)
    assert as_told({}, cons) == {} and as_told({"metric": 0.7, "speedup": 11.0}, cons)["metric"] == 0.7
    assert describe(cons) == "p90 <= 8 ms, >= 10x the teacher's speed" and describe({}) == ""


def test_evolution_ranks_every_candidate_within_the_budget_above_every_one_over_it(sqlite_url):
    from nas.search.constraints import as_told
    from nas.search.strategies.evolution import Evolution
    from nas.spec.space import load_search_space
    from nas.store.records import trial_objectives

    store = Store(sqlite_url)
    job, cons = job_with_students(store, {"min_speedup": 10.0}, POINTS)
    space = load_search_space("large_init").student

    def population(constraints: dict, size: int) -> list[tuple[bool, int]]:
        evo = Evolution(space, seed=0, population=size)
        for t in store.trials(job, kind="student"):
            evo.tell(Shape.from_dict(t["config"]["shape"]), as_told(trial_objectives(t, "accuracy", "p50"), constraints))
        return [(o["speedup"] >= 10.0, rank) for _, o, rank, _ in evo.population()]

    # every point on one front without a budget (accuracy rises as speed falls): the extremes survive, 5.75x among them
    assert not all(fast for fast, _ in population({}, 4))
    # with it, the 4 survivors are inside the budget, and every point inside ranks before every point outside
    assert all(fast for fast, _ in population(cons, 4))
    every = population(cons, len(POINTS))
    assert max(r for fast, r in every if fast) < min(r for fast, r in every if not fast)
    store.dispose()


def test_finals_are_spent_inside_the_budget_and_the_front_holds_only_points_within_it(sqlite_url):
    from nas.results.front import front_rows
    from nas.stages.supernet.finals import choose_final

    store = Store(sqlite_url)
    job, cons = job_with_students(store, {"min_speedup": 10.0}, POINTS)
    trials = store.trials(job, kind="student", state="COMPLETE")
    speed = {t["id"]: next(m["value"] for m in t["metrics"] if m["name"] == "speedup") for t in trials}
    free = choose_final(trials, 3, "accuracy", "p50")
    assert min(speed[t["id"]] for t in free) < 10.0  # unconstrained, the slow accurate points get finals
    logs: list[str] = []
    chosen = choose_final(trials, 3, "accuracy", "p50", cons, logs.append)
    assert len(chosen) == 3 and all(speed[t["id"]] >= 10.0 for t in chosen) and not logs
    # the slowest point inside the budget (the most accurate there) is among them
    assert max(chosen, key=lambda t: -speed[t["id"]])["config"]["shape"] == POINTS[4][0].as_dict()
    # the finals go to the most accurate points inside it (10.6x, 12.5x, 13.9x), not spread to 60x
    assert sorted(speed[t["id"]] for t in chosen) == [10.6, 12.5, 13.9]
    # a budget nothing meets: finals from every point, and the log says why
    chosen = choose_final(trials, 2, "accuracy", "p50", {"min_speedup": 100.0}, logs.append)
    assert len(chosen) == 2 and "no candidate meets the constraints (>= 100x the teacher's speed)" in logs[0]
    f = front_rows(store, job)
    assert f["front"] and all(r["speedup"] >= 10.0 for r in f["front"])
    assert {r["speedup"] for r in f["rows"] if not r["meets_constraints"]} == {8.6, 5.75}
    store.dispose()


def test_the_predictor_prunes_by_the_p50_min_speedup_allows(sqlite_url):
    """The limit is the teacher's p50 in the students' own rounds (median of speedup x p50; 60 ms here) / min_speedup."""
    from nas.stages.supernet.search import latency_limit, prune_by_predictor

    store = Store(sqlite_url)
    true = np.array([0.3, 0.5, 0.8, 0.4, 0.2, 0.05, 0.1, 0.15])
    rng = np.random.default_rng(1)
    points = []
    for _ in range(12):
        s = Shape(int(rng.integers(1, 5)), int(rng.choice([128, 256])), 4, int(rng.choice([256, 512, 1024])))
        points.append((s, 0.8, TEACHER_MS / float(features(s) @ true)))
    job, _ = job_with_students(store, {"min_speedup": 20.0}, points)
    spec = JobSpec.model_validate(store.get_job(job)["spec"])
    small, huge = Shape(1, 128, 2, 256), Shape(6, 384, 12, 1536)
    assert features(huge) @ true > 3.0 * 1.15 > features(small) @ true
    measured = [(None, {"p50_ms": TEACHER_MS / sp, "speedup": sp}) for _, _, sp in points]
    assert latency_limit(spec, measured) == ("p50_ms", pytest.approx(3.0))
    logs: list[str] = []
    assert prune_by_predictor(store, job, [huge, small], spec, 0, logs.append) == [small]
    pruned = store.trials(job, state="PRUNED")
    assert len(pruned) == 1 and pruned[0]["config"]["shape"] == huge.as_dict() and "limit 3.0 ms" in pruned[0]["error"]
    store.dispose()


def test_min_speedup_must_be_above_one():
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="constraints.min_speedup"):
        JobSpec.model_validate({"name": "b", "dataset": "bbc-news", "constraints": {"min_speedup": 1.0}})


def test_the_dashboard_front_keeps_points_over_the_budget_off_it_and_draws_the_budget(sqlite_url):
    from nas.results.front import front_rows
    from nas.ui.dashboard import data as dd
    from nas.ui.dashboard.common import front_figure

    store = Store(sqlite_url)
    job, _ = job_with_students(store, {"min_speedup": 10.0}, POINTS)
    f, df = front_rows(store, job), dd.trial_frame(store.trials(job), "accuracy")
    fig = front_figure(f, df, "speedup", "metric")
    xs = {tr.name: sorted(tr.x) for tr in fig.data if tr.x is not None}
    assert xs["over the limits · proxy"] == [5.75, 8.6]
    assert min(xs["front · proxy"]) >= 10.0
    assert [(s.x0, s.line.dash) for s in fig.layout.shapes] == [(10.0, "dot")]
    assert any(a.text == "budget 10x" for a in fig.layout.annotations)
    # on the latency axis the budget is the p50 it allows against the teacher's (60 ms / 10)
    fig = front_figure(f, df, "p50_ms", "metric")
    assert [s.x0 for s in fig.layout.shapes] == [pytest.approx(6.0)]
    # without constraints the slow accurate points are on the front and no line is drawn
    free, _ = job_with_students(store, {}, POINTS)
    fig = front_figure(front_rows(store, free), dd.trial_frame(store.trials(free), "accuracy"), "speedup", "metric")
    assert 5.75 in next(tr.x for tr in fig.data if tr.name == "front · proxy") and not fig.layout.shapes
    store.dispose()
