"""`nas plan SPEC`: how long each stage of a job will take on this machine, before anything is written.

A few steps are timed here (calibration): a training step and a batched forward of the teacher, the same for the
smallest and the largest student of the space (sliced from what students slice: the teacher, or the student
initialiser, which is timed at full size too), and their batch-1 latency. Every stage's time is then those step
times multiplied by the counts the spec and the data imply (steps from epochs and rows, trials, rows to label,
latency runs; forwards over length-sorted rows at the data's own batch widths), students in between interpolated by
their share of the encoder's weights. The same job with per-candidate distillation is estimated beside a supernet
schedule, for comparison. Nothing is cached or stored.
"""

from __future__ import annotations

import math
import statistics
import time
from dataclasses import dataclass

import numpy as np
import torch

from nas.compute import on_host, resolve

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


def step_time(model, batch: int, seq: int, precision: str = "fp32") -> float:
    """Seconds of one AdamW training step on a batch of `batch` rows at `seq` tokens, on the model's device, forward and
    loss in `precision` (torch.autocast, as the job trains)."""
    from nas.compute import Compute

    dev = _device(model)
    cast = Compute(dev, precision).autocast
    x = _inputs(batch, seq, model.config.vocab_size, dev)
    y = torch.zeros(batch, dtype=torch.long, device=dev)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-5)
    model.train()

    def step():
        with cast():
            loss = torch.nn.functional.cross_entropy(model(**x).logits.float(), y)
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
    init: dict | None = None  # {"step", "row"} of the student initialiser at full size, where students slice one
    sorted_rows: float = 1.0  # a row's share of its full-width cost in a length-sorted, padding-trimmed batch
    # a training step's share of its full-width cost in length-grouped batches: the students' (the space's
    # distill.length_groups) and the initialiser's (budgets.student_init_length_groups); 1.0: random batches
    grouped_step: float = 1.0
    grouped_init_step: float = 1.0

    def student(self, weights: float, what: str) -> float:
        """A student's `what` (step / row / latency) by its encoder weights, between the smallest and the largest."""
        lo, hi = self.small, self.large
        share = self.grouped_step if what == "step" else 1.0
        if hi["weights"] == lo["weights"]:
            return hi[what] * share
        f = (weights - lo["weights"]) / (hi["weights"] - lo["weights"])
        return max(lo[what] * 0.5, lo[what] + f * (hi[what] - lo[what])) * share


def calibrate(teacher, shapes: list, batch: int, seq: int, threads: int, device: str = "cpu",
              source=None, sorted_seq: int | None = None, precision: str = "fp32",
              grouped_seq: int | None = None, grouped_init_seq: int | None = None) -> Calibration:
    """The step, row and latency times of the teacher and of the smallest and largest student, on `device`: training
    steps in the job's `precision`, forwards in fp32 (the scores and the latency are the fp32 model's).
    `source`: the student initialiser the students slice (else they slice the teacher), timed at full size too.
    `sorted_seq`: the mean width of the data's length-sorted batches (nas/distill/evaluate.py's predict_logits), at
    which the teacher's batched forward is timed again. `grouped_seq` / `grouped_init_seq`: the mean width of the
    students' / the initialiser's length-grouped training batches (`grouped_width`), where they train so, at which
    the largest student's / the initialiser's step is timed again."""
    from nas.students.bert_slice import extract_subnet
    from nas.teachers.load import TEACHER_BATCH

    torch.set_num_threads(threads)
    small, large = min(shapes, key=lambda s: s.encoder_weights()), max(shapes, key=lambda s: s.encoder_weights())
    parts = {}
    teacher = teacher.to(device)
    src = teacher if source is None else source.to(device)
    for name, shape in (("small", small), ("large", large)):
        m = extract_subnet(src, shape).to(device)
        parts[name] = {"weights": shape.encoder_weights(), "step": step_time(m, batch, seq, precision),
                       "row": forward_time(m, 64, seq) / 64, "latency": forward_time(m, 1, seq, n=5)}
    init = None if source is None else {"step": step_time(src, TEACHER_BATCH, seq, precision),
                                        "row": forward_time(src, 64, seq) / 64}  # its forward: the supernet's targets
    t_step, t_row = step_time(teacher, TEACHER_BATCH, seq, precision), forward_time(teacher, 64, seq) / 64
    share = 1.0 if not sorted_seq or sorted_seq >= seq else min(1.0, forward_time(teacher, 64, sorted_seq) / 64 / t_row)

    def grouped(model_fn, rows: int, width: int | None, full: float) -> float:
        return 1.0 if not width or width >= seq else min(1.0, step_time(model_fn(), rows, width, precision) / full)

    return Calibration(t_step, t_row, forward_time(teacher, 1, seq, n=5), parts["small"], parts["large"], init, share,
                       grouped(lambda: extract_subnet(src, large).to(device), batch, grouped_seq, parts["large"]["step"]),
                       grouped(lambda: src, TEACHER_BATCH, grouped_init_seq, init["step"]) if init else 1.0)


