"""A long training run that survives being killed: `distill` saves its whole state every `every_s` seconds of wall time
(the model, the optimiser, the schedule, the loss scaler, the step, torch's random state, and the state of the caller's
`on_step`, such as the teacher's early stopping and its best weights), and a new process given the same checkpoint file
continues from there. The batch order is replayed from the seed, so a run killed and resumed ends with the weights an
uninterrupted run ends with.

On two CPU cores a 110M teacher's fine-tuning is about 35-80 minutes and a student initialiser's distillation about an
hour: one unit each, which a stopped session, a reaped job or a preempted worker used to lose whole."""

from __future__ import annotations

import os
import pathlib
import time

import torch

from nas.paths import save_atomic

EVERY_S = float(os.environ.get("NAS_TRAIN_CHECKPOINT_S", 600))  # wall seconds between saves (0: after every step)


class TrainCheckpoint:
    """The checkpoint file of one training run. `key`: what the run is (a final's shape, settings, targets and seed);
    a file saved under another key, or for another number of steps, is not this run's and is trained over. (A teacher's
    file is named by its cache key already.) `stateful`: objects with `state_dict()` / `load_state_dict()` saved
    beside the optimiser (the caller's on_step)."""

    def __init__(self, path: str | os.PathLike, every_s: float | None = None, stateful: dict | None = None,
                 key: str = ""):
        self.path, self.key = pathlib.Path(path), key
        self.every_s = EVERY_S if every_s is None else every_s
        self.stateful = stateful or {}
        self.saved_at = time.monotonic()
        self.resumed_from = 0

    def restore(self, model, opt, sched, scaler, steps: int) -> int:
        """Load the saved state into the run's objects; the number of steps already taken (0 when there is none, or it
        is another run's)."""
        if not self.path.is_file():
            return 0
        state = torch.load(self.path, map_location="cpu", weights_only=False)
        if state["steps"] != steps or state.get("key", "") != self.key:
            return 0
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        sched.load_state_dict(state["schedule"])
        if state.get("scaler") and scaler is not None and scaler.is_enabled():
            scaler.load_state_dict(state["scaler"])
        torch.set_rng_state(state["rng"])
        if state.get("cuda_rng") and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state["cuda_rng"])
        for name, obj in self.stateful.items():
            obj.load_state_dict(state["stateful"][name])
        self.resumed_from = state["step"]
        self.saved_at = time.monotonic()
        return self.resumed_from

    def maybe_save(self, done: int, steps: int, model, opt, sched, scaler) -> bool:
        """Save after `done` steps when `every_s` has passed since the last save (never after the last step)."""
        if done >= steps or time.monotonic() - self.saved_at < self.every_s:
            return False
        save_atomic({"step": done, "steps": steps, "key": self.key, "model": model.state_dict(),
                     "optimizer": opt.state_dict(), "schedule": sched.state_dict(),
                     "scaler": scaler.state_dict() if scaler is not None and scaler.is_enabled() else None,
                     "rng": torch.get_rng_state(),
                     "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
                     "stateful": {name: obj.state_dict() for name, obj in self.stateful.items()}}, self.path)
        self.saved_at = time.monotonic()
        return True

    def clear(self) -> None:
        """The run finished (its result is cached elsewhere): the checkpoint is not needed any more."""
        self.path.unlink(missing_ok=True)


__all__ = ["EVERY_S", "TrainCheckpoint"]
