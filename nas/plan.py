"""`nas plan SPEC`: how long each stage of a job will take on this machine, before anything is written.

A few steps are timed here (calibration): a training step and a batched forward of the teacher, the same for the
smallest and the largest student of the space (sliced from the teacher), and their batch-1 latency. Every stage's time
is then those step times multiplied by the counts the spec and the data imply (steps from epochs and rows, trials,
rows to label, latency runs), students in between interpolated by their share of the encoder's weights. The same job
with per-candidate distillation is estimated beside a supernet schedule, for comparison. Nothing is cached or stored.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass

import torch

from nas.compute import on_host

OVERHEAD_S = {"trial": 3.0, "load": 4.0}  # one Tune trial, loading a model


def _timed(fn, n: int = 2, device: str = "cpu") -> float:
    def sync():
        if device == "cuda":
            torch.cuda.synchronize()

    fn()  # warm-up
    sync()
    runs = []
    for _ in range(n):
        t0 = time.perf_counter()
        fn()
        sync()
        runs.append(time.perf_counter() - t0)
    return statistics.median(runs)


def _inputs(batch: int, seq: int, vocab: int, device: str = "cpu") -> dict:
    from nas.latency.measure import dummy_inputs

    x = dummy_inputs(batch, seq, vocab, device=device)
    return {"input_ids": x["input_ids"], "attention_mask": x["attention_mask"]}


def _device(model) -> str:
    return next(model.parameters()).device.type


def step_time(model, batch: int, seq: int) -> float:
    """Seconds of one AdamW training step on a batch of `batch` rows at `seq` tokens, on the model's device."""
    dev = _device(model)
    x = _inputs(batch, seq, model.config.vocab_size, dev)
    y = torch.zeros(batch, dtype=torch.long, device=dev)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-5)
    model.train()

    def step():
        loss = torch.nn.functional.cross_entropy(model(**x).logits, y)
        loss.backward()
        opt.step()
        opt.zero_grad()

    out = _timed(step, device=dev)
    model.eval()
    return out


def forward_time(model, batch: int, seq: int, n: int = 2) -> float:
    dev = _device(model)
    x = _inputs(batch, seq, model.config.vocab_size, dev)
    with torch.inference_mode():
        return _timed(lambda: model(**x), n, dev)


@dataclass
class Calibration:
    teacher_step: float  # s per training step at the teacher's batch (32)
    teacher_row: float  # s per row of a batched forward (labelling)
    teacher_latency: float  # s per batch-1 call
    small: dict  # {"weights", "step", "row", "latency"} of the smallest student
    large: dict  # the same of the largest

    def student(self, weights: float, what: str) -> float:
        """A student's `what` (step / row / latency) by its encoder weights, between the smallest and the largest."""
        lo, hi = self.small, self.large
        if hi["weights"] == lo["weights"]:
            return hi[what]
        f = (weights - lo["weights"]) / (hi["weights"] - lo["weights"])
        return max(lo[what] * 0.5, lo[what] + f * (hi[what] - lo[what]))


def calibrate(teacher, shapes: list, batch: int, seq: int, threads: int, device: str = "cpu") -> Calibration:
    """The step, row and latency times of the teacher and of the smallest and largest student, on `device` (fp32)."""
    from nas.students.bert_slice import extract_subnet

    torch.set_num_threads(threads)
    small, large = min(shapes, key=lambda s: s.encoder_weights()), max(shapes, key=lambda s: s.encoder_weights())
    parts = {}
    teacher = teacher.to(device)
    for name, shape in (("small", small), ("large", large)):
        m = extract_subnet(teacher, shape).to(device)
        parts[name] = {"weights": shape.encoder_weights(), "step": step_time(m, batch, seq),
                       "row": forward_time(m, 64, seq) / 64, "latency": forward_time(m, 1, seq, n=5)}
    t_step = step_time(teacher, 32, seq)
    return Calibration(t_step, forward_time(teacher, 64, seq) / 64, forward_time(teacher, 1, seq, n=5),
                       parts["small"], parts["large"])


