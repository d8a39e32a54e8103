"""Ray task bodies of the finals: the teacher-labelled transfer set, and the standalone distillation of one shape."""

from __future__ import annotations

import pathlib
import time
from dataclasses import dataclass

import numpy as np

from nas.context import JobContext
from nas.store.store import Store
from nas.students.shape import Shape
from nas.workers.setup import record_compute, save_model, with_oom_retry, worker_setup
from nas.workers.supernet import soft_targets


@dataclass
class FinalTask:
    """One standalone distillation: a shape sliced from `init_dir` (default: the supernet), trained on the soft targets
    in `soft_logits_paths` (the teacher's or the assistant's logits on every row; several files are averaged), plus the
    transfer set's augmented rows when `transfer_path` is set, with soft targets from `transfer_soft_paths` (default:
    the teacher's labels stored in the set). Its `final` dev and test metrics are written under `metric_prefix`."""

    trial_id: int
    number: int
    shape: dict
    soft_logits_paths: list[str]
    init_dir: str | None = None
    metric_prefix: str = ""
    save_model: bool = False
    save_logits: bool = False  # also the model's logits on every row (and on the transfer set): a distilled assistant
    transfer_path: str | None = None
    transfer_soft_paths: list[str] | None = None
    seed_offset: int = 0
    seeds: int = 1  # members trained from the same slice with consecutive seeds; the kept model averages their weights
    # with seeds > 1: train only this member (its weights kept for the final's own task, which then averages them), so
    # the members of one final train at once where the cluster has room (nas/stages/supernet/finals.py)
    member: int | None = None
    threads: int | None = None  # CPU threads of the task (default: the node's): its share of a GPU node


def labelled_transfer_set(ctx: JobContext) -> str:
    """The job's teacher-labelled augmented copies of the train texts (cached beside the teacher; the path of the
    file), labelled where the teacher's fine-tuning runs (ctx.one_off_in_ray_task: a 110M teacher labels 20k rows for
    half an hour on 2 cores, which wants a progress bar)."""
    if ctx.one_off_in_ray_task():
        import ray

        task = ray.remote(num_cpus=ctx.threads, **ctx.compute.ray_resources(whole_gpu=True))(transfer_set_task)
        return ray.get(task.remote(ctx, list(ctx.dataset.texts)))
    return transfer_set_task(ctx, list(ctx.dataset.texts), here=True)


def transfer_set_task(ctx: JobContext, texts: list[str], here: bool = False) -> str:
    """Teacher-labelled augmented copies of the train texts (cached beside the teacher); returns the file's path.
    `here`: in the job's own process (its stage set it up), with a progress bar, rather than as a Ray task."""
    from transformers import AutoTokenizer

    from nas.data import Dataset
    from nas.distill.augment import AugmentSettings, teacher_transfer_set, transfer_set_path
    from nas.teachers.load import load_teacher

    if not here:
        worker_setup(ctx, tensors=False)  # the token tensors are not needed: the texts are tokenised here
    teacher = load_teacher(ctx.teacher)
    tok = AutoTokenizer.from_pretrained(ctx.teacher["dir"])
    # students sliced from a student initialiser read its tokenizer (the set is cached in ctx.transfer_dir)
    student_tok = AutoTokenizer.from_pretrained(ctx.transfer_tokenizer) if ctx.transfer_tokenizer else None
    train = np.asarray(ctx.train_idx)
    ds = Dataset("train", "classification", texts, np.asarray(ctx.labels), [])
    settings = AugmentSettings(copies=int(ctx.spec.search.final.augment), seed=ctx.seed)
    cache = pathlib.Path(ctx.transfer_dir)
    cache.mkdir(parents=True, exist_ok=True)
    teacher_transfer_set(teacher, tok, ds, train, ctx.spec.budgets.max_seq_len, settings, cache_dir=cache,
                         log=ctx.say if here else lambda m: None, compute=ctx.compute, student_tokenizer=student_tok,
                         progress=here and ctx.progress)
    return str(transfer_set_path(cache, train, settings))


