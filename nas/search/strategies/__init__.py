"""How shapes are searched: one strategy per file behind the ask/tell contract of `base.Strategy`, picked by name.

`STRATEGIES` maps each `search.strategy` name to a loader of its class (the spec's allowed names are its keys):

- `random`: distinct shapes drawn uniformly (`random_search.py`; what a Ray Tune user writes with `tune.choice`);
- `evolution`: our NSGA-II over shapes (`evolution.py`), the supernet schedule's default;
- `optuna-nsga2`: Optuna's NSGAIISampler through ask/tell (`optuna_nsga2.py`);
- `nni-evolution`: NNI 3.0's EvolutionTuner driven standalone (`nni_evolution.py`).

Every strategy takes (space, seed, population=, use_size=) and ignores what it has no use for. Adding one: a file with a
`Strategy` subclass and one line here (docs/ARCHITECTURE.md shows an example).
"""

from __future__ import annotations


def _random():
    from nas.search.strategies.random_search import RandomSearch

    return RandomSearch


def _evolution():
    from nas.search.strategies.evolution import Evolution

    return Evolution


def _optuna_nsga2():
    from nas.search.strategies.optuna_nsga2 import OptunaNSGA2

    return OptunaNSGA2


def _nni_evolution():
    from nas.search.strategies.nni_evolution import NNIEvolution

    return NNIEvolution


STRATEGIES = {"random": _random, "evolution": _evolution, "optuna-nsga2": _optuna_nsga2, "nni-evolution": _nni_evolution}
METHODS = ("supernet", "random", "optuna-nsga2", "nni-evolution")  # head-to-head: ours first, then the baselines


def make_strategy(name: str, space, seed: int, population: int = 12, use_size: bool = False, **options):
    """The strategy `name` over `space` (a StudentSpace); `population` and `use_size` reach every strategy."""
    if name not in STRATEGIES:
        raise ValueError(f"unknown search strategy {name!r}; known: {', '.join(STRATEGIES)}")
    return STRATEGIES[name]()(space, seed, population=population, use_size=use_size, **options)