def estimate(spec, n_rows: int, cal: Calibration, shapes: list, cached_teacher: bool, assistant_weights: float = 0.0
             ) -> dict[str, float]:
    """Seconds per stage of `spec` on a dataset of `n_rows` rows."""
    from nas.distill.loop import steps_for
    from nas.teachers.load import teacher_steps

    b, lat = spec.budgets, spec.latency
    n_train = int(0.8 * n_rows * b.data_fraction)
    n_dev = int(0.1 * n_rows)
    runs = lat.warmup + (lat.min_runs + lat.max_runs) / 2  # a latency measurement's calls (it stops when stable)
    avg_w = statistics.mean(s.encoder_weights() for s in shapes)
    measure = runs * (cal.student(avg_w, "latency") + cal.teacher_latency)  # a student beside the teacher, interleaved
    # fine-tuning, its dev evaluation after each epoch (early stopping) and the logits of every row, unless cached;
    # then, cached or not: loading it, its latency, the teacher check's TF-IDF (Ray starts before any stage)
    fit = 0.0 if cached_teacher else (teacher_steps(n_train, b.teacher_epochs) * cal.teacher_step
                                      + (n_rows + n_dev * max(1, b.teacher_epochs)) * cal.teacher_row)
    out = {"teacher": fit + runs * cal.teacher_latency + n_train * 5 * 3e-5 + OVERHEAD_S["load"]}
    tr = spec.transfer
    out["transfer"] = 0.0 if tr is None else (tr.augment * n_train + (tr.max_rows or 0)) * cal.teacher_row
    rows = n_train + (0 if tr is None else tr.augment * n_train)
    batch = 32

    def per_trial(steps: int) -> float:
        return (steps * cal.student(avg_w, "step") + n_dev * cal.student(avg_w, "row") + measure
                + OVERHEAD_S["trial"])

    per_candidate = b.trials * per_trial(steps_for(rows, batch, b.epochs, b.steps))
    sn = spec.search.supernet
    if sn is None:
        out["search"] = per_candidate
    else:
        steps = sn.steps or steps_for(n_train, batch, sn.epochs, None)
        sandwich = (2 + sn.n_random) * cal.student(avg_w, "step") + cal.teacher_row * batch
        fin = spec.search.final
        final_steps = steps_for(rows + fin.augment * n_train, batch, fin.epochs, None)
        finals = fin.top_k * final_steps * cal.student(avg_w, "step") * (2 if fin.one_step_baseline else 1)
        assistant = final_steps * cal.teacher_step * min(1.0, assistant_weights / max(cal.large["weights"], 1) * 0.5) \
            if assistant_weights else 0.0
        evolve = b.trials * (n_dev * cal.student(avg_w, "row") + measure)
        out["search"] = steps * sandwich + evolve + finals + assistant + OVERHEAD_S["load"] * 3
        out["per-candidate instead"] = per_candidate
    # the scoring stage reads each per-trial front point's saved model and scores it on test (finals carry theirs)
    front = 0 if sn is not None else min(b.trials, 6)
    out["scoring"] = front * (n_dev * cal.student(avg_w, "row") + 0.1)
    out["references"] = runs * (cal.teacher_latency + 0.001) + n_train * 5 * 3e-5 + OVERHEAD_S["load"]
    out["total"] = sum(v for k, v in out.items() if k != "per-candidate instead")
    return out


def plan(spec) -> dict:
    """{"stages": {stage: seconds}, "device", "calibration": {...}} of `spec` (already checked) on this machine."""
    import os

    from nas.data import load_dataset
    from nas.search.space import all_shapes
    from nas.spec.space import load_search_space
    from nas.teachers.load import cached_teacher, load_teacher, root_of, teacher_config, teacher_path
    from nas.teachers import load_pretrained

    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    root, tcfg = root_of(spec.teacher, spec.student_init, teacher_config(spec.teacher))
    space = load_search_space(spec.search_space, tcfg)
    ds = load_dataset(spec.dataset, spec.task, spec.seed)
    cached = cached_teacher(spec.teacher, ds, spec.seed, spec.budgets.teacher_epochs, spec.budgets.max_seq_len,
                            metric=spec.objectives.metric)
    with on_host():
        teacher = load_teacher(cached) if cached else load_pretrained(teacher_path(root))
    shapes = all_shapes(space.student)
    threads = spec.latency.threads or os.cpu_count() or 1
    cal = calibrate(teacher, shapes, space.distill.batch_size, spec.budgets.max_seq_len, threads)
    aw = max((s.encoder_weights() for s in all_shapes(space.assistant)), default=0) if space.assistant else 0
    aw = aw if spec.search.supernet is not None and spec.search.autodisc.enabled else 0
    stages = estimate(spec, len(ds.labels), cal, shapes, cached is not None, aw)
    gpu = {}
    if torch.cuda.is_available():  # the same job where a GPU trains it (fp32 calibration: bf16 runs faster)
        gcal = calibrate(teacher, shapes, space.distill.batch_size, spec.budgets.max_seq_len, threads, "cuda")
        gpu = {"gpu": {"device": torch.cuda.get_device_name(0),
                       "stages": estimate(spec, len(ds.labels), gcal, shapes, cached is not None, aw)}}
        teacher.to("cpu")
    return {"stages": stages, "device": "cpu", "threads": threads, "rows": len(ds.labels), **gpu,
            "made_at": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()),
            "teacher_cached": cached is not None,
            "calibration": {"teacher_step_s": cal.teacher_step, "teacher_row_s": cal.teacher_row,
                            "teacher_latency_ms": 1000 * cal.teacher_latency,
                            "student_step_s": [cal.small["step"], cal.large["step"]]}}
