"""Venus-style AutoML of distillation hyperparameters: parameter tables (`space.py`), the search algorithms behind Ray
Tune's `Searcher` (`searchers.py`), and the callback that records every configuration (`record.py`). The stage that
drives them is `nas/stages/hpo.py`; what one configuration does on a worker is `nas/workers/hpo.py`.

`SEARCHERS` maps each `hpo.algorithm` name to a loader of its builder (the spec's allowed names are its keys):

- `random`: our seeded sampler; `optuna-tpe`, `optuna-nsga2`: Ray Tune's Optuna integration;
- `nni-tpe`, `nni-evolution`, `nni-regevo`: NNI 3.0 tuners driven standalone; `bohb`: Ray Tune's TuneBOHB.

A builder takes (params, metric, seed, population, points) and returns a Ray Tune searcher. Adding one: a builder in
`searchers.py` and one line here.
"""

from __future__ import annotations


def _builder(name: str):
    def load():
        from nas.hpo import searchers

        return getattr(searchers, name)

    return load


SEARCHERS = {"random": _builder("random_searcher"), "optuna-tpe": _builder("optuna_tpe"),
             "optuna-nsga2": _builder("optuna_nsga2"), "nni-tpe": _builder("nni_tpe"),
             "nni-evolution": _builder("nni_evolution"), "nni-regevo": _builder("nni_regevo"), "bohb": _builder("bohb")}
ALGORITHMS = tuple(SEARCHERS)


def make_searcher(name: str, params: dict[str, dict], metric: str = "accuracy", seed: int = 0, max_concurrent: int = 2,
                  points_to_evaluate: list[dict] | None = None, population: int = 8):
    """A Ray Tune searcher maximising `metric`, limited to `max_concurrent` running trials."""
    from nas.hpo.searchers import limited

    if name not in SEARCHERS:
        raise ValueError(f"unknown search algorithm {name!r}; known: {', '.join(ALGORITHMS)}")
    points = [dict(p) for p in (points_to_evaluate or [])]
    return limited(SEARCHERS[name]()(params, metric, seed, population, points), max_concurrent)
