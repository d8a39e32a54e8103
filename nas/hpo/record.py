"""The Ray Tune callback that writes every configuration of a sample search to the store as it runs."""

from __future__ import annotations

from ray import tune

from nas.store.store import Store


class RecordTrials(tune.Callback):
    """Ray Tune callback (runs in the driver): each configuration becomes an `hpo-sample` trial in the store, each
    report its metrics, a scheduler stop PRUNED. Holds the store's URL, not the store: Tune pickles its callbacks."""

    def __init__(self, url: str, job_id: int, base_config: dict, reports: int, compute: dict | None = None):
        self.url, self.job_id, self.base, self.reports = url, job_id, base_config, reports
        self.compute = compute  # the device and precision its trials train with
        self.ids: dict[str, int] = {}
        self._store = None

    def __getstate__(self):
        return {**self.__dict__, "_store": None}

    @property
    def store(self) -> Store:
        if self._store is None:
            self._store = Store(self.url, migrate=False)
        return self._store

    def on_trial_start(self, iteration, trials, trial, **info):
        if trial.trial_id in self.ids:  # BOHB's scheduler pauses trials and starts them again: one row per trial
            return
        t = self.store.add_trial(self.job_id, "hpo-sample", {**self.base, "hparams": dict(trial.config),
                                                             "tune_trial_id": trial.trial_id}, state="RUNNING")
        self.store.start_trial(t["id"])
        if self.compute:
            self.store.set_trial_compute(t["id"], self.compute)
        self.ids[trial.trial_id] = t["id"]

    def on_trial_result(self, iteration, trials, trial, result, **info):
        tid = self.ids.get(trial.trial_id)
        if tid is None:
            return
        step = int(result.get("training_iteration", 0))
        for name in ("accuracy", "f1_macro", "train_s", "data_seen"):
            if name in result:
                self.store.add_metric(tid, name, float(result[name]), "dev", "proxy", step=step)
        self.store.heartbeat(tid)

    def on_trial_complete(self, iteration, trials, trial, **info):
        tid = self.ids.get(trial.trial_id)
        if tid is None:
            return
        reached = int((trial.last_result or {}).get("training_iteration", 0))
        self.store.add_metric(tid, "budget_reached", reached, "dev", "proxy")
        self.store.finish_trial(tid, "COMPLETE" if reached >= self.reports else "PRUNED")

    def on_trial_error(self, iteration, trials, trial, **info):
        tid = self.ids.get(trial.trial_id)
        if tid is not None:
            self.store.finish_trial(tid, "FAILED", error=f"Ray Tune trial error (see {getattr(trial, 'path', '')})")
