"""Ray task bodies of the supernet schedule: train one supernet round; score shapes with inherited weights and measure
them."""

from __future__ import annotations

import pathlib
import time
from dataclasses import dataclass

from nas.context import JobContext
from nas.spec.space import StudentSpace
from nas.store.store import Store
from nas.students.shape import Shape
from nas.workers.setup import record_compute, worker_setup


@dataclass
class SupernetRound:
    """What one supernet round trains: round 1 from the teacher and its logits; a second round (`init_dir`,
    `target_logits_paths`, `out_name`) from the distilled assistant and its."""

    space: dict  # StudentSpace.model_dump() of the shapes it covers
    steps: int
    train_idx: list[int]  # train rows outside the rewiring slice
    rewire_idx: list[int]  # the held-out train rows importance is scored on
    init_dir: str | None = None  # default: the fine-tuned teacher
    target_logits_paths: list[str] | None = None  # default: the teacher's logits
    out_name: str = "supernet"


def soft_targets(paths: list[str]):
    """One set of soft targets from one or more teachers' logits files: their mean (multi-teacher averaging)."""
    import torch

    logits = [torch.load(p).float() for p in paths]
    return logits[0] if len(logits) == 1 else torch.stack(logits).mean(0)


def train_supernet_task(ctx: JobContext, trial_id: int, rnd: SupernetRound) -> str:
    """Rewire and sandwich-train a supernet; returns its saved model directory."""
    from nas.teachers import load_pretrained

    from nas.distill.loop import DistillSettings
    from nas.distill.supernet import train_supernet
    from nas.students.rewire import rewire
    from nas.teachers.load import load_teacher
    from nas.workers.setup import save_model

    tensors, labels = worker_setup(ctx)
    store = Store(ctx.storage, migrate=False)
    store.start_trial(trial_id)
    record_compute(store, trial_id, ctx)
    try:
        sn = ctx.spec.search.supernet
        if rnd.init_dir:
            model = load_pretrained(rnd.init_dir)
        else:
            model = load_teacher(ctx.source)
        teacher_logits = soft_targets(rnd.target_logits_paths or [ctx.teacher["logits_path"]])
        if sn.rewire:
            # importance from cross-entropy on held-out train rows: KL to the teacher's own logits is flat at the teacher
            rewire(model, tensors, labels, rnd.rewire_idx, device=ctx.compute.device)
        out = pathlib.Path(ctx.artefact_dir) / rnd.out_name
        out.mkdir(parents=True, exist_ok=True)
        settings = DistillSettings(**{**ctx.space.distill.model_dump(), "lr": sn.lr})
        last = [time.monotonic()]

        def on_step(step: int, loss: float) -> None:
            if time.monotonic() - last[0] > 3 or step + 1 == rnd.steps:
                store.add_metric(trial_id, "train_loss", loss, "train", "proxy", step=step + 1)
                store.heartbeat(trial_id)
                last[0] = time.monotonic()

        info = train_supernet(model, teacher_logits, tensors, labels, rnd.train_idx, StudentSpace(**rnd.space), rnd.steps,
                              settings, n_random=sn.n_random, hidden_weight=sn.hidden_weight, seed=ctx.seed,
                              checkpoint_path=out / "checkpoint.pt", checkpoint_every=sn.checkpoint_every, on_step=on_step,
                              compute=ctx.compute)
        save_model(model, ctx, out / "model")
        store.add_artefact(ctx.job_id, trial_id, "supernet", str(out / "model"))
        store.add_metric(trial_id, "train_s", info["train_s"], "train", "proxy")
        store.add_metric(trial_id, "step_s", info["step_s"], "train", "proxy")
        store.finish_trial(trial_id, "COMPLETE")
        # the resume state (weights, optimizer moments, RNG: 3-4x the model) is spent once the round is complete: a
        # resumed job reuses the saved model
        (out / "checkpoint.pt").unlink(missing_ok=True)
        return str(out / "model")
    except Exception as exc:
        store.finish_trial(trial_id, "FAILED", error=f"{type(exc).__name__}: {exc}", if_running=True)
        raise
    finally:
        store.dispose()


