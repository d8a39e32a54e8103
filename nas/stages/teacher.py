"""The teacher stage: fine-tune (cached) and score the teacher, measure its latency (the reference of every front), and
fill the job context with the splits and the token cache every later stage reads."""

from __future__ import annotations

from nas.compute import gpu_name
from nas.context import JobContext
from nas.data import job_train_rows, split_indices, token_cache_path, tokenize
from nas.spec.errors import SpecError
from nas.spec.job import JobSpec
from nas.store.records import metric_value
from nas.store.store import Store


def check(spec: JobSpec, teacher_config: dict) -> None:
    """The latency protocol the teacher is measured with (every student after it) on each deployment target, and the
    sequence length it reads."""
    from nas.teachers import family

    lat = spec.latency
    positions = family(teacher_config.get("model_type", "bert")).usable_positions(teacher_config)
    for i, t in enumerate(lat.resolved_targets()):
        field = f"latency.targets[{i}]" if lat.targets else "latency"
        check_target(t, field, lat.extra_runtimes if i == 0 else [])
        if t["seq_len"] > positions:
            raise SpecError(f"{field}.seq_len", f"longer than the teacher's {positions} positions")
    if spec.budgets.max_seq_len > positions:
        raise SpecError("budgets.max_seq_len", f"longer than the teacher's {positions} positions")
    check_initialiser_targets(spec)


def check_initialiser_targets(spec: JobSpec) -> None:
    """budgets.student_init_embedding, _attention, _hidden, _lr, _soft_loss and _length_groups (set other than their
    defaults) need a student initialiser; the embedding needs its transfer rows from `transfer:` (whose set keeps the
    teacher's pooled states), not from search.final.augment alone; the attention maps and hidden states need tokenizers
    that cut text alike (nas/teachers/align.py)."""
    b = spec.budgets
    defaults = type(b).model_fields
    fields = ("student_init_embedding", "student_init_attention", "student_init_hidden", "student_init_lr",
              "student_init_soft_loss", "student_init_length_groups")
    asked = [f for f in fields if getattr(b, f) != defaults[f].default]
    if not asked:
        return
    from transformers import AutoTokenizer

    from nas.teachers.align import token_map
    from nas.teachers.load import root_of, teacher_config, teacher_path

    root = root_of(spec.teacher, spec.student_init, teacher_config(spec.teacher))[0]
    if root == spec.teacher:
        raise SpecError(f"budgets.{asked[0]}", "applies to a student initialiser (`student_init`, or a teacher the "
                        f"service cannot slice); the students of this job slice the teacher {spec.teacher!r} itself "
                        f"(leave it at its default, {defaults[asked[0]].default})")
    if b.student_init_embedding > 0 and spec.transfer is None and spec.search.supernet is not None \
            and spec.search.final.augment:
        raise SpecError("budgets.student_init_embedding", "the initialiser's augmented copies from "
                        "search.final.augment carry no pooled states; ask for them as `transfer: {augment: N}` instead")
    aligned = [(f, what) for f, what in (("student_init_attention", "attention maps"),
                                         ("student_init_hidden", "hidden states")) if getattr(b, f) > 0]
    if aligned:  # both run the teacher on the initialiser's tokens: one check of the two tokenizers
        _, why = token_map(AutoTokenizer.from_pretrained(teacher_path(spec.teacher)),
                           AutoTokenizer.from_pretrained(teacher_path(root, "student_init")))
        if why:
            field, what = aligned[0]
            raise SpecError(f"budgets.{field}", f"{what} need tokens that line up: {why} (use 0)")


def check_target(t: dict, field: str, extra_runtimes: list[str]) -> None:
    """One deployment target (all of its settings): `auto` resolved first, then fp16/bf16 need cuda and onnx and int8
    are CPU runtimes. (Whether cuda is visible is `check_visible`'s, on the machine that runs the job.)"""
    device = t["device"]
    if device == "auto":
        from nas.latency.measure import resolve_device

        device = resolve_device(device)
    if t["dtype"] in ("fp16", "bf16") and device == "cpu":
        raise SpecError(f"{field}.dtype", f"{t['dtype']} is measured on device cuda; found device cpu (use fp32)")
    if device == "cuda" and (t["runtime"] != "eager" or any(r != "eager" for r in extra_runtimes)):
        raise SpecError(f"{field}.runtime",
                        "onnx and int8 are measured on the CPU; on cuda use runtime eager with fp16/bf16")


