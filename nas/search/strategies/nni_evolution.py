"""NNI 3.0's `EvolutionTuner` driven standalone (`generate_parameters` / `receive_trial_result`; NNI's experiment
manager is not used). It optimises one number, so the two objectives are scalarised as
`reward = metric - latency_weight * log2(latency_ms)`: every halving of latency is worth `latency_weight` of the metric
(default 0.01, one accuracy point). Only comparisons of rewards matter to the tuner, so the unit of latency does not."""

from __future__ import annotations

import logging
import math
import random

import numpy as np

from nas.search.strategies.base import AXES, KnownAnswers, python_int
from nas.spec.space import StudentSpace
from nas.students.shape import Shape


class NNIEvolution(KnownAnswers):
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
            shape = Shape(*(python_int(params[ax]) for ax in AXES))
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