def evaluate_shapes_task(ctx: JobContext, supernet_dir: str, items: list[dict], probe_idx: list[int]) -> list[dict]:
    """Proxy dev metric with inherited weights, parameters and measured latency of each shape; one trial per item
    ({"trial_id", "shape"}). Latency: all shapes of the batch measured together in interleaved rounds with the teacher
    as the reference."""
    from nas.teachers import load_pretrained

    from nas.latency.slot import heavy_work

    tensors, labels = worker_setup(ctx)
    store = Store(ctx.storage, migrate=False)
    model = load_pretrained(supernet_dir)
    model.to(ctx.compute.device)  # every shape is scored on the device; its extracted copy lands on the CPU
    results, subs = [], {}
    try:
        with heavy_work(ctx.compute.device):
            for item in items:
                r, sub = score_shape(ctx, store, model, supernet_dir, item, tensors, labels, probe_idx)
                results.append(r)
                if sub is not None:
                    subs[item["trial_id"]] = sub
        if subs:
            measure_shapes(ctx, store, subs, results)
        return results
    finally:
        store.dispose()


def score_shape(ctx: JobContext, store: Store, model, supernet_dir: str, item: dict, tensors, labels, probe_idx):
    """One shape's proxy metrics and parameters, written to its trial; returns (result, (shape, sub-network)) or
    (FAILED result, None)."""
    from nas.distill.evaluate import scores
    from nas.distill.proxy import probe_logits, shape_logits
    from nas.students.bert_slice import count_parameters, extract_subnet, size_mb

    tid, shape = item["trial_id"], Shape.from_dict(item["shape"])
    store.start_trial(tid)
    record_compute(store, tid, ctx)
    try:
        dev = labels[ctx.dev_idx]
        head = scores(shape_logits(model, shape, tensors, ctx.dev_idx, compute=ctx.compute), dev)
        if ctx.spec.search.supernet.proxy == "probe":  # the ranking metric is the probe's; the head's is kept beside it
            sc = scores(probe_logits(model, shape, tensors, labels, probe_idx, ctx.dev_idx, compute=ctx.compute), dev)
            store.add_metric(tid, "head_accuracy", head["accuracy"], "dev", "proxy")
        else:
            sc = head
        for name, value in sc.items():
            store.add_metric(tid, name, value, "dev", "proxy")
        sub = extract_subnet(model, shape)
        params = count_parameters(sub)
        store.add_metric(tid, "params", params, "dev", "proxy")
        store.add_metric(tid, "size_mb", size_mb(sub), "dev", "proxy")
        # the supernet this proxy was read from (a second round has its own): an export slices the same
        store.add_artefact(ctx.job_id, tid, "proxy_source", supernet_dir)
        return {"trial_id": tid, "shape": shape.as_dict(), "state": "COMPLETE", **sc, "params": params}, (shape, sub)
    except Exception as exc:
        store.finish_trial(tid, "FAILED", error=f"{type(exc).__name__}: {exc}", if_running=True)
        return {"trial_id": tid, "shape": shape.as_dict(), "state": "FAILED", "error": str(exc)}, None


def measure_shapes(ctx: JobContext, store: Store, subs: dict, results: list[dict]) -> None:
    """Measure the scored shapes together (the teacher re-measured in every round) and finish their trials."""
    from nas.latency.measure import measure_targets
    from nas.teachers.load import load_teacher

    try:
        teacher = load_teacher(ctx.teacher)
        rows = measure_targets(store, {s.key: m for s, m in subs.values()}, ctx.spec.latency, reference=teacher)
    except Exception as exc:
        for r in results:
            if r["trial_id"] in subs:
                store.finish_trial(r["trial_id"], "FAILED", error=f"latency: {type(exc).__name__}: {exc}", if_running=True)
                r.update({"state": "FAILED", "error": str(exc)})
        return
    for r in results:
        if r["trial_id"] not in subs:
            continue
        tid, shape = r["trial_id"], subs[r["trial_id"]][0]
        for row in rows[shape.key]:
            store.add_latency(tid, shape.key, row)
        last = rows[shape.key][-1]
        speedup = last.get("speedup") or ctx.teacher_p50_ms / last["p50_ms"]
        store.add_metric(tid, "speedup", speedup, "dev", "proxy")
        store.finish_trial(tid, "COMPLETE")
        r.update({"p50_ms": last["p50_ms"], "p90_ms": last["p90_ms"], "speedup": speedup})