def final_settings(ctx: JobContext, shape: Shape):
    """The final's DistillSettings: the space's defaults, the finals' lr (by the shape's share of the teacher's encoder
    weights: the lr by size stays relative to the teacher, a second-round supernet is only the assistant's size) and
    the intermediate losses' weights."""
    from nas.distill.loop import DistillSettings, lr_by_size

    final = ctx.spec.search.final
    settings = DistillSettings(**{**ctx.space.distill.model_dump(), **({"lr": final.lr} if final.lr else {}),
                                  "hidden_weight": final.hidden_weight, "attention_weight": final.attention_weight,
                                  "layer_map": final.layer_map})
    settings.lr = lr_by_size(settings.lr, final.lr_teacher_size, shape.share_of(Shape.from_dict(ctx.teacher_shape)))
    return settings


def final_distill_task(ctx: JobContext, task: FinalTask, supernet_dir: str) -> dict:
    """Distil `task`'s shape standalone (with `task.seeds` > 1: that many members with consecutive seeds, keeping the
    average of their weights); writes its metrics and artefacts, returns {"trial_id", "steps", "train_s", "train_rows",
    "dev", "test"} (+ "model_path", "logits_path", "transfer_logits_path" when saved, "members" with seeds)."""
    import torch
    from nas.teachers import load_pretrained

    from nas.distill.augment import with_transfer_set
    from nas.distill.loop import distill, steps_for
    from nas.distill.resume import TrainCheckpoint
    from nas.students.bert_slice import extract_subnet

    tensors, labels = worker_setup(ctx, task.threads)
    store = Store(ctx.storage, migrate=False)
    tid, prefix = task.trial_id, task.metric_prefix
    started = time.time()
    try:
        store.heartbeat(tid)
        record_compute(store, tid, ctx)
        # the source of the student's weights: the supernet, the distilled assistant, or the fine-tuned teacher
        init_path = task.init_dir or supernet_dir
        source = load_pretrained(init_path)
        shape = Shape.from_dict(task.shape)
        settings = final_settings(ctx, shape)
        # the intermediate losses' targets: the fine-tuned teacher's forward (rewiring leaves its outputs unchanged,
        # and only heads and FFN neurons are reordered, so its hidden dims are the ones every slice keeps); when the
        # student was sliced from the teacher itself, the model already loaded is that teacher
        inner_teacher = None
        if settings.hidden_weight > 0 or settings.attention_weight > 0:
            inner_teacher = source if init_path == ctx.source["dir"] else load_pretrained(ctx.source["dir"])
        transfer = torch.load(task.transfer_path) if task.transfer_path else None
        t_soft = soft_targets(task.transfer_soft_paths) if transfer is not None and task.transfer_soft_paths else None
        x, y, s, hard = with_transfer_set(tensors, labels, soft_targets(task.soft_logits_paths), ctx.train_idx,
                                          transfer, t_soft)
        steps = steps_for(len(y), settings.batch_size, ctx.spec.search.final.epochs, None)
        fdir = final_dir(ctx, task)

        def member_key(i: int) -> str:
            """What member i is (source, targets, settings, seed): another final's checkpoint or weights are not its."""
            return repr((init_path, task.shape, settings, task.soft_logits_paths, task.transfer_path,
                         task.transfer_soft_paths, ctx.seed + task.seed_offset + i, len(y)))

        def train_member(i: int) -> tuple:
            """Member i (seed ctx.seed + seed_offset + i): a resumed job's final continues where it was killed, if it
            is the same final."""
            seed = ctx.seed + task.seed_offset + i
            name = "train.checkpoint.pt" if i == 0 else f"train-seed{i}.checkpoint.pt"
            ckpt = TrainCheckpoint(fdir / name, key=member_key(i))

            def train_once(accumulate: int) -> tuple:
                model = extract_subnet(source, shape)
                return model, distill(model, x, y, s, settings, steps, seed=seed,
                                      on_step=lambda st, l: store.heartbeat(tid) if st % 50 == 0 else None,
                                      hard_mask=hard, teacher=inner_teacher, compute=ctx.compute, accumulate=accumulate,
                                      checkpoint=ckpt)

            model, info = with_oom_retry(train_once, lambda reason: store.add_metric(tid, prefix + "oom_retries", 1,
                                                                                     "train", "final"))
            return model, info, ckpt

        out: dict = {"trial_id": tid, "steps": steps, "train_rows": len(y)}
        model, out["train_s"], ckpts, members = train_final(ctx, store, task, fdir, (
            train_member, member_key, lambda: extract_subnet(source, shape)), tensors, labels, steps)
        out.update({"members": members} if task.seeds > 1 else {})
        if task.member is not None:  # one member alone: its weights and scores are kept; the final's task averages
            if ckpts:  # (not when its weights were on disk already: a resumed job)
                record_wall(store, task, f"{prefix}seed{task.member}_", ckpts, started, steps)
            return out
        inner_teacher = source = None  # free them before scoring
        record_training(store, task, settings, steps)
        store.add_artefact(ctx.job_id, tid, prefix + "init", init_path)  # the model the student was sliced from
        out.update(score_final(ctx, store, task, model, tensors, labels, steps))
        if task.save_model:
            out.update(save_final(ctx, store, task, model, tensors, transfer))
        record_wall(store, task, prefix, ckpts, started, steps)
        for c in ckpts:
            c.clear()
        return out
    finally:
        store.dispose()


