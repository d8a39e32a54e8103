"""Latency is a measurement: warm-up, then timed runs until the median is known to within `rel_ci` (or a cap), with the
device fingerprint that says where it was taken.

CPU: a fixed thread count, `torch.inference_mode`, `perf_counter_ns`. CUDA: CUDA events after synchronisation.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import platform
import statistics
import time
from dataclasses import dataclass

import numpy as np
import torch


@dataclass
class MeasureSettings:
    device: str = "cpu"
    runtime: str = "eager"
    dtype: str = "fp32"
    batch: int = 1
    seq_len: int = 128
    threads: int = 2
    warmup: int = 10
    min_runs: int = 20
    max_runs: int = 200
    rel_ci: float = 0.02

    # 10 short rounds rather than 3 long ones (same total runs): the median of 10 same-round ratios to the teacher
    # repeated across processes within 3-4% on the 2-core VM against 5-8% with 3 rounds (docs/BENCHMARKS.md, issue 4)
    rounds: int = 10

    def cache_settings(self) -> dict:
        return {"runtime": self.runtime, "dtype": self.dtype, "batch": self.batch, "seq_len": self.seq_len, "threads": self.threads}


def resolve_device(device: str) -> str:
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return device


def _cpu_model() -> tuple[str, list[str]]:
    try:
        with open("/proc/cpuinfo") as f:
            text = f.read()
        model = next((l.split(":", 1)[1].strip() for l in text.splitlines() if l.startswith("model name")), platform.processor())
        flags_line = next((l.split(":", 1)[1].split() for l in text.splitlines() if l.startswith("flags")), [])
        keep = [f for f in flags_line if f.startswith(("avx", "amx", "sse4", "fma", "f16c"))]
        return model, sorted(keep)
    except OSError:
        return platform.processor() or platform.machine(), []


def device_fingerprint(device: str = "cpu", threads: int | None = None) -> dict:
    """Where a measurement was taken: everything that changes a latency across machines."""
    model, flags = _cpu_model()
    fp = {
        "cpu": model, "cpu_flags": flags, "cores": os.cpu_count(), "threads": threads or torch.get_num_threads(),
        "machine": platform.machine(), "torch": torch.__version__, "device": device,
    }
    if device == "cuda" and torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        fp.update({"gpu": props.name, "gpu_memory_gb": round(props.total_memory / 2**30, 1), "cuda": torch.version.cuda,
                   "driver": _nvidia_driver()})
    try:
        import onnxruntime  # noqa: F401

        fp["onnxruntime"] = onnxruntime.__version__
    except ImportError:
        pass
    return fp


def _nvidia_driver() -> str | None:
    try:
        import subprocess

        return subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"], capture_output=True,
                              text=True, timeout=10).stdout.strip() or None
    except Exception:
        return None


def fingerprint_id(fp: dict) -> str:
    return hashlib.sha256(json.dumps(fp, sort_keys=True).encode()).hexdigest()[:16]


def dummy_inputs(batch: int, seq_len: int, vocab: int = 30522, device: str = "cpu") -> dict[str, torch.Tensor]:
    g = torch.Generator(device="cpu").manual_seed(0)
    low = 1000 if vocab > 2000 else 1
    ids = torch.randint(low, min(vocab, 29000), (batch, seq_len), generator=g, device="cpu")
    return {"input_ids": ids.to(device), "attention_mask": torch.ones_like(ids).to(device),
            "token_type_ids": torch.zeros_like(ids).to(device)}


def median_ci_halfwidth(samples: list[float]) -> float:
    """Half-width of a ~95% distribution-free confidence interval of the median (order statistics)."""
    n = len(samples)
    if n < 5:
        return float("inf")
    s = sorted(samples)
    k = int(np.floor((n - 1.96 * np.sqrt(n)) / 2))
    lo, hi = s[max(0, k)], s[min(n - 1, n - 1 - k)]
    return (hi - lo) / 2


def timed_runs(run_once, settings: MeasureSettings, sync=None) -> list[float]:
    """Run `run_once` until the median's CI half-width is within rel_ci of the median, or max_runs; milliseconds."""
    for _ in range(settings.warmup):
        run_once()
    if sync:
        sync()
    samples: list[float] = []
    while len(samples) < settings.max_runs:
        t0 = time.perf_counter_ns()
        run_once()
        if sync:
            sync()
        samples.append((time.perf_counter_ns() - t0) / 1e6)
        if len(samples) >= settings.min_runs and len(samples) % 5 == 0:
            med = statistics.median(samples)
            if median_ci_halfwidth(samples) <= settings.rel_ci * med:
                break
    return samples


