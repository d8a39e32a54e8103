"""What every worker does first (quiet transformers, fix the thread count, load the token cache and labels) and the
small things every worker repeats: a heartbeat on training steps, a saved model with its tokenizer beside it."""

from __future__ import annotations

import pathlib
import time
from typing import Callable

from nas.context import JobContext


def worker_setup(ctx: JobContext, threads: int | None = None, tensors: bool = True):
    """Quiet transformers and use `threads` (default: the node's); returns (token tensors, labels) of the whole
    dataset, or (None, labels) with `tensors=False`."""
    import torch
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    torch.set_num_threads(int(threads or ctx.threads))
    labels = torch.as_tensor(ctx.labels)
    return (torch.load(ctx.tokens_path) if tensors else None), labels


def heartbeat_every(store, trial_id: int, seconds: float) -> Callable[[int, float], None]:
    """An `on_step(step, loss)` callback that heartbeats `trial_id` at most every `seconds`."""
    last = [time.monotonic()]

    def beat(step: int, loss: float) -> None:
        if time.monotonic() - last[0] > seconds:
            store.heartbeat(trial_id)
            last[0] = time.monotonic()

    return beat


def save_model(model, ctx: JobContext, out: str | pathlib.Path) -> str:
    """`model` (a sliced BERT) and the teacher's tokenizer in `out`, loadable by AutoModelForSequenceClassification."""
    from transformers import AutoTokenizer

    model.config.architectures = ["BertForSequenceClassification"]
    model.save_pretrained(out)
    AutoTokenizer.from_pretrained(ctx.teacher["dir"]).save_pretrained(out)
    return str(out)
