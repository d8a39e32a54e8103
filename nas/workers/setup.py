"""What every worker does first (quiet transformers, fix the thread count, load the token cache and labels) and the
small things every worker repeats: a heartbeat on training steps, a watchdog for a hung trial, one retry at half the
batch after running out of GPU memory, a saved model with its tokenizer beside it."""

from __future__ import annotations

import contextlib
import os
import pathlib
import signal
import sys
import threading
import time
from typing import Callable

from nas.compute import enable_tf32, strict_devices_here
from nas.context import JobContext


def worker_setup(ctx: JobContext, threads: int | None = None, tensors: bool = True):
    """Quiet transformers and use `threads` (default: the node's); returns (token tensors, labels) of the whole
    dataset, or (None, labels) with `tensors=False`."""
    import torch
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    torch.set_num_threads(int(threads or ctx.threads))
    if ctx.compute.cuda:
        enable_tf32()
    labels = torch.as_tensor(ctx.labels, device="cpu")
    tokens = torch.load(ctx.tokens_path, map_location="cpu") if tensors else None
    strict_devices_here()  # for the rest of this worker's life (a no-op unless the test hook is set)
    return tokens, labels


def record_compute(store, trial_id: int, ctx: JobContext) -> None:
    """The device, precision and GPU name this trial trains with, on its row."""
    store.set_trial_compute(trial_id, ctx.compute.describe())


def heartbeat_every(store, trial_id: int, seconds: float) -> Callable[[int, float], None]:
    """An `on_step(step, loss)` callback that heartbeats `trial_id` at most every `seconds`."""
    last = [time.monotonic()]

    def beat(step: int, loss: float) -> None:
        if time.monotonic() - last[0] > seconds:
            store.heartbeat(trial_id)
            last[0] = time.monotonic()

    return beat


def save_model(model, ctx: JobContext, out: str | pathlib.Path) -> str:
    """`model` (a slice of what students slice) and the tokenizer it reads in `out`, loadable by
    AutoModelForSequenceClassification."""
    from transformers import AutoTokenizer

    model.config.architectures = [type(model).__name__]
    model.save_pretrained(out)
    AutoTokenizer.from_pretrained((ctx.source or ctx.teacher)["dir"]).save_pretrained(out)  # what it reads
    return str(out)


class Watchdog:
    """Kills this worker process when `beat()` has not been called for `limit_s` while the process lives (a hung kernel
    or collective): Ray sees a dead worker, and the trial is run again as a trial whose worker died is. Heartbeats the
    store on every beat (at most every `every_s`); `measuring()` keeps beating while a latency measurement runs, so the
    limit cannot misfire there."""

    def __init__(self, store, trial_id: int, limit_s: float, every_s: float = 5.0):
        self.store, self.trial_id, self.limit_s, self.every_s = store, trial_id, limit_s, every_s
        self.last = self.last_store = time.monotonic()
        self.stop = threading.Event()

    def beat(self, *_args) -> None:
        self.last = time.monotonic()
        if self.last - self.last_store > self.every_s:
            self.store.heartbeat(self.trial_id)
            self.last_store = self.last

    def _watch(self) -> None:
        while not self.stop.wait(min(1.0, self.limit_s / 10)):
            if time.monotonic() - self.last > self.limit_s:
                print(f"trial {self.trial_id}: no progress for {self.limit_s:.0f} s; killing the worker so that the "
                      "trial runs again", file=sys.stderr, flush=True)
                os.kill(os.getpid(), signal.SIGKILL)

    def __enter__(self) -> "Watchdog":
        threading.Thread(target=self._watch, daemon=True, name=f"watchdog-{self.trial_id}").start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop.set()

    @contextlib.contextmanager
    def measuring(self):
        done = threading.Event()

        def keep_beating() -> None:
            while not done.wait(min(self.every_s, self.limit_s / 4)):
                self.beat()

        t = threading.Thread(target=keep_beating, daemon=True)
        t.start()
        try:
            yield
        finally:
            done.set()
            t.join()
            self.beat()


def with_oom_retry(train: Callable[[int], dict], on_retry: Callable[[str], None] | None = None) -> dict:
    """`train(accumulate)` once with whole batches; after a GPU out-of-memory error, once more with each batch split in
    two accumulated halves (the same effective batch). A second out-of-memory error is raised with both reasons."""
    import torch

    try:
        return train(1)
    except torch.OutOfMemoryError as exc:
        first = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
        if on_retry:
            on_retry(first)
        try:
            return train(2)
        except torch.OutOfMemoryError as again:
            raise RuntimeError(f"out of GPU memory at the full batch ({first}) and at half the batch with 2-step "
                               f"accumulation ({type(again).__name__}: {again})") from None


def injected_fault(kind: str, trial_number: int, attempt: int, accumulate: int = 1) -> Callable[[int, float], None]:
    """Test hooks on the training step of trial `trial_number` ($NAS_INJECT_<KIND>_TRIALS, comma-separated numbers):
    `oom` raises a real torch.OutOfMemoryError at the first step of a whole-batch run; `hang` sleeps at the first step
    of the trial's first attempt (the watchdog's case). Elsewhere a no-op."""
    wanted = {int(x) for x in os.environ.get(f"NAS_INJECT_{kind.upper()}_TRIALS", "").split(",") if x.strip()}

    def hook(step: int, loss: float) -> None:
        if trial_number not in wanted or step != 0:
            return
        if kind == "oom" and accumulate == 1:
            import torch

            raise torch.OutOfMemoryError("CUDA out of memory (injected by NAS_INJECT_OOM_TRIALS)")
        if kind == "hang" and attempt <= 1:
            time.sleep(3600)

    return hook