def timer_noise_floor(n: int = 300, work: int = 20_000) -> dict:
    """Per-call CV of a fixed pure-Python workload (~1 ms) timed by the same `timed_runs` as models, n runs.

    No model can be timed more steadily than this on the same machine: it is the floor under any row's `cv`, reported
    beside the measurements so a noisy machine is told apart from a noisy protocol."""
    def run_once():
        s = 0
        for i in range(work):
            s += i * i
        return s

    return summarise(timed_runs(run_once, MeasureSettings(warmup=max(10, n // 10), min_runs=n, max_runs=n)))


def summarise(samples: list[float]) -> dict:
    arr = np.asarray(samples)
    mean = float(arr.mean())
    return {"n": len(samples), "p50_ms": float(np.median(arr)), "p90_ms": float(np.percentile(arr, 90)), "mean_ms": mean,
            "cv": float(arr.std(ddof=1) / mean) if len(arr) > 1 and mean > 0 else 0.0}


def _check(settings: MeasureSettings) -> str:
    device = resolve_device(settings.device)
    if device == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("latency.device is cuda but no CUDA device is visible")
    return device


def machine_load() -> tuple[float, bool]:
    """(1-minute load average per core, busy): busy when the load is above what the cores can run (half a core of
    slack: the measurement's own threads are part of the load), i.e. something else ran beside the measurement."""
    import os

    cores = os.cpu_count() or 1
    one = os.getloadavg()[0]
    return round(one / cores, 3), one > cores + 0.5


def latency_row(settings: MeasureSettings, device: str, samples: list[float]) -> dict:
    fp = device_fingerprint(device, settings.threads if device == "cpu" else None)
    load, busy = machine_load()
    return {"fingerprint": fp, "fingerprint_id": fingerprint_id(fp), "device": device, "runtime": settings.runtime,
            "dtype": settings.dtype, "batch": settings.batch, "seq_len": settings.seq_len, "threads": settings.threads,
            "warmup": settings.warmup, **summarise(samples), "load": load, "busy": busy}


class _Runner:
    """A model prepared once in its runtime on fixed inputs, timed as often as asked."""

    def __init__(self, model: torch.nn.Module, settings: MeasureSettings):
        from nas.latency.runtimes import input_names, make_runner
        from nas.teachers import FAMILIES

        self.settings = settings
        self.device = _check(settings)
        vocab = getattr(getattr(model, "config", None), "vocab_size", 30522)
        inputs = dummy_inputs(settings.batch, settings.seq_len, vocab, "cpu")
        if getattr(getattr(model, "config", None), "model_type", None) in FAMILIES:
            inputs = {k: inputs[k] for k in input_names(model)}  # no token types where the family has none
        with _threads(settings, self.device):
            self.run, self.cleanup = make_runner(model, settings.runtime, settings.dtype, self.device, inputs,
                                                 settings.threads)

    def time(self, settings: MeasureSettings) -> list[float]:
        with _threads(settings, self.device):
            if self.device == "cuda":
                return _cuda_runs(self.run, settings)
            return timed_runs(self.run, settings)


class _threads:
    def __init__(self, settings: MeasureSettings, device: str):
        self.n, self.device = settings.threads, device

    def __enter__(self):
        self.prev = torch.get_num_threads()
        if self.device == "cpu":
            torch.set_num_threads(self.n)

    def __exit__(self, *exc):
        torch.set_num_threads(self.prev)


def measure_latency(model: torch.nn.Module, settings: MeasureSettings, exclusive: bool = True) -> dict:
    """One measurement row (without trial/config keys): fingerprint, settings, n, p50, p90, mean, CV. Taken in the node's
    exclusive latency slot (see `nas.latency.slot`) unless `exclusive` is False."""
    from nas.latency.slot import exclusive_measurement

    runner = _Runner(model, settings)
    try:
        with exclusive_measurement(device=runner.device) if exclusive else contextlib.nullcontext():
            samples = runner.time(settings)
    finally:
        runner.cleanup()
    return latency_row(settings, runner.device, samples)


def measure_interleaved(models: dict[str, torch.nn.Module], settings: MeasureSettings, rounds: int | None = None,
                        reference: str | None = None, seed: int = 0, exclusive: bool = True) -> dict[str, dict]:
    """Measure several models in `rounds` (default: `settings.rounds`) interleaved rounds (a fresh random order each round), so that drift of the
    machine hits all of them alike. Each round times every model with a share of the run budget; a model's row pools
    its samples over the rounds. With `reference` (e.g. the teacher, measured in every round), each row also gets
    `speedup` = median over rounds of reference p50 / model p50 from the same round, and `reference_p50_ms`."""
    from nas.latency.slot import exclusive_measurement

    if reference is not None and reference not in models:
        raise ValueError(f"reference {reference!r} is not among the models measured")
    rounds = max(1, int(settings.rounds if rounds is None else rounds))
    per_round = MeasureSettings(**{**settings.__dict__, "min_runs": max(5, settings.min_runs // rounds),
                                   "max_runs": max(5, settings.max_runs // rounds),
                                   "warmup": max(1, settings.warmup // rounds)})
    runners = {name: _Runner(m, settings) for name, m in models.items()}
    samples: dict[str, list[float]] = {name: [] for name in models}
    round_p50: dict[str, list[float]] = {name: [] for name in models}
    rng = np.random.default_rng(seed)
    try:
        with exclusive_measurement(device=resolve_device(settings.device)) if exclusive else contextlib.nullcontext():
            for _ in range(rounds):
                for i in rng.permutation(len(runners)):
                    name = list(runners)[i]
                    got = runners[name].time(per_round)
                    samples[name] += got
                    round_p50[name].append(statistics.median(got))
    finally:
        for r in runners.values():
            r.cleanup()
    out = {}
    for name, runner in runners.items():
        row = latency_row(settings, runner.device, samples[name])
        row["rounds"] = rounds
        if reference is not None:
            ratios = [a / b for a, b in zip(round_p50[reference], round_p50[name])]
            row["speedup"] = float(np.median(ratios))
            row["reference_p50_ms"] = float(np.median(round_p50[reference]))
        out[name] = row
    return out


def _cuda_runs(run_once, settings: MeasureSettings) -> list[float]:
    for _ in range(settings.warmup):
        run_once()
    torch.cuda.synchronize()
    samples: list[float] = []
    while len(samples) < settings.max_runs:
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        run_once()
        end.record()
        torch.cuda.synchronize()
        samples.append(start.elapsed_time(end))
        if len(samples) >= settings.min_runs and len(samples) % 5 == 0:
            if median_ci_halfwidth(samples) <= settings.rel_ci * statistics.median(samples):
                break
    return samples


TEACHER_KEY = "__reference__"


def measure_models(store, models: dict[str, torch.nn.Module], settings: MeasureSettings, extra_runtimes=(),
                   reference: torch.nn.Module | None = None, rounds: int | None = None) -> dict[str, list[dict]]:
    """Rows for every model (by config key) in every runtime (extras first, the primary last). Cached rows (same
    fingerprint, key and settings) are reused; the rest are measured together in interleaved rounds with `reference`
    (the teacher) re-measured in each round, which gives each new row its `speedup` and `reference_p50_ms`."""
    out: dict[str, list[dict]] = {k: [] for k in models}
    for rs in all_runtime_settings(settings, extra_runtimes):
        fp_id = fingerprint_id(device_fingerprint(resolve_device(rs.device), rs.threads))
        todo = {}
        for key, model in models.items():
            cached = store.find_latency(fp_id, key, rs.cache_settings()) if store is not None else None
            if cached:
                out[key].append(cached)
            else:
                todo[key] = model
        if not todo:
            continue
        batch = dict(todo)
        if reference is not None:
            batch[TEACHER_KEY] = reference
        rows = measure_interleaved(batch, rs, rounds=rounds, reference=TEACHER_KEY if reference is not None else None)
        for key in todo:
            out[key].append(rows[key])
    return out


def all_runtime_settings(settings: MeasureSettings, extra_runtimes) -> list[MeasureSettings]:
    """Extra runtimes first, the primary last: a trial's last latency row is the one its front uses."""
    out = []
    for rt in extra_runtimes or ():
        if rt != settings.runtime:
            out.append(MeasureSettings(**{**settings.__dict__, "runtime": rt, "dtype": "int8" if rt == "int8" else "fp32"}))
    return out + [settings]


def settings_from_spec(lat) -> MeasureSettings:
    d = lat.model_dump() if hasattr(lat, "model_dump") else dict(lat)
    return MeasureSettings(**{k: v for k, v in d.items() if k in MeasureSettings.__dataclass_fields__})


def target_settings(lat) -> list[MeasureSettings]:
    """The settings of every deployment target of a spec's `latency:` section (`LatencySettings`), the objective first:
    the section's protocol (warm-up, runs, rounds) with each target's device, runtime, dtype, batch, length, threads."""
    base = settings_from_spec(lat)
    return [MeasureSettings(**{**base.__dict__, **{k: v for k, v in t.items() if k in base.__dict__}})
            for t in lat.resolved_targets()]


def planned_settings(lat) -> list[MeasureSettings]:
    """What a model is measured with, in order: the other targets, then the first target's extra runtimes, then the
    first target itself, last (a trial's last latency row is its objective). Settings met twice are measured once."""
    first, *others = target_settings(lat)
    out: list[MeasureSettings] = []
    for s in others + all_runtime_settings(first, lat.extra_runtimes):
        if s in out:
            out.remove(s)
        out.append(s)
    return out


def measure_targets(store, models: dict[str, torch.nn.Module], lat, reference: torch.nn.Module | None = None,
                    rounds: int | None = None) -> dict[str, list[dict]]:
    """`measure_models` on every deployment target of the spec's `latency:` section; each model's rows in the order of
    `planned_settings`, so its last row is the search objective's."""
    out: dict[str, list[dict]] = {k: [] for k in models}
    for settings in planned_settings(lat):
        for key, rows in measure_models(store, models, settings, (), reference=reference, rounds=rounds).items():
            out[key] += rows
    return out

