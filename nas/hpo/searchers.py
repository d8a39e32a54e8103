"""Search algorithms for distillation hyperparameters, all behind Ray Tune's `Searcher` interface.

`nas.hpo.make_searcher(name, params, ...)` builds one of `nas.hpo.SEARCHERS` from a parameter table (`search_spaces/hpo/*.yaml`):

- random: our own seeded sampler (a Ray `Searcher`, so it composes with schedulers and the concurrency limiter);
- optuna-tpe, optuna-nsga2: Ray Tune's Optuna integration (NSGA-II is two-objective: dev accuracy up, training seconds
  down);
- nni-tpe, nni-evolution, nni-regevo: NNI 3.0's tuners driven standalone through `generate_parameters` /
  `receive_trial_result` by `NNISearcher` (NNI's own experiment manager is not used: it is unmaintained and its
  Hyperband/BOHB crash; the tuners themselves work). Regularized evolution only takes `choice` axes, so continuous axes
  are offered to it as a 5-point grid (log-spaced for loguniform);
- bohb: Ray Tune's TuneBOHB (hpbandster), which must run under the HyperBandForBOHB scheduler (`make_scheduler`).

Searcher state survives a killed job without pickles: every finished configuration is a trial in the store, and
`replay(searcher, history)` feeds that history back into a fresh searcher (Optuna: trials added to its study; NNI:
`import_data`; BOHB: results handed to its KDE model; random: its generator advanced), so a resumed search continues
from what it had learnt instead of starting over (Ray Tune's own restore dropped searcher state: ray#30861)."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from ray.tune.search import ConcurrencyLimiter, Searcher

SCHEDULERS = ("asha", "hyperband", "fifo")




def _python(v: Any) -> Any:
    """numpy scalars (NNI returns them) -> plain Python, so configs are JSON and YAML clean."""
    if isinstance(v, np.generic):
        return v.item()
    return v


def sample_param(p: dict, rng: np.random.Generator) -> Any:
    t = p["type"]
    if t == "choice":
        return _python(p["values"][int(rng.integers(len(p["values"])))])
    if t == "loguniform":
        return float(math.exp(rng.uniform(math.log(p["low"]), math.log(p["high"]))))
    x = float(rng.uniform(p["low"], p["high"]))
    if t == "quniform":
        x = float(np.clip(round(x / p["q"]) * p["q"], p["low"], p["high"]))
    return x


def tune_space(params: dict[str, dict]) -> dict:
    from ray import tune

    out = {}
    for name, p in params.items():
        t = p["type"]
        if t == "choice":
            out[name] = tune.choice(list(p["values"]))
        elif t == "loguniform":
            out[name] = tune.loguniform(p["low"], p["high"])
        elif t == "uniform":
            out[name] = tune.uniform(p["low"], p["high"])
        else:
            out[name] = tune.quniform(p["low"], p["high"], p["q"])
    return out


def nni_space(params: dict[str, dict], choices_only: bool = False) -> dict:
    out = {}
    for name, p in params.items():
        t = p["type"]
        if t == "choice":
            out[name] = {"_type": "choice", "_value": list(p["values"])}
        elif choices_only:
            grid = (np.geomspace if t == "loguniform" else np.linspace)(p["low"], p["high"], 5)
            out[name] = {"_type": "choice", "_value": [float(x) for x in grid]}
        elif t == "quniform":
            out[name] = {"_type": "quniform", "_value": [p["low"], p["high"], p["q"]]}
        else:
            out[name] = {"_type": t, "_value": [p["low"], p["high"]]}
    return out


class RandomSearcher(Searcher):
    """Independent draws from the parameter table, deterministic by seed (the n-th draw is the same after a resume)."""

    def __init__(self, params: dict[str, dict], metric: str, mode: str, seed: int = 0,
                 points_to_evaluate: list[dict] | None = None):
        super().__init__(metric=metric, mode=mode)
        self.params = params
        self.rng = np.random.default_rng(seed)
        self.points = list(points_to_evaluate or [])
        self.history: list[dict] = []

    def suggest(self, trial_id: str) -> dict | None:
        if self.points:
            return dict(self.points.pop(0))
        return {name: sample_param(p, self.rng) for name, p in self.params.items()}

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        pass

    def replay(self, history: list[dict]) -> None:
        for _ in history:  # advance the generator past the draws already made
            self.suggest("replay")
        self.history.extend(history)


class NNISearcher(Searcher):
    """Ray Tune searcher driving an NNI 3.0 tuner standalone: suggest -> generate_parameters, completion ->
    receive_trial_result. A tuner that is waiting for results (evolution's first population) makes suggest return None,
    which Ray Tune reads as "ask again later"."""

    def __init__(self, tuner: str, params: dict[str, dict], metric: str, mode: str, seed: int = 0,
                 population: int = 8, points_to_evaluate: list[dict] | None = None):
        super().__init__(metric=metric, mode=mode)
        np.random.seed(seed)  # NNI's evolution tuners draw from numpy's global generator
        import random

        random.seed(seed)
        nni_mode = "maximize" if mode == "max" else "minimize"
        if tuner == "tpe":
            from nni.algorithms.hpo.tpe_tuner import TpeTuner

            self.tuner = TpeTuner(optimize_mode=nni_mode, seed=seed)
            space = nni_space(params)
        elif tuner == "evolution":
            from nni.algorithms.hpo.evolution_tuner import EvolutionTuner

            self.tuner = EvolutionTuner(optimize_mode=nni_mode, population_size=population)
            space = nni_space(params)
        elif tuner == "regevo":
            from nni.algorithms.hpo.regularized_evolution_tuner import RegularizedEvolutionTuner

            self.tuner = RegularizedEvolutionTuner(optimize_mode=nni_mode, population_size=population,
                                                   sample_size=max(2, population // 3))
            space = {k: {"_type": "layer_choice", "_value": v["_value"]}  # its only axis type: NAS choices
                     for k, v in nni_space(params, choices_only=True).items()}
        else:
            raise ValueError(f"unknown NNI tuner {tuner!r}")
        self.tuner.update_search_space(space)
        self.space = space
        self.wrapped = tuner == "regevo"  # its parameters are {"_value": v, "_idx": i} per axis
        self.points = list(points_to_evaluate or [])
        self.running: dict[str, tuple[int, dict]] = {}
        self.next_id = 0

    def suggest(self, trial_id: str) -> dict | None:
        if self.points:  # a given point (the defaults): taught to the tuner as imported data when it finishes
            params = dict(self.points.pop(0))
            self.running[trial_id] = (None, params)
            return params
        pid = self.next_id
        try:
            params = self.tuner.generate_parameters(pid)
        except Exception as exc:  # evolution: no population to draw from until results arrive
            if type(exc).__name__ in ("RuntimeError", "NoMoreTrialError"):
                return None
            raise
        params = {k: _python(v["_value"] if self.wrapped else v) for k, v in params.items()}
        self.running[trial_id] = (pid, params)
        self.next_id += 1
        return params

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        pid, params = self.running.pop(trial_id, (None, None))
        if params is None:
            return
        if error or not result or self.metric not in result:
            if pid is not None and hasattr(self.tuner, "trial_end"):
                self.tuner.trial_end(pid, success=False)
            return
        if pid is None:
            self._import([{"parameter": params, "value": float(result[self.metric])}])
        else:
            self.tuner.receive_trial_result(pid, params, float(result[self.metric]))

    def _wrap(self, params: dict) -> dict:
        out = {}
        for k, v in params.items():
            grid = self.space[k]["_value"]
            i = int(np.argmin([abs(g - v) if isinstance(g, (int, float)) and isinstance(v, (int, float)) else
                               (0 if g == v else 1) for g in grid]))
            out[k] = {"_value": grid[i], "_idx": i}
        return out

    def _import(self, data: list[dict]) -> None:
        if not self.wrapped:
            self.tuner.import_data(data)
            return
        from nni.algorithms.hpo.regularized_evolution_tuner import FinishedIndividual

        for d in data:  # regularized evolution has no import_data: the results join its population directly
            self.tuner.population.append(FinishedIndividual(-1, self._wrap(d["parameter"]), d["value"]))
            if len(self.tuner.population) > self.tuner.population_size:
                self.tuner.population.popleft()

    def replay(self, history: list[dict]) -> None:
        data = [{"parameter": h["config"], "value": float(h[self.metric])} for h in history if self.metric in h]
        if data:
            self._import(data)
        self.next_id += len(history)


# -- builders: SEARCHERS (nas/hpo/__init__.py) maps each algorithm name to one of these ---------------------------------
def random_searcher(params: dict[str, dict], metric: str, seed: int, population: int, points: list[dict]) -> Searcher:
    return RandomSearcher(params, metric, "max", seed, points)


def _optuna(params, metric, points, sampler, two_objectives: bool = False) -> Searcher:
    import optuna
    from ray.tune.search.optuna import OptunaSearch

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    if two_objectives:  # dev accuracy up, training seconds down
        return OptunaSearch(space=tune_space(params), metric=[metric, "train_s"], mode=["max", "min"], sampler=sampler,
                            points_to_evaluate=points or None)
    return OptunaSearch(space=tune_space(params), metric=metric, mode="max", sampler=sampler,
                        points_to_evaluate=points or None)


def optuna_tpe(params: dict[str, dict], metric: str, seed: int, population: int, points: list[dict]) -> Searcher:
    import optuna

    return _optuna(params, metric, points, optuna.samplers.TPESampler(seed=seed, n_startup_trials=max(2, population // 2)))


def optuna_nsga2(params: dict[str, dict], metric: str, seed: int, population: int, points: list[dict]) -> Searcher:
    import optuna

    return _optuna(params, metric, points, optuna.samplers.NSGAIISampler(seed=seed, population_size=max(2, population)),
                   two_objectives=True)


def nni_tpe(params: dict[str, dict], metric: str, seed: int, population: int, points: list[dict]) -> Searcher:
    return NNISearcher("tpe", params, metric, "max", seed, population, points)


def nni_evolution(params: dict[str, dict], metric: str, seed: int, population: int, points: list[dict]) -> Searcher:
    return NNISearcher("evolution", params, metric, "max", seed, population, points)


def nni_regevo(params: dict[str, dict], metric: str, seed: int, population: int, points: list[dict]) -> Searcher:
    return NNISearcher("regevo", params, metric, "max", seed, population, points)


def bohb(params: dict[str, dict], metric: str, seed: int, population: int, points: list[dict]) -> Searcher:
    from ray.tune.search.bohb import TuneBOHB

    return TuneBOHB(space=tune_space(params), metric=metric, mode="max", seed=seed, points_to_evaluate=points or None)


def limited(searcher: Searcher, max_concurrent: int) -> Searcher:
    """`searcher` behind the concurrency limiter that hands out plain Python values."""
    return _PlainLimiter(searcher, max_concurrent=max_concurrent)


class _PlainLimiter(ConcurrencyLimiter):
    """Ray Tune's concurrency limiter, handing out configurations of plain Python values: BOHB (ConfigSpace) and NNI
    propose numpy scalars, which neither the store's JSON columns nor YAML exports accept."""

    def suggest(self, trial_id: str) -> dict | None:
        config = super().suggest(trial_id)
        if not isinstance(config, dict):
            return config
        return {k: _python(v) for k, v in config.items()}


def make_scheduler(algorithm: str, scheduler: str, metric: str, max_t: int):
    """Early stopping over `max_t` report rounds: ASHA (default), Hyperband, FIFO (none); BOHB always uses its own
    HyperBandForBOHB, whatever `scheduler` says."""
    from ray.tune.schedulers import ASHAScheduler, FIFOScheduler, HyperBandForBOHB, HyperBandScheduler

    if algorithm == "bohb":
        return HyperBandForBOHB(time_attr="training_iteration", metric=metric, mode="max", max_t=max_t,
                                reduction_factor=2)
    if scheduler == "asha":
        return ASHAScheduler(time_attr="training_iteration", metric=metric, mode="max", max_t=max_t, grace_period=1,
                             reduction_factor=2)
    if scheduler == "hyperband":
        return HyperBandScheduler(time_attr="training_iteration", metric=metric, mode="max", max_t=max_t,
                                  reduction_factor=2)
    return FIFOScheduler()


def replay(searcher: Searcher, history: list[dict], params: dict[str, dict], metric: str = "accuracy") -> int:
    """Teach a fresh searcher the configurations already finished (each {"config", metric, "train_s", "budget"}).
    Returns how many were replayed."""
    inner = searcher.searcher if isinstance(searcher, ConcurrencyLimiter) else searcher
    history = [h for h in history if metric in h]
    if not history:
        return 0
    if isinstance(inner, (RandomSearcher, NNISearcher)):
        inner.replay(history)
    elif type(inner).__name__ == "OptunaSearch":
        import optuna

        multi = isinstance(inner._metric, list)
        for h in history:
            cfg = {k: h["config"][k] for k in params}
            trial = optuna.trial.create_trial(
                state=optuna.trial.TrialState.COMPLETE, params=cfg, distributions=inner._space,
                **({"values": [float(h[metric]), float(h.get("train_s", 0.0))]} if multi else {"value": float(h[metric])}))
            inner._ot_study.add_trial(trial)
        inner._points_to_evaluate = []
    elif type(inner).__name__ == "TuneBOHB":
        from ray.tune.search.bohb.bohb_search import _BOHBJobWrapper

        for h in history:
            inner.bohber.new_result(_BOHBJobWrapper(-float(h[metric]), float(h.get("budget", 1)),
                                                    {k: h["config"][k] for k in params}))
        inner._points_to_evaluate = []
    else:
        raise TypeError(f"cannot replay into {type(inner).__name__}")
    return len(history)