def text_lengths(tokenizer, texts, seq: int, pair: bool = False) -> np.ndarray:
    """Tokens per text, at most `seq`."""
    from nas.data import encode

    return encode(tokenizer, texts, seq, pair=pair)["attention_mask"].sum(1).numpy()


def mean_width(lengths: np.ndarray, rows, seq: int) -> int:
    """The mean width of batches (`rows`: each batch's indices into `lengths`) trimmed of their shared padding."""
    widths = [int(lengths[b].max()) for b in rows]
    return max(1, round(statistics.mean(widths))) if widths else seq


def sorted_width(tokenizer, texts, seq: int, pair: bool = False, batch: int = 64) -> int:
    """The mean width of batches of `batch` rows sorted by length and trimmed of shared padding: what the logits of
    every row, the labelling and the dev evaluations run at (reviews are shorter than max_seq_len)."""
    lengths = np.sort(text_lengths(tokenizer, texts, seq, pair))
    return mean_width(lengths, [np.arange(i, min(i + batch, len(lengths))) for i in range(0, len(lengths), batch)], seq)


def grouped_width(lengths: np.ndarray, seq: int, batch: int, pool: int) -> int:
    """The mean width of an epoch's length-grouped training batches (nas/distill/loop.py `batches` with `pool`) of rows
    of these `lengths`: what the students train at with distill.length_groups."""
    from nas.distill.loop import batches

    n = len(lengths)
    return mean_width(lengths, batches(n, min(batch, n), max(1, n // batch), 0, lengths, pool), seq)


@dataclass
class Work:
    """What the job reads from the cache, and the rows it labels, of a spec on its dataset (nas/stages/teacher.py's
    order: the teacher, then, where students slice a student initialiser, the transfer set and the initialiser)."""
    n_rows: int  # the dataset's rows
    teacher_cached: bool = False
    initialiser: bool = False  # students slice a student initialiser, distilled from the teacher in the teacher stage
    init_cached: bool = False
    transfer_cached: bool = False
    corpus_rows: int = 0  # the rows of the transfer corpus file (spec transfer.path)


def transfer_rows(spec, n_train: int, corpus_rows: int) -> int:
    """The teacher-labelled rows the students learn from beside the train rows: the job's transfer corpus (spec
    `transfer:`), else the supernet schedule's search.final.augment copies (nas/stages/supernet/finals.py)."""
    if spec.transfer is not None:
        return spec.transfer.augment * n_train + corpus_rows
    if spec.search.supernet is not None:
        return int(spec.search.final.augment) * n_train
    return 0


def estimate(spec, work: Work, cal: Calibration, shapes: list, assistant_weights: float = 0.0,
             final_slots: int = 1) -> dict[str, float]:
    """Seconds per stage of `spec` on a dataset of `work.n_rows` rows. `final_slots`: how many finals train at once
    (nas/stages/supernet/finals.py: one per GPU, one per CPU node)."""
    from nas.teachers.load import TEACHER_BATCH, teacher_steps
    from nas.distill.loop import steps_for

    b, lat, n_rows = spec.budgets, spec.latency, work.n_rows
    n_all = int(0.8 * n_rows)  # the teacher and the initialiser learn from every train row
    n_train, n_dev = int(n_all * b.data_fraction), int(0.1 * n_rows)
    runs = lat.warmup + (lat.min_runs + lat.max_runs) / 2  # a latency measurement's calls (it stops when stable)
    avg_w = statistics.mean(s.encoder_weights() for s in shapes)
    measure = runs * (cal.student(avg_w, "latency") + cal.teacher_latency)  # a student beside the teacher, interleaved
    sorted_row = cal.teacher_row * cal.sorted_rows  # the teacher's logits, the labelling: length-sorted batches
    # fine-tuning, its dev evaluation after each epoch (early stopping) and the logits of every row, unless cached;
    # then, cached or not: loading it, its latency, the teacher check's TF-IDF (Ray starts before any stage)
    fit = 0.0 if work.teacher_cached else (teacher_steps(n_all, b.teacher_epochs) * cal.teacher_step
                                           + (n_rows + n_dev * max(1, b.teacher_epochs)) * sorted_row)
    out = {"teacher": fit + runs * cal.teacher_latency + n_all * 5 * 3e-5 + OVERHEAD_S["load"]}
    extra = transfer_rows(spec, n_train, work.corpus_rows)
    label = 0.0 if work.transfer_cached else extra * sorted_row
    out["transfer"] = label if spec.transfer is not None and not work.initialiser else 0.0
    if work.initialiser:  # the teacher stage labels the transfer set first, then distils the initialiser from both
        epochs = b.init_epochs()
        # attention maps and hidden states run the teacher on each batch beside the initialiser's step
        step = cal.init["step"] * cal.grouped_init_step + (TEACHER_BATCH * cal.teacher_row if b.student_init_attention > 0
                                   or b.student_init_hidden > 0 else 0.0)
        distil = 0.0 if work.init_cached else (steps_for(n_all + extra, TEACHER_BATCH, epochs, None) * step
                                               + (n_rows + n_dev * max(1, math.ceil(epochs))) * cal.init["row"]
                                               * cal.sorted_rows)
        out["teacher"] += label + distil + OVERHEAD_S["load"]
    batch = 32

    def per_trial(steps: int) -> float:
        return (steps * cal.student(avg_w, "step") + n_dev * cal.student(avg_w, "row") * cal.sorted_rows + measure
                + OVERHEAD_S["trial"])

    rows = n_train + (extra if spec.transfer is not None else 0)
    per_candidate = b.trials * per_trial(steps_for(rows, batch, b.epochs, b.steps))
    sn = spec.search.supernet
    if sn is None:
        out["search"] = per_candidate
    else:
        steps = sn.steps or steps_for(n_train, batch, sn.epochs, None)
        # each step also runs the frozen copy of what students slice, whose hidden states are the targets
        sandwich = (2 + sn.n_random) * cal.student(avg_w, "step") + (cal.init or {"row": cal.teacher_row})["row"] * batch
        fin = spec.search.final
        two_step = fin.two_step and assistant_weights > 0  # the assistant is distilled, then the finals from it
        final_steps = steps_for(n_train + extra, batch, fin.epochs, None)
        # each final student trains fin.seeds members (weight-averaged), the one-step baseline once: units of about
        # one length, final_slots of them at once
        units = fin.top_k * (fin.seeds + (1 if two_step and fin.one_step_baseline else 0))
        finals = math.ceil(units / max(1, final_slots)) * final_steps * cal.student(avg_w, "step")
        top = (cal.init["step"] if cal.init else cal.teacher_step) * cal.grouped_step  # a slice of what students slice
        assistant = final_steps * top * min(1.0, assistant_weights / max(cal.large["weights"], 1) * 0.5) \
            if two_step else 0.0
        evolve = b.trials * (n_dev * cal.student(avg_w, "row") * cal.sorted_rows + measure)
        labelled_here = 0.0 if spec.transfer is not None or work.initialiser else label  # the finals label the copies
        out["search"] = steps * sandwich + evolve + finals + assistant + labelled_here + OVERHEAD_S["load"] * 3
        out["per-candidate instead"] = per_candidate
    # the scoring stage reads each per-trial front point's saved model and scores it on test (finals carry theirs)
    front = 0 if sn is not None else min(b.trials, 6)
    out["scoring"] = front * (n_dev * cal.student(avg_w, "row") * cal.sorted_rows + 0.1)
    out["references"] = runs * (cal.teacher_latency + 0.001) + n_train * 5 * 3e-5 + OVERHEAD_S["load"]
    out["total"] = sum(v for k, v in out.items() if k != "per-candidate instead")
    return out


def job_work(spec, ds, teacher_info: dict | None, root: str, precision: str = "fp32") -> Work:
    """The spec's `Work` on dataset `ds`: which of the teacher, its transfer set and the student initialiser
    (students slice `root`) the cache holds, by the keys the job's stages read them with."""
    from nas.data import job_train_rows, split_indices
    from nas.distill.augment import AugmentSettings, transfer_set_path
    from nas.distill.transfer import corpus_path, read_corpus
    from nas.teachers.load import cached_teacher, init_recipe, transfer_home

    tr, b = spec.transfer, spec.budgets
    corpus = read_corpus(tr.path, tr.column, tr.max_rows) if tr is not None and tr.path else []
    work = Work(len(ds.labels), teacher_info is not None, root != spec.teacher, corpus_rows=len(corpus))
    if teacher_info is None:
        return work
    train = job_train_rows(ds.labels, split_indices(ds.labels, spec.seed)["train"], b.data_fraction, spec.seed)
    home = transfer_home(teacher_info, root if work.initialiser else None)[0]
    path = None
    if tr is not None:
        augment = AugmentSettings(copies=tr.augment, seed=spec.seed)
        path = corpus_path(home, teacher_info["dir"], corpus, augment, train, b.max_seq_len,
                           work.initialiser and b.student_init_embedding > 0)
    elif spec.search.supernet is not None and spec.search.final.augment:
        path = transfer_set_path(home, train, AugmentSettings(copies=int(spec.search.final.augment), seed=spec.seed))
    work.transfer_cached = path is not None and path.is_file()
    if work.initialiser:
        work.init_cached = cached_teacher(root, ds, spec.seed, b.init_epochs(), b.max_seq_len,
                                          soft_from=teacher_info["logits_path"], metric=spec.objectives.metric,
                                          transfer=path and str(path), precision=precision,
                                          **init_recipe(b)) is not None
    return work


def plan(spec) -> dict:
    """{"stages": {stage: seconds}, "device", "calibration": {...}} of `spec` (already checked) on this machine."""
    import os

    from nas.data import load_dataset
    from nas.search.space import all_shapes
    from nas.spec.space import load_search_space
    from nas.teachers.load import cached_teacher, load_teacher, root_of, teacher_config, teacher_path
    from nas.teachers import load_pretrained

    from transformers import AutoTokenizer
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    root, tcfg = root_of(spec.teacher, spec.student_init, teacher_config(spec.teacher))
    space = load_search_space(spec.search_space, tcfg)
    ds = load_dataset(spec.dataset, spec.task, spec.seed)
    precision = resolve(spec.compute).precision  # the cache keys trained entries by it
    cached = cached_teacher(spec.teacher, ds, spec.seed, spec.budgets.teacher_epochs, spec.budgets.max_seq_len,
                            metric=spec.objectives.metric, precision=precision)
    work = job_work(spec, ds, cached, root, precision)
    with on_host():
        teacher = load_teacher(cached) if cached else load_pretrained(teacher_path(spec.teacher))
        source = load_pretrained(teacher_path(root, "student_init")) if work.initialiser else None
    shapes = all_shapes(space.student)
    threads = spec.latency.threads or os.cpu_count() or 1
    width = sorted_width(AutoTokenizer.from_pretrained(teacher_path(spec.teacher)), ds.texts, spec.budgets.max_seq_len,
                         pair=ds.task == "pair")
    pools = (space.distill.length_groups, spec.budgets.student_init_length_groups if work.initialiser else 0)
    lengths = text_lengths(AutoTokenizer.from_pretrained(teacher_path(root, "student_init")), ds.texts,
                           spec.budgets.max_seq_len, ds.task == "pair") if any(pools) else None
    gw = [grouped_width(lengths, spec.budgets.max_seq_len, space.distill.batch_size, p) if p else None for p in pools]
    cal = calibrate(teacher, shapes, space.distill.batch_size, spec.budgets.max_seq_len, threads, source=source,
                    sorted_seq=width, precision=spec.compute.precision if spec.compute.precision != "fp16" else "fp32",
                    grouped_seq=gw[0], grouped_init_seq=gw[1])
    aw = max((s.encoder_weights() for s in all_shapes(space.assistant)), default=0) if space.assistant else 0
    aw = aw if spec.search.supernet is not None and spec.search.autodisc.enabled else 0
    stages = estimate(spec, work, cal, shapes, aw)
    gpu = {}
    if torch.cuda.is_available():  # the same job where a GPU trains it, in its precision
        gcal = calibrate(teacher, shapes, space.distill.batch_size, spec.budgets.max_seq_len, threads, "cuda",
                         source=source, sorted_seq=width, precision=spec.compute.precision, grouped_seq=gw[0],
                         grouped_init_seq=gw[1])
        slots = torch.cuda.device_count()  # the finals train one per GPU, at once
        gpu = {"gpu": {"device": torch.cuda.get_device_name(0), "gpus": slots,
                       "stages": estimate(spec, work, gcal, shapes, aw, final_slots=slots)}}
        teacher.to("cpu")
    return {"stages": stages, "device": "cpu", "threads": threads, "rows": len(ds.labels), **gpu,
            "made_at": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()),
            "teacher_cached": cached is not None,
            "cached": {"teacher": work.teacher_cached, "transfer set": work.transfer_cached,
                       **({"student initialiser": work.init_cached} if work.initialiser else {})},
            "calibration": {"teacher_step_s": cal.teacher_step, "teacher_row_s": cal.teacher_row,
                            "teacher_latency_ms": 1000 * cal.teacher_latency, "sorted_batch_width": width,
                            "sorted_row_share": cal.sorted_rows,
                            **({"grouped_step_share": cal.grouped_step} if gw[0] else {}),
                            **({"grouped_init_step_share": cal.grouped_init_step} if gw[1] else {}),
                            "student_step_s": [cal.small["step"], cal.large["step"]],
                            **({"initialiser_step_s": cal.init["step"]} if cal.init else {})}}
