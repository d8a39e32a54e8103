"""Ray is the engine: check an `--address`, start local Ray (127.0.0.1) or join a cluster, run store trials as Ray
Tune trials."""

from __future__ import annotations

import os
import pathlib
from typing import Callable

os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("RAY_DEDUP_LOGS", "0")
os.environ.setdefault("TUNE_DISABLE_AUTO_CALLBACK_LOGGERS", "1")
os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")


def check_ray_address(address: str | None) -> None:
    """`--address` must be `auto`, HOST:PORT or ray://HOST:PORT, and something must listen there: checked before a job is
    created, so a typo is a clear error (SpecError on field --address) that writes nothing."""
    import socket

    from nas.spec.errors import SpecError

    if address is None or address == "auto":
        return
    hostport = address.removeprefix("ray://")
    host, sep, port = hostport.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536 or "/" in hostport:
        raise SpecError("--address", f"expected auto, HOST:PORT or ray://HOST:PORT; found {address!r}")
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=5).close()
    except OSError as exc:
        raise SpecError("--address", f"nothing answers at {host}:{port} ({exc.strerror or exc})") from None


def init_ray(address: str | None = None, num_cpus: int | None = None, num_gpus: float | None = None) -> None:
    """Local Ray bound to 127.0.0.1 by default (its GPUs detected, or `num_gpus` declared: a CPU machine can declare
    GPUs to test their scheduling); `address` joins an existing cluster."""
    import ray

    if ray.is_initialized():
        return
    if address:
        ray.init(address=address, log_to_driver=False)
    else:
        ray.init(num_cpus=num_cpus or os.cpu_count(), num_gpus=num_gpus, include_dashboard=False, log_to_driver=False,
                 _node_ip_address="127.0.0.1", configure_logging=True, logging_level="ERROR")
    from nas.service.signals import reinstall_if_active

    reinstall_if_active()  # ray.init put its own SIGTERM handler in (an abort)


def cluster_gpus() -> float:
    """GPUs the Ray cluster this process is connected to has (declared or detected)."""
    import ray

    return float(ray.cluster_resources().get("GPU", 0.0)) if ray.is_initialized() else 0.0


def run_trials(fn: Callable[..., dict], trial_ids: list[int], ctx, storage_path: pathlib.Path, resources: dict,
               max_concurrent: int, name: str, on_result: Callable[[dict], None] | None = None, **task_args) -> None:
    """One Ray Tune trial per store trial id; `fn(trial_id, ctx, **task_args)` runs on a worker (`ctx`, the job's
    JobContext, reaches it once through Ray's object store) and reports its result dict. `resources`: what each trial
    asks for ({"cpu": n, "gpu": fraction}; a fraction lets several trials share one GPU). Failures are recorded in the
    store by `fn` itself; Tune's own error handling only covers a crashed worker."""
    from ray import tune

    class _Progress(tune.Callback):
        def on_trial_result(self, iteration, trials, trial, result, **info):
            if on_result:
                on_result(result)

    def trainable(config: dict, ctx) -> None:
        tune.report(fn(config["trial_id"], ctx, **task_args))

    tuner = tune.Tuner(
        tune.with_resources(tune.with_parameters(trainable, ctx=ctx), {k: v for k, v in resources.items() if v}),
        param_space={"trial_id": tune.grid_search(trial_ids)},
        tune_config=tune.TuneConfig(max_concurrent_trials=max_concurrent, reuse_actors=True),
        run_config=tune.RunConfig(name=name, storage_path=str(storage_path), verbose=0, callbacks=[_Progress()],
                                  failure_config=tune.FailureConfig(max_failures=1)),
    )
    tuner.fit()


def run_units(submit: Callable[[int], object], waits_for: list[tuple[int, ...]], slots: int,
              may_start: Callable[[int], bool] = lambda i: True, on_done: Callable[[int], None] = lambda i: None
              ) -> set[int]:
    """Run units 0..n-1 as Ray tasks, at most `slots` at once: `submit(i)` starts unit i (an ObjectRef) once every unit
    in `waits_for[i]` is done, the lowest ready index first; a ready unit that `may_start(i)` refuses does not start
    (a wall-clock budget spent), nor anything waiting for it. `on_done(i)` after unit i succeeds. After a failure
    nothing more starts, the running units finish (their work kept), then the first failure is raised. Returns the
    indices of the units done."""
    import ray

    pending: dict = {}
    done: set[int] = set()
    started: set[int] = set()
    error = None
    while True:
        while error is None and len(pending) < slots:
            ready = [i for i, deps in enumerate(waits_for) if i not in started and set(deps) <= done and may_start(i)]
            if not ready:
                break
            pending[submit(ready[0])] = ready[0]
            started.add(ready[0])
        if not pending:
            break
        (ref,), _ = ray.wait(list(pending), num_returns=1)
        i = pending.pop(ref)
        try:
            ray.get(ref)
        except Exception as exc:  # the running units keep their work (a resume picks it up)
            error = error or exc
            continue
        done.add(i)
        on_done(i)
    if error is not None:
        raise error
    return done
