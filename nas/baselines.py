"""What users would otherwise run: per-trial distillation searches over the same student shapes, and a job driver with a
wall-clock budget for comparing them with the supernet schedule (benchmarks/head_to_head.py).

Each baseline is a `Strategy` (ask/tell, nas/search/strategies.py) picked by `search.strategy`, so a baseline is a normal
per-trial job: every candidate is a Ray Tune trial (`nas.trials.run_student_trial`) that slices the shape from the teacher,
distils it with the search space's distillation settings for `budgets.epochs`, scores it on dev and measures its latency
with the job's protocol (interleaved rounds with the teacher as the reference).

- `random`: the existing `RandomSearch` (what a Ray Tune user writes with `tune.choice` per axis).
- `optuna-nsga2`: Optuna's `NSGAIISampler` through its ask/tell API, two objectives (dev metric up, measured latency down),
  one categorical parameter per axis. An invalid shape (hidden not divisible by heads) is a FAILED Optuna trial, as an
  objective that raises would make it; a shape proposed again is answered from the results already known (a user's
  cache), so neither costs a distillation.
- `nni-evolution`: NNI 3.0's `EvolutionTuner` driven standalone (`generate_parameters` / `receive_trial_result`; NNI's
  experiment manager is not used). It optimises one number, so the two objectives are scalarised as
  `reward = metric - latency_weight * log2(latency_ms)`: every halving of latency is worth `latency_weight` of the metric
  (default 0.01, one accuracy point). Only comparisons of rewards matter to the tuner, so the unit of latency does not.
"""

from __future__ import annotations

import logging
import math
import random
import time
from typing import Callable

import numpy as np

from nas.search.space import sample_unique
from nas.search.strategies import AXES, Strategy
from nas.spec import JobSpec, StudentSpace
from nas.store.store import Store
from nas.supernet import Shape


def _python_int(v) -> int:
    return int(v.item() if isinstance(v, np.generic) else v)


class _Baseline(Strategy):
    """Shared bookkeeping: answers for shapes already known, and random fill when the searcher stops proposing new ones."""

    def __init__(self, space: StudentSpace, seed: int):
        super().__init__(space, seed)
        self.known: dict[str, dict] = {}  # shape key -> objectives told

    def tell(self, shape: Shape, objectives: dict) -> None:
        super().tell(shape, objectives)
        if objectives:
            self.known[shape.key] = objectives

    def _fill(self, out: list[Shape], n: int) -> list[Shape]:
        if len(out) < n:  # the searcher keeps proposing shapes already tried: fresh random ones instead
            extra = sample_unique(self.space, n - len(out), self.rng, self.seen)
            self.seen.update(s.key for s in extra)
            out += extra
        return out


class OptunaNSGA2(_Baseline):
    """Optuna NSGA-II (ask/tell) over the four shape axes; objectives (metric ↑, latency ↓)."""

    def __init__(self, space: StudentSpace, seed: int, population: int = 8, **_options):
        super().__init__(space, seed)
        import optuna

        optuna.logging.set_verbosity(optuna.logging.WARNING)
        self.optuna = optuna
        self.study = optuna.create_study(directions=["maximize", "minimize"],
                                         sampler=optuna.samplers.NSGAIISampler(population_size=population, seed=seed))
        self.distributions = {ax: optuna.distributions.CategoricalDistribution(list(getattr(space, ax))) for ax in AXES}
        self.pending: dict[str, object] = {}  # shape key -> the Optuna trial waiting for its result

    def ask(self, n: int) -> list[Shape]:
        fail = self.optuna.trial.TrialState.FAIL
        out: list[Shape] = []
        for _ in range(50 * n):
            if len(out) == n:
                break
            trial = self.study.ask()
            shape = Shape(*(_python_int(trial.suggest_categorical(ax, list(getattr(self.space, ax)))) for ax in AXES))
            if shape.key in self.known:
                self.study.tell(trial, [self.known[shape.key]["metric"], self.known[shape.key]["latency_ms"]])
            elif not shape.is_valid() or shape.key in self.seen:
                self.study.tell(trial, state=fail)
            else:
                self.seen.add(shape.key)
                self.pending[shape.key] = trial
                out.append(shape)
        return self._fill(out, n)

    def tell(self, shape: Shape, objectives: dict) -> None:
        super().tell(shape, objectives)
        values = [objectives["metric"], objectives["latency_ms"]] if objectives else None
        trial = self.pending.pop(shape.key, None)
        if trial is not None:
            self.study.tell(trial, values, state=None if values else self.optuna.trial.TrialState.FAIL)
        elif values:  # a result the study did not ask for (a resumed job, a random fill): taught as a finished trial
            self.study.add_trial(self.optuna.trial.create_trial(params=shape.as_dict(), distributions=self.distributions,
                                                                values=values))


