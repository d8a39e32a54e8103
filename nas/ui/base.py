"""What every `nas` command shares: the storage option's help, a user error (one line, exit 2), the store opened from
the option or $NAS_STORAGE, and how Ctrl-C / SIGTERM stop a job run in the foreground."""

from __future__ import annotations

import contextlib
import os

import typer

STORAGE_HELP = "Database URL (default: $NAS_STORAGE, else sqlite under $NAS_HOME or ./.nas/)."


def user_error(exc: Exception) -> None:
    typer.secho(f"error: {exc}", err=True, fg=typer.colors.RED)
    raise typer.Exit(2)


def open_store(storage: str | None):
    from nas.store import Store, StoreError

    try:
        return Store(storage or os.environ.get("NAS_STORAGE") or None)
    except StoreError as exc:
        user_error(exc)


@contextlib.contextmanager
def stop_on_signals():
    """Ctrl-C and SIGTERM stop a job started here (nas/service/signals.py says how)."""
    from nas.service import signals

    old = signals.install()
    try:
        yield
    finally:
        signals.uninstall(old)
