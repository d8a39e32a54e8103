"""The latency protocol: stopping rule, fingerprint, interleaved rounds with a reference, runtimes (int8, ONNX Runtime)
against eager fp32, the exclusive slot across processes, the predictor, and fronts that never mix fingerprints."""

from __future__ import annotations

import multiprocessing as mp
import time

import numpy as np
import pytest
import torch
from transformers import BertConfig, BertForSequenceClassification

from nas.latency.measure import (
    MeasureSettings,
    all_runtime_settings,
    device_fingerprint,
    dummy_inputs,
    fingerprint_id,
    measure_interleaved,
    measure_latency,
    measure_models,
    resolve_device,
    timed_runs,
)
from nas.latency.predictor import feasible, features, fit_predictor, mape
from nas.latency.runtimes import make_runner, runtime_logits
from nas.latency.slot import exclusive_measurement, heavy_work
from nas.results.front import front_rows
from nas.store import Store
from nas.students.shape import Shape


def tiny(layers=2, hidden=64, heads=4, ffn=128, seed=0) -> BertForSequenceClassification:
    torch.manual_seed(seed)
    cfg = BertConfig(vocab_size=1000, hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=heads,
                     intermediate_size=ffn, max_position_embeddings=64, num_labels=3, attn_implementation="eager")
    return BertForSequenceClassification(cfg).eval()


FAST = dict(threads=1, seq_len=16, warmup=2, min_runs=10, max_runs=60, rel_ci=0.05)


def test_stopping_rule_stops_early_when_stable_and_caps_when_noisy():
    stable = timed_runs(lambda: time.sleep(0.002), MeasureSettings(warmup=1, min_runs=10, max_runs=100, rel_ci=0.2))
    assert 10 <= len(stable) < 100
    rng = np.random.default_rng(0)
    noisy = timed_runs(lambda: time.sleep(float(rng.choice([0.0, 0.004]))),
                       MeasureSettings(warmup=0, min_runs=10, max_runs=30, rel_ci=0.001))
    assert len(noisy) == 30  # a 0.1% CI is never reached on a bimodal timer: the cap stops it


def test_fingerprint_names_the_machine_and_changes_with_threads():
    fp = device_fingerprint("cpu", 2)
    for key in ("cpu", "cpu_flags", "cores", "threads", "torch", "device", "onnxruntime"):
        assert key in fp, key
    assert fp["device"] == "cpu" and fp["threads"] == 2
    assert fingerprint_id(fp) == fingerprint_id(device_fingerprint("cpu", 2))
    assert fingerprint_id(fp) != fingerprint_id(device_fingerprint("cpu", 1))
    assert resolve_device("auto") == ("cuda" if torch.cuda.is_available() else "cpu")


def test_measurement_row_and_interleaved_reference():
    small, big = tiny(layers=1, hidden=32, heads=2, ffn=64), tiny(layers=4, hidden=128, heads=4, ffn=512)
    row = measure_latency(small, MeasureSettings(**FAST))
    for k in ("p50_ms", "p90_ms", "mean_ms", "cv", "n", "fingerprint", "fingerprint_id", "runtime", "dtype"):
        assert k in row, k
    assert row["p90_ms"] >= row["p50_ms"] > 0 and row["n"] >= 10
    rows = measure_interleaved({"teacher": big, "small": small}, MeasureSettings(**FAST), rounds=3, reference="teacher")
    assert rows["teacher"]["speedup"] == pytest.approx(1.0)
    assert rows["small"]["speedup"] > 1.5  # 4 layers x 128 wide vs 1 x 32, same round
    assert rows["small"]["rounds"] == 3 and rows["small"]["n"] >= 15
    with pytest.raises(ValueError, match="reference"):
        measure_interleaved({"a": small}, MeasureSettings(**FAST), reference="missing")