class NNIEvolution(_Baseline):
    """NNI 3.0's EvolutionTuner, standalone, maximising `metric - latency_weight * log2(latency_ms)`."""

    def __init__(self, space: StudentSpace, seed: int, population: int = 8, latency_weight: float = 0.01, **_options):
        super().__init__(space, seed)
        from nni.algorithms.hpo.evolution_tuner import EvolutionTuner

        self.latency_weight = latency_weight
        logging.getLogger("nni").setLevel(logging.WARNING)  # it logs every trial end at INFO
        self.tuner = EvolutionTuner(optimize_mode="maximize", population_size=population)
        self.tuner.update_search_space({ax: {"_type": "choice", "_value": list(getattr(space, ax))} for ax in AXES})
        # NNI draws from an unseeded RandomState and from Python's global `random`: seed both for a reproducible search
        # (the initial population is drawn again from the seeded state), and keep our draws off the global generator
        self.tuner.random_state = np.random.RandomState(seed)
        self.tuner.population = []
        for _ in range(population):
            self.tuner._random_generate_individual()
        self.py_random = random.Random(seed).getstate()
        self.next_id = 0
        self.pending: dict[str, tuple[int, dict]] = {}  # shape key -> (parameter id, parameters)

    def reward(self, objectives: dict) -> float:
        return float(objectives["metric"]) - self.latency_weight * math.log2(max(float(objectives["latency_ms"]), 1e-9))

    def _generate(self) -> tuple[int, dict]:
        outside = random.getstate()
        random.setstate(self.py_random)
        try:
            pid = self.next_id
            self.next_id += 1
            return pid, self.tuner.generate_parameters(pid)
        finally:
            self.py_random = random.getstate()
            random.setstate(outside)

    def ask(self, n: int) -> list[Shape]:
        out: list[Shape] = []
        for _ in range(50 * n):
            if len(out) == n:
                break
            try:
                pid, params = self._generate()
            except Exception as exc:  # every individual of the population is out for evaluation
                if type(exc).__name__ in ("NoMoreTrialError", "RuntimeError"):
                    break
                raise
            shape = Shape(*(_python_int(params[ax]) for ax in AXES))
            if shape.key in self.known:
                self.tuner.receive_trial_result(pid, params, self.reward(self.known[shape.key]))
            elif not shape.is_valid() or shape.key in self.seen:
                self.tuner.trial_end(pid, success=False)  # a failed trial: NNI replaces it with a random individual
            else:
                self.seen.add(shape.key)
                self.pending[shape.key] = (pid, params)
                out.append(shape)
        return self._fill(out, n)

    def tell(self, shape: Shape, objectives: dict) -> None:
        super().tell(shape, objectives)
        pid, params = self.pending.pop(shape.key, (None, None))
        if pid is None:
            return  # not proposed by the tuner (a random fill or a resumed job): EvolutionTuner has no import_data
        if objectives:
            self.tuner.receive_trial_result(pid, params, self.reward(objectives))
        else:
            self.tuner.trial_end(pid, success=False)


BASELINE_STRATEGIES = {"optuna-nsga2": OptunaNSGA2, "nni-evolution": NNIEvolution}
METHODS = ("supernet", "random", "optuna-nsga2", "nni-evolution")  # head-to-head: ours first, then the baselines