def check_visible(spec: JobSpec) -> None:
    """On the machine that runs the job (not one that only submits it to a cluster or a queue): a cuda target needs a
    CUDA device visible here."""
    import torch

    lat = spec.latency
    for i, t in enumerate(lat.resolved_targets()):
        if t["device"] == "cuda" and not torch.cuda.is_available():
            raise SpecError(f"latency.targets[{i}].device" if lat.targets else "latency.device",
                            "cuda was asked for but no CUDA device is visible here (use cpu or auto)")


def run(ctx: JobContext, store: Store) -> None:
    import torch
    from transformers import AutoTokenizer
    from transformers.utils import logging as hf_logging

    from nas.teachers import family
    from nas.teachers.load import root_of, teacher_config, teacher_path, transfer_home

    hf_logging.set_verbosity_error()
    spec, ds = ctx.spec, ctx.dataset
    store.set_job_stage(ctx.job_id, "teacher")
    tok = AutoTokenizer.from_pretrained(teacher_path(spec.teacher))
    tensors = tokenize(tok, ds, spec.budgets.max_seq_len)
    splits = split_indices(ds.labels, spec.seed)
    torch.set_num_threads(ctx.threads)
    ctx.teacher = prepared(ctx, spec.teacher, tensors, splits)
    # scored, timed and checked before anything learns from it (a teacher_check stop distils nothing)
    trial = next(iter(store.trials(ctx.job_id, kind="teacher", state="COMPLETE")), None) or record_teacher(ctx, store)
    check_learned(ctx, store, trial, splits)
    train_idx = job_train_rows(ds.labels, splits["train"], spec.budgets.data_fraction, spec.seed)
    ctx.train_idx, ctx.dev_idx, ctx.test_idx = train_idx.tolist(), splits["dev"].tolist(), splits["test"].tolist()
    ctx.labels = ds.labels.tolist()
    root, _ = root_of(spec.teacher, spec.student_init, teacher_config(spec.teacher))
    home, student_tok = transfer_home(ctx.teacher, None if root == spec.teacher else root)
    ctx.transfer_dir, ctx.transfer_tokenizer = str(home), student_tok and str(student_tok)
    if root == spec.teacher:
        ctx.source = ctx.teacher
    else:  # students slice a student initialiser, distilled from the teacher's logits first (its own tokenizer)
        if spec.budgets.student_init_embedding > 0:  # and its pooled states, on the rows (in the teacher's tokens)
            teacher_pooled_here(ctx, tensors)
        tok = AutoTokenizer.from_pretrained(teacher_path(root, "student_init"))
        ctx.source = prepared(ctx, root, tokenize(tok, ds, spec.budgets.max_seq_len), splits,
                              soft_from=ctx.teacher["logits_path"], transfer=initialiser_transfer(ctx, store))
        ctx.say(f"student initialiser {root}: distilled from the teacher, dev accuracy "
                f"{ctx.source['dev']['accuracy']:.4f}; students are sliced from it")
        if not any(a["kind"] == "student_init" for a in trial["artefacts"]):  # once (a resumed job has it)
            store.add_artefact(ctx.job_id, trial["id"], "student_init", ctx.source["dir"])
    # what students slice (the teacher, or the student initialiser), by axis
    ctx.teacher_shape = family(ctx.teacher_config.get("model_type", "bert")).shape_limits(ctx.teacher_config)
    ctx.teacher_p50_ms = trial["latency"][-1]["p50_ms"]
    ctx.teacher_params = int(metric_value(trial, "params", "dev"))
    ctx.tokens_path = str(token_cache_path(tok, ds, spec.budgets.max_seq_len))


def teacher_pooled_here(ctx: JobContext, tensors: dict) -> None:
    """The teacher's pooled final hidden states on the dataset's rows, cached beside its logits (nas/teachers/load.py
    `teacher_pooled`): the student initialiser's embedding targets (budgets.student_init_embedding). In a Ray task
    where the teacher's training would run (ctx.one_off_in_ray_task), else here with a progress bar."""
    from nas.teachers.load import pooled_path, teacher_pooled

    if pooled_path(ctx.teacher["logits_path"]).is_file():
        return
    ctx.say("teacher: its pooled final hidden states on every row, the initialiser's embedding targets (cached)")
    if ctx.one_off_in_ray_task():
        import ray

        task = ray.remote(num_cpus=ctx.threads, **ctx.compute.ray_resources(whole_gpu=True))(teacher_pooled)
        ray.get(task.remote(ctx.teacher, tensors, compute=ctx.compute, progress=False))
    else:
        teacher_pooled(ctx.teacher, tensors, compute=ctx.compute, progress=ctx.progress)


