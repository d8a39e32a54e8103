"""The transfer corpus (spec `transfer:`): what students learn the teacher's function from beyond the labelled train
rows. Augmented copies of the train texts (nas/distill/augment.py: masking, teacher-embedding neighbours, n-gram
windows) and the user's unlabelled in-domain text, labelled once by the teacher in batches on the compute device.

The labelled set is cached beside the teacher, keyed by the teacher, the corpus file's bytes, the augmentation, the
train rows and the sequence length; labelling writes its progress every chunk, so a stopped job resumes where it was.
Its rows carry soft targets only (no gold label)."""

from __future__ import annotations

import hashlib
import json
import pathlib
from dataclasses import asdict

import numpy as np
import torch

from nas.compute import CPU, Compute
from nas.paths import save_atomic
from nas.spec.errors import SpecError

CHUNK = 2048  # rows labelled between progress saves


def read_corpus(path_text: str, column: str = "text", max_rows: int | None = None) -> list[str]:
    """The unlabelled texts of a corpus file: one per line (any suffix but .csv/.tsv/.jsonl), or the `column` of a
    table. Blank rows are dropped, repeats kept once (first `max_rows`). SpecError naming the field for a file that is
    missing, empty, binary, not UTF-8 (with the line), or a table without the column."""
    from nas.paths import confined_path

    path = confined_path(path_text, "transfer.path", "NAS_DATA_ROOT")
    if not path.is_file():
        raise SpecError("transfer.path", f"file not found: {path}")
    raw = path.read_bytes()
    if b"\x00" in raw[:65536]:
        raise SpecError("transfer.path", f"{path.name} looks binary (NUL bytes); expected text, one per line, or a "
                        "CSV / TSV / JSONL file")
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = raw[:exc.start].count(b"\n") + 1
        raise SpecError("transfer.path", f"{path.name} is not UTF-8 (line {line}: byte {raw[exc.start]:#04x}); save it "
                        "as UTF-8") from None
    if path.suffix.lower() in (".csv", ".tsv", ".jsonl", ".ndjson"):
        texts = _table_column(path, text, column)
    else:
        texts = text.splitlines()
    seen: dict[str, None] = {}
    for t in texts:
        t = " ".join(str(t).split())
        if t and t not in seen:
            seen[t] = None
    if not seen:
        raise SpecError("transfer.path", f"{path.name} has no text (every row is blank)")
    return list(seen)[:max_rows] if max_rows else list(seen)


def _table_column(path: pathlib.Path, text: str, column: str) -> list[str]:
    import io

    import pandas as pd

    try:
        if path.suffix.lower() in (".jsonl", ".ndjson"):
            df = pd.read_json(io.StringIO(text), lines=True, dtype=False)
        else:
            df = pd.read_csv(io.StringIO(text), sep="\t" if path.suffix.lower() == ".tsv" else ",", dtype=str,
                             keep_default_na=False)
    except pd.errors.EmptyDataError:
        raise SpecError("transfer.path", f"{path.name} is empty") from None
    except (ValueError, pd.errors.ParserError) as exc:
        raise SpecError("transfer.path", f"cannot parse {path.name}: {str(exc).splitlines()[0]}") from None
    if column not in df.columns:
        raise SpecError("transfer.column", f"{path.name} has no column {column!r}; found {list(df.columns)}")
    return [str(x) for x in df[column].tolist() if x is not None]


def corpus_key(teacher_dir: str, corpus: list[str], augment, train_idx, max_len: int, pooled: bool = False) -> str:
    h = hashlib.sha256(json.dumps({"teacher": str(teacher_dir), "augment": asdict(augment), "max_len": max_len,
                                   **({"pooled": True} if pooled else {})}, sort_keys=True).encode())
    h.update(np.asarray(train_idx, dtype=np.int64).tobytes())
    for t in corpus:
        h.update(t.encode() + b"\n")
    return h.hexdigest()[:16]


def corpus_path(cache_dir, teacher_dir: str, corpus: list[str], augment, train_idx, max_len: int,
                pooled: bool = False) -> pathlib.Path:
    """The cache file of a labelled transfer corpus (nas/stages/transfer.py) in `cache_dir`, keyed by its content (and
    whether it carries the teacher's pooled states)."""
    key = corpus_key(teacher_dir, corpus, augment, train_idx, max_len, pooled)
    return pathlib.Path(cache_dir) / f"transfer-{key}.pt"