def run_timed_job(spec: JobSpec, store: Store, budget_s: float | None = None, log: Callable[[str], None] = print,
                  progress: bool = False) -> dict:
    """One job with wall-clock marks around its search: teacher stage (not timed: a shared, cached input), search (timed;
    no trial, proxy generation or final starts after `budget_s`), references (not timed). Returns {"job_id",
    "search_start", "search_end"} as time.time() values; the caller cuts the curves at the budget."""
    from nas.pipeline import _reference_stage, _search_stage, _teacher_stage, prepare

    prep = prepare(spec)
    job_id = store.create_job(spec.name, spec.model_dump(mode="json"), status="RUNNING")
    store.set_job_status(job_id, "RUNNING", stage="teacher")
    try:
        ctx = _teacher_stage(prep, store, job_id, log)
        start = time.time()
        _search_stage(prep, store, job_id, ctx, log, progress, None, deadline=start + budget_s if budget_s else None)
        end = time.time()
        _reference_stage(prep, store, job_id, ctx, log)
        store.set_job_status(job_id, "COMPLETE", stage="done")
    except BaseException as exc:
        store.set_job_status(job_id, "FAILED", error=f"{type(exc).__name__}: {exc}")
        raise
    return {"job_id": job_id, "search_start": start, "search_end": end}


# -- hypervolume over wall-clock time -----------------------------------------------------------------------------------
def trial_events(trials: list[dict], metric: str, search_start: float, search_end: float, teacher_latency_ms: float,
                 known_speedups: dict[str, float] | None = None) -> list[tuple[float, str, float, float]]:
    """(seconds since search start, shape key, dev metric, latency relative to the teacher) for every student model a job
    produced, in time order. A per-trial or proxy point counts when its trial finished. A `final` metric (the supernet
    schedule's standalone distillation) replaces its trial's proxy point when that final metric was written (its
    timestamp; `search_end` for metrics without one). Latency relative to the teacher: the trial's same-round `speedup`
    when it has one; a latency row reused from the store's cache has none, so `known_speedups[shape key]` (the speedup
    measured with that row) when given, else p50 / the job's teacher p50."""
    import datetime as dt

    def epoch(t):
        return t.replace(tzinfo=dt.timezone.utc).timestamp() if t.tzinfo is None else t.timestamp()

    out = []
    for t in trials:
        if t["kind"] != "student" or t["state"] != "COMPLETE" or not t["latency"] or t["finished_at"] is None:
            continue
        vals = {(m["name"], m["source"]): m["value"] for m in t["metrics"] if m["split"] == "dev"}
        key = Shape.from_dict(t["config"]["shape"]).key
        speedup = vals.get(("speedup", "final"), vals.get(("speedup", "proxy"))) or (known_speedups or {}).get(key)
        rel = 1.0 / speedup if speedup else t["latency"][-1]["p50_ms"] / teacher_latency_ms
        first = vals.get((metric, "proxy"), vals.get((metric, "final")))
        if first is not None:
            out.append((epoch(t["finished_at"]) - search_start, key, first, rel))
        if (metric, "proxy") in vals and (metric, "final") in vals:
            stamps = [m["created_at"] for m in t["metrics"] if m.get("created_at") is not None
                      and (m["name"], m["split"], m["source"]) == (metric, "dev", "final")]
            when = epoch(max(stamps)) if stamps else search_end  # the final's own time; an older store: the stage end
            out.append((min(when, search_end) - search_start, key, vals[(metric, "final")], rel))
    return sorted(out)


def hv_curve(events: list[tuple[float, str, float, float]], reference: tuple[float, float]) -> list[tuple[float, float]]:
    """(time, hypervolume) after each event; a later event of the same key replaces that key's point. Objectives: metric
    up, relative latency down; `reference` = (metric, relative latency) that bounds the volume."""
    from nas.search.pareto import hypervolume

    points: dict[str, tuple[float, float]] = {}
    out = []
    for t, key, m, lat in sorted(events):
        points[key] = (m, lat)
        out.append((t, hypervolume([list(p) for p in points.values()], list(reference), [True, False])))
    return out


def hv_at(curve: list[tuple[float, float]], t: float) -> float:
    """Hypervolume reached by time t (0 before the first point)."""
    hv = 0.0
    for ti, h in curve:
        if ti > t:
            break
        hv = h
    return hv


def time_to_reach(curve: list[tuple[float, float]], target: float, budget_s: float | None = None) -> float | None:
    """First time the curve reaches `target` (within the budget), else None."""
    for t, h in curve:
        if budget_s is not None and t > budget_s:
            return None
        if h >= target - 1e-12:
            return max(t, 0.0)
    return None
