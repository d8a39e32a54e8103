"""Strategies (random, NSGA-II evolution), NSGA-II building blocks and the AutoDisc λ-tradeoff."""

import numpy as np
import pytest

from nas.search.pareto import crowding_distance, dominates, non_dominated_sort
from nas.search.space import all_shapes
from nas.search.strategies import make_strategy
from nas.search.strategies.evolution import Evolution
from nas.search.strategies.random_search import RandomSearch
from nas.spec.space import StudentSpace
from nas.stages.supernet.autodisc import Candidate, assistant_candidates, rank_candidates, tradeoff
from nas.students.shape import Shape

SPACE = StudentSpace(layers=[1, 2, 3, 4], hidden=[64, 128, 192, 256], heads=[2, 4, 8], ffn=[128, 256, 512, 1024])


def synthetic(shape: Shape, rng) -> dict:
    size = shape.layers * (4 * shape.hidden ** 2 + 2 * shape.hidden * shape.ffn)
    return {"metric": float(np.log(size) + rng.normal(0, 0.3)), "latency_ms": float(size / 1e5 * rng.uniform(0.8, 1.2))}


def test_non_dominated_sort_against_brute_force():
    rng = np.random.default_rng(0)
    for _ in range(30):
        pts = rng.integers(0, 6, (25, 2)).astype(float)
        mx = [True, False]
        fronts = non_dominated_sort(pts, mx)
        assert sorted(i for f in fronts for i in f) == list(range(25))
        remaining = set(range(25))
        for f in fronts:
            brute = {i for i in remaining if not any(dominates(pts[j], pts[i], mx) for j in remaining if j != i)}
            assert set(f) == brute
            remaining -= brute


def test_crowding_distance_boundaries_are_infinite_and_interior_ordered():
    pts = [[0.0, 0.0], [1.0, 1.0], [1.5, 1.5], [3.0, 3.0]]
    d = crowding_distance(pts, [0, 1, 2, 3])
    assert d[0] == d[3] == float("inf")
    assert d[1] == pytest.approx(1.5 / 3 * 2) and d[2] == pytest.approx(2.0 / 3 * 2)


@pytest.mark.parametrize("name", ["random", "evolution"])
def test_strategies_never_repeat_a_shape_and_only_propose_valid_ones(name):
    rng = np.random.default_rng(1)
    strat = make_strategy(name, SPACE, seed=0, **({"population": 8} if name == "evolution" else {}))
    keys = []
    for _ in range(6):
        for s in strat.ask(8):
            assert s.is_valid() and s.layers in SPACE.layers and s.hidden in SPACE.hidden and s.ffn in SPACE.ffn
            keys.append(s.key)
            strat.tell(s, synthetic(s, rng))
    assert len(keys) == len(set(keys)) == 48


def test_evolution_population_keeps_the_non_dominated_set():
    rng = np.random.default_rng(2)
    ev = Evolution(SPACE, seed=3, population=10)
    for _ in range(5):
        for s in ev.ask(10):
            ev.tell(s, synthetic(s, rng))
    pts = [[o["metric"], o["latency_ms"]] for _, o in ev.results]
    brute = [i for i in range(len(pts)) if not any(dominates(pts[j], pts[i], [True, False]) for j in range(len(pts)) if j != i)]
    pop_keys = {s.key for s, _, _, _ in ev.population()}
    front_keys = {ev.results[i][0].key for i in brute}
    # the whole first front survives when it fits in the population, else the population is entirely first-front
    if len(front_keys) <= 10:
        assert front_keys <= pop_keys
    else:
        assert pop_keys <= front_keys


def test_evolution_beats_random_on_a_synthetic_front():
    from nas.search.pareto import hypervolume

    def hv(strat, seed):
        rng = np.random.default_rng(seed)
        for _ in range(6):
            for s in strat.ask(8):
                strat.tell(s, synthetic(s, rng))
        pts = [[o["metric"], o["latency_ms"]] for _, o in strat.results]
        return hypervolume(pts, [0.0, 60.0], [True, False])

    ev = np.median([hv(Evolution(SPACE, seed=k, population=8), k) for k in range(5)])
    rnd = np.median([hv(RandomSearch(SPACE, seed=k), k) for k in range(5)])
    assert ev >= rnd * 0.98  # never clearly worse than random on the same budget


