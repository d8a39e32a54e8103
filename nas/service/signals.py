"""How Ctrl-C and SIGTERM stop a job run in the foreground (`nas run`, `nas resume`): the first raises
KeyboardInterrupt in the main thread (the pipeline marks the job INTERRUPTED with its running trials back in the
queue, and the local Ray goes down with the process); a second exits at once.

Ray's driver installs its own SIGTERM handler when it starts (a stack trace and an abort), and Ray Tune its own SIGINT
handler (it ends the running trials and lets the job go on); `install()` is called again right after `ray.init`, and
Tune's is kept out with TUNE_DISABLE_SIGINT_HANDLER."""

from __future__ import annotations

import os
import signal

_active = {"on": False, "seen": 0}


def _handler(signum, frame):
    if _active["seen"]:
        os._exit(130)
    _active["seen"] += 1
    raise KeyboardInterrupt(signal.Signals(signum).name)


def install() -> dict:
    """Take SIGINT and SIGTERM; returns the handlers it replaced."""
    os.environ["TUNE_DISABLE_SIGINT_HANDLER"] = "1"
    _active["on"] = True
    return {s: signal.signal(s, _handler) for s in (signal.SIGINT, signal.SIGTERM)}


def reinstall_if_active() -> None:
    """After something (ray.init) may have replaced the handlers: put ours back, if a command asked for them."""
    if _active["on"]:
        for s in (signal.SIGINT, signal.SIGTERM):
            signal.signal(s, _handler)


def uninstall(old: dict) -> None:
    _active.update(on=False, seen=0)
    for s, h in old.items():
        signal.signal(s, h)
