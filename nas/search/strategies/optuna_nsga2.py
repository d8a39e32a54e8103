"""Optuna's `NSGAIISampler` through its ask/tell API: two objectives (dev metric up, measured latency down), one
categorical parameter per axis. An invalid shape (hidden not divisible by heads) is a FAILED Optuna trial, as an
objective that raises would make it; a shape proposed again is answered from the results already known (a user's
cache), so neither costs a distillation."""

from __future__ import annotations

from nas.search.strategies.base import AXES, KnownAnswers, python_int
from nas.spec.space import StudentSpace
from nas.students.shape import Shape


class OptunaNSGA2(KnownAnswers):
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
            shape = Shape(*(python_int(trial.suggest_categorical(ax, list(getattr(self.space, ax)))) for ax in AXES))
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