@pytest.mark.parametrize("runtime,tol", [("int8", 0.05), ("onnx", 1e-4)])
def test_runtimes_match_eager_fp32(runtime, tol):
    model = tiny()
    x = dummy_inputs(2, 16, 1000)
    with torch.inference_mode():
        ref = model(**x).logits
    out = runtime_logits(model, runtime, x)
    assert out.shape == ref.shape
    assert (out - ref).abs().max().item() < tol * max(1.0, ref.abs().max().item())
    # ONNX is exported with dynamic axes: another batch and length run too
    if runtime == "onnx":
        y = dummy_inputs(3, 24, 1000)
        with torch.inference_mode():
            assert torch.allclose(runtime_logits(model, "onnx", y), model(**y).logits, atol=1e-4)


def test_runtime_rows_are_separate_and_the_primary_comes_last():
    base = MeasureSettings(**FAST)
    order = [s.runtime for s in all_runtime_settings(base, ["int8", "onnx", "eager"])]
    assert order == ["int8", "onnx", "eager"]
    rows = measure_models(None, {"m": tiny(layers=1)}, base, ["int8"], reference=tiny(layers=2), rounds=2)["m"]
    assert [r["runtime"] for r in rows] == ["int8", "eager"] and [r["dtype"] for r in rows] == ["int8", "fp32"]
    assert all("speedup" in r for r in rows)


def test_cuda_only_combinations_are_refused_on_the_cpu():
    x = dummy_inputs(1, 8, 1000)
    with pytest.raises(ValueError, match="CPU"):
        make_runner(tiny(), "onnx", "fp32", "cuda", x, 1)
    with pytest.raises(ValueError, match="int8"):
        make_runner(tiny(), "eager", "int8", "cpu", x, 1)
    if not torch.cuda.is_available():
        with pytest.raises(RuntimeError, match="cuda"):
            measure_latency(tiny(), MeasureSettings(device="cuda", **FAST))


def _hold_heavy(lock_dir: str, ready, seconds: float) -> None:
    import os

    os.environ["NAS_LOCK_DIR"] = lock_dir
    with heavy_work():
        ready.set()
        time.sleep(seconds)


def test_measurement_waits_for_heavy_work_in_another_process(tmp_path, monkeypatch):
    monkeypatch.setenv("NAS_LOCK_DIR", str(tmp_path))
    ctx = mp.get_context("spawn")
    ready = ctx.Event()
    p = ctx.Process(target=_hold_heavy, args=(str(tmp_path), ready, 1.5))
    p.start()
    try:
        assert ready.wait(60)
        t0 = time.monotonic()
        with pytest.raises(TimeoutError):
            with exclusive_measurement(timeout_s=0.3):
                pass
        with exclusive_measurement() as waited:
            assert waited > 0.5  # it could only start once the other process left its heavy work
        assert time.monotonic() - t0 < 30
    finally:
        p.join(30)
    with heavy_work(), heavy_work():  # heavy work is shared: nesting in one process does not block
        pass


def test_predictor_recovers_additive_latency():
    rng = np.random.default_rng(0)
    true = np.array([0.3, 0.5, 0.8, 0.4, 0.2, 0.05, 0.1, 0.15])
    shapes = [Shape(int(L), int(H), int(A), int(F)) for L, H, A, F in zip(rng.integers(1, 7, 45),
                                                                            rng.choice([128, 192, 256, 384], 45),
                                                                            rng.choice([2, 4, 8], 45),
                                                                            rng.choice([256, 512, 1024, 1536], 45))]
    y = np.array([features(s) @ true for s in shapes])
    pred = fit_predictor(shapes[:30], list(y[:30]))
    assert mape(pred.predict_many(shapes[30:]), y[30:]) < 1e-3
    assert np.allclose(pred.coef, true, atol=1e-3)
    assert pred.fit_mape < 1e-3
    noisy = y * rng.normal(1.0, 0.03, len(y))
    assert mape(fit_predictor(shapes[:30], list(noisy[:30])).predict_many(shapes[30:]), y[30:]) < 0.05
    big = Shape(6, 384, 8, 1536)
    assert not feasible(pred, big, limit_ms=pred.predict(big) / 2)
    assert feasible(pred, big, limit_ms=pred.predict(big)) and feasible(None, big, 0.001)
    with pytest.raises(ValueError):
        fit_predictor(shapes[:2], list(y[:2]))