def test_tradeoff_picks_the_right_candidate_on_a_hand_made_table():
    table = [
        Candidate(Shape(6, 384, 12, 1536), metric=0.84, scale=1.00),  # τ = 0.84
        Candidate(Shape(4, 384, 12, 1536), metric=0.83, scale=0.70),  # τ = 0.89
        Candidate(Shape(3, 256, 8, 1024), metric=0.80, scale=0.35),   # τ = 0.93  <- best at λ = 0.2
        Candidate(Shape(3, 256, 8, 768), metric=0.70, scale=0.30),    # τ = 0.84
    ]
    ranked = rank_candidates(table, lam=0.2)
    assert ranked[0].shape == Shape(3, 256, 8, 1024)
    assert ranked[0].tau == pytest.approx(0.93)
    assert rank_candidates(table, lam=0.0)[0].shape == Shape(6, 384, 12, 1536)  # λ = 0: accuracy alone
    assert tradeoff(0.5, 0.5, 1.0) == pytest.approx(1.0)


def test_assistant_candidates_sit_between_teacher_and_students():
    grid = StudentSpace(layers=[1, 3, 6], hidden=[128, 256, 384], heads=[4, 8], ffn=[512, 1536])
    students = StudentSpace(layers=[1, 2], hidden=[128, 256], heads=[4], ffn=[512])
    teacher = Shape(6, 384, 12, 1536)
    cands = assistant_candidates(grid, teacher, students)
    assert cands and all(c.layers * c.hidden > 1 * 128 for c in cands)
    assert all(c.is_valid() for c in cands)
    assert len(all_shapes(grid)) > len(cands)


def population_of(strategy) -> int:
    """The population size each strategy's own engine was built with."""
    if isinstance(strategy, Evolution):
        return strategy.population_size
    if hasattr(strategy, "study"):  # Optuna NSGA-II
        return strategy.study.sampler._population_size
    return strategy.tuner.population_size  # NNI evolution


@pytest.mark.parametrize("name", ["evolution", "optuna-nsga2", "nni-evolution"])
def test_search_population_reaches_every_strategy(name):
    """`search.population` reaches every strategy through make_strategy, the one door both the per-trial search and the
    supernet schedule use (under the supernet schedule optuna-nsga2 and nni-evolution used to get their own default)."""
    for population in (3, 7):
        assert population_of(make_strategy(name, SPACE, seed=0, population=population)) == population


def test_registry_names_are_the_specs_names():
    from typing import get_args

    from nas.hpo import SEARCHERS
    from nas.search.strategies import STRATEGIES
    from nas.spec.job import HPOSettings, Search

    assert get_args(Search.model_fields["strategy"].annotation) == tuple(STRATEGIES)
    assert get_args(HPOSettings.model_fields["algorithm"].annotation) == tuple(SEARCHERS)
    with pytest.raises(ValueError, match="unknown search strategy"):
        make_strategy("simulated-annealing", SPACE, seed=0)


def test_the_climb_proposes_larger_fitting_neighbours_of_the_best_student_within_the_limit():
    """nas/search/climb.py: one axis step larger (heads repaired where hidden grows), or one layer deeper for one FFN
    step narrower; only shapes the predicate says fit and not tried yet; from the most accurate student that has any."""
    from nas.search.climb import climb_candidates, larger_neighbours
    from nas.spec.space import StudentSpace

    space = StudentSpace(layers=[2, 3, 4, 5], hidden=[256, 384], heads=[8, 12], ffn=[384, 512, 1536])
    s = Shape(3, 256, 8, 512)
    # heads 12 does not divide 256: repaired to 8, that is s itself, so no heads step; hidden 384 keeps heads 8
    assert [n.key for n in larger_neighbours(space, s)] == [
        "L4-H256-A8-F512", "L3-H384-A8-F512", "L3-H256-A8-F1536", "L4-H256-A8-F384"]
    # at the top of every axis there is nothing larger
    assert larger_neighbours(space, Shape(5, 384, 12, 1536)) == []
    # growing hidden repairs the head count to the valid one nearest to its own
    space2 = StudentSpace(layers=[2], hidden=[192, 256], heads=[4, 12], ffn=[384])
    assert larger_neighbours(space2, Shape(2, 192, 12, 384)) == [Shape(2, 256, 4, 384)]

    fits = lambda sh: sh.layers * sh.hidden <= 4 * 384 and sh.ffn <= 512  # noqa: E731  a stand-in latency limit
    best, second = Shape(3, 384, 8, 384), Shape(2, 384, 8, 512)
    scored = [(second, 0.80), (best, 0.82), (Shape(2, 256, 8, 384), 0.75)]
    got = climb_candidates(space, scored, {best.key, second.key}, fits, 10)
    assert [g.key for g in got] == ["L4-H384-A8-F384", "L3-H384-A12-F384", "L3-H384-A8-F512"]
    # tried ones are skipped; with the best's neighbourhood exhausted the next best climbs; n caps the list
    tried = {best.key, second.key, *(g.key for g in got)}
    got2 = climb_candidates(space, scored, tried, fits, 1)
    assert [g.key for g in got2] == ["L2-H384-A12-F512"]
    assert climb_candidates(space, [], set(), fits, 5) == []