def transfer_texts(texts: list[str], train_idx, corpus: list[str], tokenizer, embeddings: torch.Tensor,
                   augment) -> tuple[list[str], np.ndarray]:
    """Augmented copies of the train texts, then the corpus: (texts, source row in the dataset; -1 for the corpus)."""
    from nas.distill.augment import augment_texts

    train_idx = np.asarray(train_idx)
    new, src = [], []
    if augment.copies:
        new, local = augment_texts([texts[i] for i in train_idx], tokenizer, embeddings, augment)
        src = list(train_idx[local])
    return new + list(corpus), np.asarray(src + [-1] * len(corpus), dtype=np.int64)


def label_transfer(teacher, tokenizer, rows: list[str], source: np.ndarray, max_len: int, path: pathlib.Path,
                   compute: Compute = CPU, student_tokenizer=None, progress: bool = True, chunk: int = CHUNK,
                   stop_after: int | None = None, pooled: bool = False) -> dict | None:
    """The teacher's logits on `rows`, labelled `chunk` rows at a time with a progress bar; the finished set is saved at
    `path` ({"tensors": the students' tokens, "logits", "source"}) and `path`.partial keeps the chunks done so far (a
    rerun continues from it). `stop_after`: return None after that many chunks (how a test stops it half-way).
    `pooled`: the set also keeps the teacher's final hidden state averaged over each row's tokens ("pooled", (n, hidden)
    fp16; nas/distill/loop.py `mean_pool`), from the same forward: the student initialiser's embedding target."""
    from tqdm import tqdm

    from nas.data import encode
    from nas.distill.evaluate import predict_logits

    if path.is_file():
        return torch.load(path, map_location="cpu")
    partial = path.with_name(path.name + ".partial")
    done = torch.load(partial, map_location="cpu") if partial.is_file() else []
    first = sum(len(d[0] if isinstance(d, tuple) else d) for d in done)  # rows labelled before a stop
    with tqdm(total=len(rows), initial=first, desc="transfer corpus: teacher labels", unit="row",
              disable=not progress) as bar:
        for n, start in enumerate(range(first, len(rows), chunk)):
            if stop_after is not None and n >= stop_after:
                return None
            part = rows[start:start + chunk]
            done.append(predict_logits(teacher, encode(tokenizer, part, max_len), compute=compute, pooled=pooled))
            save_atomic(done, partial)
            bar.update(len(part))
    logits = [d[0] for d in done] if pooled else done
    out = {"tensors": encode(student_tokenizer or tokenizer, rows, max_len),
           "logits": torch.cat(logits) if done else torch.zeros(0, 0), "source": torch.as_tensor(source, device="cpu"),
           **({"pooled": torch.cat([d[1] for d in done]) if done else torch.zeros(0, 0)} if pooled else {})}
    save_atomic(out, path)
    partial.unlink(missing_ok=True)
    return out


def cached_corpus_set(teacher_info: dict, texts: list[str], train_idx, corpus: list[str], augment, max_len: int,
                      cache_dir, compute: Compute = CPU, student_tokenizer=None, progress: bool = True,
                      pooled: bool = False) -> pathlib.Path:
    """The cached, teacher-labelled transfer set of a job (the augmented copies of its train texts and `corpus`), built
    and labelled on `compute` if the cache in `cache_dir` lacks it; returns its path. `teacher_info` is the resolved
    teacher (nas/teachers/load.py); the students read `student_tokenizer`'s tokens (the teacher's when None);
    `pooled`: with the teacher's pooled states (`label_transfer`)."""
    from transformers import AutoTokenizer

    from nas.teachers.load import load_teacher

    cache = pathlib.Path(cache_dir)
    path = corpus_path(cache, teacher_info["dir"], corpus, augment, train_idx, max_len, pooled)
    if not path.is_file():
        cache.mkdir(parents=True, exist_ok=True)
        teacher = load_teacher(teacher_info)
        tok = AutoTokenizer.from_pretrained(teacher_info["dir"])
        rows, source = transfer_texts(texts, train_idx, corpus, tok, teacher.get_input_embeddings().weight.detach(),
                                      augment)
        label_transfer(teacher, tok, rows, source, max_len, path, compute=compute,
                       student_tokenizer=student_tokenizer, progress=progress, pooled=pooled)
    return path
