"""What one per-trial student does inside a Ray worker: extract the shape from the teacher, distil it, score it on dev,
measure its latency, save it, and write each of those to the store as it happens. A hung trial is killed by its
watchdog (and run again); one that runs out of GPU memory is retried once at half the batch with accumulation."""

from __future__ import annotations

import pathlib
import traceback

from nas.context import JobContext
from nas.workers.setup import Watchdog, injected_fault, record_compute, save_model, with_oom_retry, worker_setup


def run_student_trial(trial_id: int, ctx: JobContext, threads: int, nan_trial_numbers=()) -> dict:
    from nas.store import Store

    store = Store(ctx.storage, migrate=False)
    trial = store.get_trial(trial_id)
    store.start_trial(trial_id)
    try:
        with Watchdog(store, trial_id, ctx.spec.budgets.trial_stale_s) as watchdog:
            return train_and_measure(ctx, store, store.get_trial(trial_id), threads, nan_trial_numbers, watchdog)
    except Exception as exc:  # a failing trial is recorded and the job goes on
        reason = f"{type(exc).__name__}: {exc}"
        store.finish_trial(trial_id, "FAILED", error=reason + "\n" + traceback.format_exc(limit=3), if_running=True)
        return {"trial_number": trial["number"], "state": "FAILED", "error": reason}
    finally:
        store.dispose()


def train_and_measure(ctx: JobContext, store, trial: dict, threads: int, nan_trial_numbers, watchdog: Watchdog) -> dict:
    import torch

    from nas.distill.evaluate import predict_logits, scores
    from nas.distill.loop import DistillSettings, distill
    from nas.latency.measure import measure_targets
    from nas.latency.slot import heavy_work
    from nas.distill.augment import with_transfer_set
    from nas.students import module_of
    from nas.students.arch import student_shape
    from nas.teachers.load import load_teacher

    trial_id, number = trial["id"], trial["number"]
    tensors, labels = worker_setup(ctx, threads)
    record_compute(store, trial_id, ctx)
    tc = trial["config"]
    shape = student_shape(tc["shape"])
    family = module_of(shape)  # how the shape becomes a model (nas/students)
    teacher_logits = torch.load(ctx.teacher["logits_path"])
    dev = torch.as_tensor(ctx.dev_idx, device="cpu")
    transfer = torch.load(ctx.transfer_path) if ctx.transfer_path else None
    source = load_teacher(ctx.source)  # what students slice: the teacher, or the student initialiser distilled from it
    teacher = source if ctx.source == ctx.teacher else load_teacher(ctx.teacher)  # the latency reference
    watchdog.beat()  # loading counts as progress
    if number in nan_trial_numbers:  # fault injection (NAS_INJECT_NAN_TRIALS): a real NaN loss
        teacher_logits = teacher_logits * float("nan")
    hang = injected_fault("hang", number, trial["attempts"])

    # the train rows and the transfer corpus (teacher-labelled rows without a gold label: soft loss only)
    x, y, soft, hard = with_transfer_set(tensors, labels, teacher_logits, ctx.train_idx, transfer)

    def train_once(accumulate: int) -> tuple:
        student = family.extract_subnet(source, shape)
        oom = injected_fault("oom", number, trial["attempts"], accumulate)

        def on_step(step: int, loss: float) -> None:
            oom(step, loss)
            hang(step, loss)
            watchdog.beat()

        with heavy_work(ctx.compute.device):
            info = distill(student, x, y, soft, DistillSettings(**tc["distill"]), int(tc["steps"]), seed=ctx.seed + number,
                           on_step=on_step, compute=ctx.compute, accumulate=accumulate, hard_mask=hard)
        return student, info

    def retried(reason: str) -> None:
        store.add_metric(trial_id, "oom_retries", 1, "train", "final")

    student, info = with_oom_retry(train_once, retried)
    watchdog.beat()
    store.add_metric(trial_id, "train_loss", info["final_loss"], "train", "final", step=info["steps"])
    dev_scores = scores(predict_logits(student, {k: v[dev] for k, v in tensors.items()}, compute=ctx.compute.exact()),
                        labels[dev])
    for name, value in dev_scores.items():
        store.add_metric(trial_id, name, value, "dev", "final", step=info["steps"])
    params = family.count_parameters(student)
    store.add_metric(trial_id, "params", params, "dev", "final")
    store.add_metric(trial_id, "size_mb", family.size_mb(student), "dev", "final")
    with watchdog.measuring():
        rows = measure_targets(store, {shape.key: student}, ctx.spec.latency, reference=teacher)
    for row in rows[shape.key]:
        store.add_latency(trial_id, shape.key, row)
    last = rows[shape.key][-1]
    if last.get("speedup"):
        store.add_metric(trial_id, "speedup", last["speedup"], "dev", "final")
    out = save_model(student, ctx, pathlib.Path(ctx.artefact_dir) / f"trial-{number:04d}" / "model")
    store.add_artefact(trial["job_id"], trial_id, "model", out)
    store.finish_trial(trial_id, "COMPLETE")
    return {"trial_number": number, "state": "COMPLETE", **dev_scores, "p50_ms": last["p50_ms"],
            "train_s": info["train_s"], "params": params}