def train_final(ctx: JobContext, store: Store, task: FinalTask, fdir: pathlib.Path, member: tuple, tensors, labels,
                steps: int) -> tuple:
    """(the final's model, or None for a member's task; train_s of what trained now; its checkpoints; the scores of
    the members trained now): one training, or with `task.seeds` > 1 the average of the members (`seed_average`), or
    with `task.member` that member alone. `member` = (train_member, member_key, new_model)."""
    if task.member is not None or task.seeds > 1:
        return seed_average(ctx, store, task, fdir, member, tensors, labels, steps, only=task.member)
    model, info, ckpt = member[0](0)
    return model, info["train_s"], [ckpt], []


def record_training(store: Store, task: FinalTask, settings, steps: int) -> None:
    """How the final trained, as `train` metrics under the task's prefix: its lr (what lr_by_size chose), its seeds, the
    intermediate losses' weights when on."""
    tid, prefix = task.trial_id, task.metric_prefix
    store.add_metric(tid, prefix + "lr", settings.lr, "train", "final", step=steps)
    if task.seeds > 1:  # the kept model averages this many members' weights (their scores: seed{i}_accuracy, ...)
        store.add_metric(tid, prefix + "seeds", task.seeds, "train", "final", step=steps)
    for name in ("hidden_weight", "attention_weight"):
        if getattr(settings, name) > 0:
            store.add_metric(tid, prefix + name, getattr(settings, name), "train", "final", step=steps)


def record_wall(store: Store, task: FinalTask, prefix: str, ckpts: list, started: float, steps: int) -> None:
    """When this final's task (or one member's) ran, as `train` metrics under `prefix`: `task_started_at` and
    `task_finished_at` (Unix seconds; finals that ran at once overlap); and, under the final's own prefix, the step a
    killed run's final (or member) went on from."""
    tid, resumed = task.trial_id, [c.resumed_from for c in ckpts if c.resumed_from]
    if resumed:
        store.add_metric(tid, task.metric_prefix + "resumed_from_step", resumed[0], "train", "final", step=steps)
    store.add_metric(tid, prefix + "task_started_at", started, "train", "final", step=steps)
    store.add_metric(tid, prefix + "task_finished_at", time.time(), "train", "final", step=steps)


