"""Shared by the issue-3 benchmarks: one classification task on the MiniLM teacher, set up the same way every time
(search space `bert_small`, the dataset or a stratified slice, tokens, seed-0 splits, the fine-tuned teacher from the
cache or trained now)."""

from __future__ import annotations

from types import SimpleNamespace


def classification_task(dataset: str, rows: int | None, seq: int, teacher_epochs: float) -> SimpleNamespace:
    import numpy as np
    import torch
    from transformers import AutoTokenizer

    from nas.data import load_dataset, split_indices, tokenize
    from nas.spec.job import DatasetRef
    from nas.spec.space import load_search_space
    from nas.teachers.load import load_teacher, prepare_teacher, teacher_config, teacher_path

    space = load_search_space("bert_small", teacher_config("minilm-l6"))
    ds = load_dataset(DatasetRef(name=dataset, max_rows=rows), "classification", 0)
    tok = AutoTokenizer.from_pretrained(teacher_path("minilm-l6"))
    tensors = tokenize(tok, ds, seq)
    splits = split_indices(ds.labels, 0)
    info = prepare_teacher("minilm-l6", ds, tensors, splits, 0, teacher_epochs, seq, log=print)
    return SimpleNamespace(space=space, ds=ds, tok=tok, tensors=tensors, splits=splits,
                           labels=torch.as_tensor(ds.labels), info=info, teacher=load_teacher(info),
                           t_logits=torch.load(info["logits_path"]), dev=torch.as_tensor(splits["dev"]),
                           test=torch.as_tensor(splits["test"]), train=np.asarray(splits["train"]))


def run_or_resume(spec: dict, store) -> int:
    """The job named spec["name"] in `store`: run it, resume it where it stopped, or read it back when COMPLETE."""
    from nas.pipeline import resume_job, run_job
    from nas.spec.job import parse_spec

    job = next((j for j in store.list_jobs() if j["name"] == spec["name"]), None)
    if job is None:
        return run_job(parse_spec({**spec, "storage": store.url}), store)
    if job["status"] != "COMPLETE":
        print(f"resuming job {job['id']} ({job['status']}, stage {job.get('stage')})", flush=True)
        resume_job(store, job["id"])
    return job["id"]


def bench_workdir(workdir: str, quick: bool, root):
    """A resumable benchmark's NAS_HOME (suffixed -quick for smoke runs); NAS_CACHE defaults to the repository's shared
    .nas/cache (fine-tuned teachers and the assembled mpnet-base are reused across runs)."""
    import os
    import pathlib

    out = pathlib.Path(workdir + ("-quick" if quick else ""))
    out.mkdir(parents=True, exist_ok=True)
    os.environ["NAS_HOME"] = str(out)
    os.environ.setdefault("NAS_CACHE", str(pathlib.Path(root) / ".nas" / "cache"))
    return out