def initialiser_transfer(ctx: JobContext, store: Store) -> str | None:
    """The transfer set the job's students learn from, labelled by the teacher now, in the student initialiser's
    tokens, so the initialiser learns the teacher's function from it too: the job's transfer corpus (spec
    `transfer:`), else the supernet schedule's search.final.augment copies; None where the job has neither. The later
    stages read it back from the cache."""
    from nas.stages import transfer
    from nas.workers.finals import labelled_transfer_set

    spec = ctx.spec
    if spec.transfer is not None:
        transfer.run(ctx, store)
        store.set_job_stage(ctx.job_id, "teacher")
        return ctx.transfer_path
    if spec.search.supernet is None or not spec.search.final.augment:
        return None
    ctx.say(f"student initialiser: labelling {spec.search.final.augment} augmented copies of {len(ctx.train_idx)} "
            "train texts with the teacher first (cached; the finals learn from them too)")
    return labelled_transfer_set(ctx)

class TeacherUnfit(RuntimeError):
    """The fine-tuned teacher is not worth distilling (and the spec's teacher_check says stop)."""


def baselines(ctx: JobContext, splits: dict) -> dict[str, float]:
    """Dev scores of what a teacher must beat: always the majority train class, and TF-IDF + logistic regression."""
    import numpy as np

    from nas.stages.references import _accuracy_f1, fit_tfidf

    ds, metric = ctx.dataset, ctx.spec.objectives.metric
    labels = np.asarray(ds.labels)
    majority = int(np.bincount(labels[splits["train"]]).argmax())
    maj = _accuracy_f1(np.full(len(splits["dev"]), majority), labels[splits["dev"]])[metric]
    texts = [t if isinstance(t, str) else f"{t[0]} [SEP] {t[1]}" for t in ds.texts]
    tfidf = fit_tfidf(texts, labels, splits, ctx.seed)[1]["dev"][metric]
    return {"majority": maj, "tfidf": tfidf, "majority_class": ds.label_names[majority]}


def check_learned(ctx: JobContext, store: Store, trial: dict, splits: dict) -> None:
    """A teacher within a point of the majority class, or below TF-IDF, on dev is never distilled in silence: the
    message goes to the log and onto the teacher's trial (the dashboard shows it); teacher_check says whether the job
    stops (TeacherUnfit, before anything is distilled) or goes on."""
    spec, metric = ctx.spec, ctx.spec.objectives.metric
    got = {m["name"][len("baseline_"):]: m["value"] for m in trial["metrics"]
           if m["split"] == "dev" and m["name"].startswith("baseline_")}
    if "majority" not in got:  # measured once per job; a resumed job reads them back
        got = baselines(ctx, splits)
        for name in ("majority", "tfidf"):
            store.add_metric(trial["id"], f"baseline_{name}", got[name], "dev", "final")
    teacher = metric_value(trial, metric, "dev", "final")
    why, policy = None, None
    if teacher <= got["majority"] + 0.01:
        why = (f"the teacher learned nothing: dev {metric} {teacher:.4f} against {got['majority']:.4f} for always "
               "predicting the majority class")
        policy = spec.teacher_check.majority
    elif teacher < got["tfidf"]:
        why = (f"the teacher is below TF-IDF + logistic regression: dev {metric} {teacher:.4f} against "
               f"{got['tfidf']:.4f}")
        policy = spec.teacher_check.tfidf
    if why is None:
        return
    hint = ("more teacher_epochs, more data, or another teacher" if "nothing" in why else
            "the task may be saturated for this teacher")
    store.set_trial_note(trial["id"], f"{why} ({hint})")
    if policy == "stop":
        raise TeacherUnfit(f"{why}; nothing was distilled ({hint}; `teacher_check: {{"
                           f"{'majority' if 'nothing' in why else 'tfidf'}: warn}}` goes on anyway)")
    ctx.say(f"warning: {why} ({hint})")


