"""A per-node exclusive slot for latency measurements.

Heavy work (training, teacher labelling) holds the slot shared; a measurement holds it exclusively, so no measurement
overlaps heavy work of this project on the same node, whichever process (Ray worker, driver, another job) runs it.
It is a reader/writer lock on two files under the node's temp dir (`fcntl.flock`, released by the kernel when a process
dies): a measurement first takes the turnstile, so new heavy work queues behind a waiting measurement instead of
starving it.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import pathlib
import tempfile
import time


def _lock_dir() -> pathlib.Path:
    d = pathlib.Path(os.environ.get("NAS_LOCK_DIR") or pathlib.Path(tempfile.gettempdir()) / f"nas-locks-{os.getuid()}")
    d.mkdir(parents=True, exist_ok=True)
    return d


def _open(name: str):
    return open(_lock_dir() / name, "a+")


@contextlib.contextmanager
def heavy_work():
    """Hold the node's slot shared while doing heavy work (many may hold it at once)."""
    with _open("latency.turnstile") as gate, _open("latency.slot") as slot:
        fcntl.flock(gate, fcntl.LOCK_EX)  # wait behind a measurement that is queued or running
        fcntl.flock(gate, fcntl.LOCK_UN)
        fcntl.flock(slot, fcntl.LOCK_SH)
        try:
            yield
        finally:
            fcntl.flock(slot, fcntl.LOCK_UN)


@contextlib.contextmanager
def exclusive_measurement(timeout_s: float | None = None):
    """Hold the node's slot alone while measuring. Yields the seconds spent waiting for it."""
    t0 = time.monotonic()
    with _open("latency.turnstile") as gate, _open("latency.slot") as slot:
        fcntl.flock(gate, fcntl.LOCK_EX)
        try:
            if timeout_s is None:
                fcntl.flock(slot, fcntl.LOCK_EX)
            else:
                while True:
                    try:
                        fcntl.flock(slot, fcntl.LOCK_EX | fcntl.LOCK_NB)
                        break
                    except BlockingIOError:
                        if time.monotonic() - t0 > timeout_s:
                            raise TimeoutError(f"the latency slot stayed busy for {timeout_s:.0f} s") from None
                        time.sleep(0.05)
            try:
                yield time.monotonic() - t0
            finally:
                fcntl.flock(slot, fcntl.LOCK_UN)
        finally:
            fcntl.flock(gate, fcntl.LOCK_UN)


__all__ = ["heavy_work", "exclusive_measurement"]