def _lat(fp: str, p50: float) -> dict:
    return {"fingerprint": {"cpu": fp}, "fingerprint_id": fp, "device": "cpu", "runtime": "eager", "dtype": "fp32",
            "batch": 1, "seq_len": 64, "threads": 2, "warmup": 1, "n": 20, "p50_ms": p50, "p90_ms": p50 * 1.1,
            "mean_ms": p50, "cv": 0.01}


def test_front_refuses_to_mix_fingerprints(sqlite_url):
    store = Store(sqlite_url)
    spec = {"objectives": {"metric": "accuracy", "latency": "p50", "size": False}}
    job = store.create_job("j", spec)
    teacher = store.add_trial(job, "teacher", {"shape": Shape(6, 384, 12, 1536).as_dict()})["id"]
    store.add_metric(teacher, "accuracy", 0.85, "dev", "final")
    store.add_latency(teacher, "teacher", _lat("here", 10.0))
    store.finish_trial(teacher, "COMPLETE")
    for i, (fp, acc, p50) in enumerate([("here", 0.80, 1.0), ("here", 0.82, 2.0), ("elsewhere", 0.84, 0.5)]):
        t = store.add_trial(job, "student", {"shape": Shape(1, 128, 4, 512).as_dict()})["id"]
        store.add_metric(t, "accuracy", acc, "dev", "final")
        store.add_metric(t, "params", 1e6, "dev", "final")
        store.add_latency(t, f"s{i}", _lat(fp, p50))
        store.finish_trial(t, "COMPLETE")
    fr = front_rows(store, job)
    assert len(fr["rows"]) == 2  # the point measured elsewhere (which would dominate both) is left out
    assert [r["metric"] for r in fr["front"]] == [0.80, 0.82]
    assert fr["fingerprint"] == {"cpu": "here"}
    store.dispose()


def test_constraint_prunes_what_the_predictor_is_sure_about_and_keeps_it_off_the_front(sqlite_url):
    from nas.spec.job import JobSpec
    from nas.stages.supernet.search import prune_by_predictor

    store = Store(sqlite_url)
    spec = JobSpec.model_validate({"name": "c", "dataset": "bbc-news", "constraints": {"latency_p90_ms": 3.0}})
    job = store.create_job("c", spec.model_dump(by_alias=True))
    true = np.array([0.3, 0.5, 0.8, 0.4, 0.2, 0.05, 0.1, 0.15])
    rng = np.random.default_rng(1)
    for _ in range(12):
        s = Shape(int(rng.integers(1, 5)), int(rng.choice([128, 256])), 4, int(rng.choice([256, 512, 1024])))
        t = store.add_trial(job, "student", {"shape": s.as_dict()})["id"]
        store.add_latency(t, s.key, {**_lat("here", float(features(s) @ true)), "p90_ms": float(features(s) @ true)})
        store.finish_trial(t, "COMPLETE")
    small, huge = Shape(1, 128, 2, 256), Shape(6, 384, 12, 1536)
    assert features(huge) @ true > 3.0 * 1.15 > features(small) @ true
    logs = []
    kept = prune_by_predictor(store, job, [huge, small], spec, 0, logs.append)
    assert kept == [small]
    pruned = store.trials(job, state="PRUNED")
    assert len(pruned) == 1 and pruned[0]["config"]["shape"] == huge.as_dict() and "limit 3.0" in pruned[0]["error"]
    assert "pruned 1 of 2" in logs[0]
    # without a constraint nothing is pruned
    free = JobSpec.model_validate({"name": "c", "dataset": "bbc-news"})
    assert prune_by_predictor(store, job, [huge, small], free, 0, logs.append) == [huge, small]
    store.dispose()


def test_timer_noise_floor_times_fixed_work_n_times():
    from nas.latency.measure import timer_noise_floor

    row = timer_noise_floor(n=40, work=2_000)
    assert row["n"] == 40 and row["p50_ms"] > 0 and row["cv"] >= 0 and row["p90_ms"] >= row["p50_ms"]
    assert timer_noise_floor(n=20, work=20_000)["p50_ms"] > row["p50_ms"]  # ten times the work takes longer
