"""A per-device exclusive slot for latency measurements, one per node and device (the CPU, each GPU).

Heavy work (training, teacher labelling) holds its device's slot shared; a measurement holds it exclusively, so no
measurement overlaps heavy work of this project on the same device, whichever process (Ray worker, driver, another
job) runs it: a GPU is measured with nothing else of ours on that GPU, the CPU with nothing heavy on its node.
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


def _names(device: str) -> tuple[str, str]:
    """The turnstile and slot files of a device (cpu, cuda, cuda:1); the CPU's keep their historical names."""
    if device == "cpu":
        return "latency.turnstile", "latency.slot"
    dev = device if ":" in device else f"{device}:0"
    return f"latency-{dev.replace(':', '')}.turnstile", f"latency-{dev.replace(':', '')}.slot"


@contextlib.contextmanager
def heavy_work(device: str = "cpu"):
    """Hold `device`'s slot shared while doing heavy work on it (many may hold it at once)."""
    gate_name, slot_name = _names(device)
    with _open(gate_name) as gate, _open(slot_name) as slot:
        fcntl.flock(gate, fcntl.LOCK_EX)  # wait behind a measurement that is queued or running
        fcntl.flock(gate, fcntl.LOCK_UN)
        fcntl.flock(slot, fcntl.LOCK_SH)
        try:
            yield
        finally:
            fcntl.flock(slot, fcntl.LOCK_UN)


@contextlib.contextmanager
def exclusive_measurement(timeout_s: float | None = None, device: str = "cpu"):
    """Hold `device`'s slot alone while measuring on it. Yields the seconds spent waiting for it."""
    t0 = time.monotonic()
    gate_name, slot_name = _names(device)
    with _open(gate_name) as gate, _open(slot_name) as slot:
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