def seed_average(ctx: JobContext, store: Store, task: FinalTask, fdir: pathlib.Path, member: tuple, tensors, labels,
                 steps: int, only: int | None = None) -> tuple:
    """`task.seeds` members of one final, each trained by `train_member(i)` and scored (dev and test, under
    `seed{i}_`); their weights are kept in `fdir` with `member_key(i)` (a resumed job skips the members already
    trained for this same final) and averaged into the returned model (`new_model()`: an untrained slice of the shape,
    when no member was trained in this call). `member` = (train_member, member_key, new_model). Returns (model,
    train_s of the members trained now, their checkpoints, the scores of the members trained now). With `only`: that
    member alone, and no average (the model is None)."""
    import torch

    from nas.distill.soup import average_state_dicts

    train_member, member_key, new_model = member
    fdir.mkdir(parents=True, exist_ok=True)
    prefix, tid = task.metric_prefix, task.trial_id
    paths, ckpts, members, train_s, model = [], [], [], 0.0, None
    for i in range(task.seeds) if only is None else [only]:
        path = fdir / f"seed{i}.pt"
        if not path.is_file() or torch.load(path, map_location="cpu").get("key") != member_key(i):
            model, info, ckpt = train_member(i)
            train_s += info["train_s"]
            ckpts.append(ckpt)
            member_scores = score_final(ctx, store, task, model, tensors, labels, steps, prefix=f"{prefix}seed{i}_")
            torch.save({"key": member_key(i), "state": model.state_dict()}, path)
            ckpt.clear()  # the member's weights are on disk: a resume skips it
            store.add_artefact(ctx.job_id, tid, f"{prefix}seed{i}_weights", str(path))
            members.append({"seed": ctx.seed + task.seed_offset + i, **member_scores})
        paths.append(path)
    if only is not None:
        return None, train_s, ckpts, members
    if model is None:  # every member was trained before this resume (killed while averaging): a fresh slice
        model = new_model()
    model.load_state_dict(average_state_dicts(torch.load(p, map_location="cpu")["state"] for p in paths))
    return model, train_s, ckpts, members


def final_dir(ctx: JobContext, task: FinalTask) -> pathlib.Path:
    """Where a final's model, logits and training checkpoint go: one directory per trial and final (its prefix)."""
    prefix = task.metric_prefix
    return pathlib.Path(ctx.artefact_dir) / f"trial-{task.number:04d}{'-' + prefix.rstrip('_') if prefix else ''}"


def score_final(ctx: JobContext, store: Store, task: FinalTask, model, tensors, labels, steps: int,
                prefix: str | None = None) -> dict:
    """`final` dev and test metrics of the distilled student, written under `prefix` (default: the task's)."""
    import torch

    from nas.distill.evaluate import predict_logits, scores

    prefix = task.metric_prefix if prefix is None else prefix
    out = {}
    for split in ("dev", "test"):
        idx = torch.as_tensor(getattr(ctx, f"{split}_idx"), device="cpu")
        sc = scores(predict_logits(model, {k: v[idx] for k, v in tensors.items()}, compute=ctx.compute.exact()), labels[idx])
        for name, value in sc.items():
            store.add_metric(task.trial_id, prefix + name, value, split, "final", step=steps)
        out[split] = sc
    return out


def save_final(ctx: JobContext, store: Store, task: FinalTask, model, tensors, transfer) -> dict:
    """The student as a model directory (and, for an assistant, its logits on every row and on the transfer set)."""
    import torch

    from nas.distill.evaluate import predict_logits

    prefix, tid = task.metric_prefix, task.trial_id
    path = final_dir(ctx, task)
    out = {"model_path": save_model(model, ctx, path / "model")}
    store.add_artefact(ctx.job_id, tid, "model", out["model_path"])
    if task.save_logits:
        torch.save(predict_logits(model, tensors, compute=ctx.compute), path / "logits.pt")
        store.add_artefact(ctx.job_id, tid, "logits", str(path / "logits.pt"))
        out["logits_path"] = str(path / "logits.pt")
        if transfer is not None:
            torch.save(predict_logits(model, transfer["tensors"], compute=ctx.compute), path / "transfer_logits.pt")
            store.add_artefact(ctx.job_id, tid, "transfer_logits", str(path / "transfer_logits.pt"))
            out["transfer_logits_path"] = str(path / "transfer_logits.pt")
    return out