def prepared(ctx: JobContext, name: str, tensors: dict, splits: dict, soft_from: str | None = None,
             transfer: str | None = None) -> dict:
    """`prepare_teacher`'s info: from the cache, or trained now (in a Ray task where the GPUs are, on a GPU or a
    cluster whose driver stays on the head; else here, with a progress bar)."""
    from nas.teachers.load import cached_teacher, init_recipe, prepare_teacher

    spec = ctx.spec
    epochs = spec.budgets.init_epochs() if soft_from else spec.budgets.teacher_epochs
    args = (name, ctx.dataset, tensors, splits, spec.seed, epochs, spec.budgets.max_seq_len)
    metric = spec.objectives.metric  # the teacher's early stopping reads it on dev
    recipe = init_recipe(spec.budgets) if soft_from else {}  # a teacher's fine-tuning has none of these
    info = cached_teacher(*args[:2], *args[4:], soft_from=soft_from, metric=metric, transfer=transfer,
                          precision=ctx.compute.precision, **recipe)
    if info is not None:
        return info
    if ctx.one_off_in_ray_task():
        import ray

        ctx.say(f"{name}: training in a Ray task ({ctx.compute.device}, {ctx.compute.precision}; cached afterwards)")
        task = ray.remote(num_cpus=ctx.threads, **ctx.compute.ray_resources(whole_gpu=True))(prepare_teacher)
        return ray.get(task.remote(*args, log=lambda m: None, compute=ctx.compute, soft_from=soft_from, metric=metric,
                                   transfer=transfer, **recipe))
    return prepare_teacher(*args, log=ctx.say, compute=ctx.compute, soft_from=soft_from, metric=metric,
                           transfer=transfer, **recipe)


def measure_teacher(key: str, teacher, lat) -> list[dict]:
    """The teacher's latency rows on every target: here, or, where a target is cuda and this driver sees no GPU (a
    cluster's head), in a Ray task on a GPU node (the students are measured where they train, in workers)."""
    import torch

    from nas.latency.measure import measure_targets

    if any(t["device"] == "cuda" for t in lat.resolved_targets()) and not torch.cuda.is_available():
        import ray

        return ray.get(ray.remote(num_cpus=1, num_gpus=1)(measure_targets).remote(None, {key: teacher}, lat))[key]
    return measure_targets(None, {key: teacher}, lat)[key]


def record_teacher(ctx: JobContext, store: Store) -> dict:
    """The teacher as a trial: its dev/test scores, parameters and measured latency. Returns the trial."""
    from nas.students.bert_slice import count_parameters, size_mb
    from nas.students.shape import Shape
    from nas.teachers.load import load_teacher

    info, spec = ctx.teacher, ctx.spec
    teacher = load_teacher(info)
    shape = Shape.of_config(teacher.config)
    t = store.add_trial(ctx.job_id, "teacher", {"shape": shape.as_dict(), "source": info["source"], "dir": info["dir"],
                                                "fine_tuned": info["fine_tuned"]}, state="RUNNING")
    store.start_trial(t["id"])
    if info["fine_tuned"]:  # where the fine-tuning of this run (or of the run that filled the cache) trained
        store.set_trial_compute(t["id"], {"device": ctx.compute.device, "precision": ctx.compute.precision,
                                          "gpu": gpu_name(ctx.compute.device)})
    for split in ("dev", "test"):
        for name, value in info[split].items():
            store.add_metric(t["id"], name, value, split, "final")
    store.add_metric(t["id"], "params", count_parameters(teacher), "dev", "final")
    store.add_metric(t["id"], "size_mb", size_mb(teacher), "dev", "final")
    key = "teacher:" + shape.key
    rows = measure_teacher(key, teacher, spec.latency)
    for row in rows:
        store.add_latency(t["id"], key, row)
    lat = rows[-1]
    store.add_artefact(ctx.job_id, t["id"], "teacher", info["dir"])
    store.finish_trial(t["id"], "COMPLETE")
    ctx.say(f"teacher: dev accuracy {info['dev']['accuracy']:.4f}, test {info['test']['accuracy']:.4f}, "
            f"p50 {lat['p50_ms']:.2f} ms ({lat['device']}, batch {lat['batch']}, seq {lat['seq_len']})")
    return store.get_trial(t["id"])
