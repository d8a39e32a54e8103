"""The transfer stage (spec `transfer:`, between the teacher and the search): the teacher labels the transfer corpus
once (nas/distill/transfer.py), in a Ray task on the compute device; every per-trial student and final of the job
then trains on it beside the train rows. Resumes from the cache (a finished set) or its partial file (the chunks
labelled so far)."""

from __future__ import annotations

import pathlib

from nas.context import JobContext
from nas.spec.errors import SpecError
from nas.spec.job import JobSpec
from nas.store.store import Store


def check(spec: JobSpec, teacher_config: dict) -> None:
    """The corpus file is readable text (or a table with the column); augmentation is for single-text classification."""
    from nas.distill.transfer import read_corpus

    tr = spec.transfer
    if tr is None:
        return
    if spec.task != "classification":
        raise SpecError("transfer", "the transfer corpus is implemented for single-text classification")
    if tr.path is None and not tr.augment:
        raise SpecError("transfer", "give a corpus `path`, or `augment` > 0 copies of the train texts, or leave it out")
    if tr.path is not None:
        read_corpus(tr.path, tr.column, tr.max_rows)


def pooled_targets(spec: JobSpec, student_tokenizer) -> bool:
    """Whether the transfer set keeps the teacher's pooled states: students slice a student initialiser (they read its
    tokenizer) that learns them (budgets.student_init_embedding > 0)."""
    return bool(student_tokenizer) and spec.budgets.student_init_embedding > 0


def label_task(ctx: JobContext, texts: list[str]) -> tuple[str, int]:
    """Build and label the corpus where the job computes; returns (the cached set's path, its rows)."""
    from transformers import AutoTokenizer

    from nas.distill.augment import AugmentSettings
    from nas.distill.transfer import cached_corpus_set, read_corpus
    from nas.workers.setup import worker_setup

    worker_setup(ctx, tensors=False)
    tr = ctx.spec.transfer
    corpus = read_corpus(tr.path, tr.column, tr.max_rows) if tr.path else []
    # students sliced from a student initialiser read its tokenizer (the set is cached in ctx.transfer_dir)
    student_tok = AutoTokenizer.from_pretrained(ctx.transfer_tokenizer) if ctx.transfer_tokenizer else None
    augment = AugmentSettings(copies=tr.augment, seed=ctx.seed)
    path = cached_corpus_set(ctx.teacher, texts, ctx.train_idx, corpus, augment, ctx.spec.budgets.max_seq_len,
                             ctx.transfer_dir, compute=ctx.compute, student_tokenizer=student_tok,
                             progress=ctx.progress, pooled=pooled_targets(ctx.spec, ctx.transfer_tokenizer))
    import torch

    return str(path), int(len(torch.load(path, map_location="cpu")["source"]))


def run(ctx: JobContext, store: Store) -> None:
    import ray

    tr = ctx.spec.transfer
    if tr is None or ctx.transfer_path:  # none, or labelled already (for the student initialiser, nas/stages/teacher.py)
        return
    store.set_job_stage(ctx.job_id, "transfer")
    ctx.say(f"transfer: {tr.augment} augmented copies of {len(ctx.train_idx)} train texts"
            + (f" and the unlabelled text of {pathlib.Path(tr.path).name}" if tr.path else "")
            + ", labelled by the teacher (cached)")
    task = ray.remote(num_cpus=ctx.threads, **ctx.compute.ray_resources(whole_gpu=True))(label_task)
    ctx.transfer_path, ctx.transfer_rows = ray.get(task.remote(ctx, list(ctx.dataset.texts)))
    ctx.say(f"transfer: {ctx.transfer_rows} teacher-labelled rows beside {len(ctx.train_idx)} train rows")
