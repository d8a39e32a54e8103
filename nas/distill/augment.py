"""Teacher-labelled augmentation: a larger transfer set for distillation.

A small student learns the teacher's function from far more inputs than the labelled train split holds if the teacher
labels perturbed copies of the train texts (Tang et al. 2019, "Distilling task-specific knowledge from BERT into simple
neural networks"; TinyBERT's data augmentation). Each copy of a text applies, word by word, masking (the tokenizer's mask
token) and replacement by a neighbour in the teacher's own input-embedding space (a cheap stand-in for synonyms: no
external word vectors are reachable here), and with some probability keeps only a random n-gram window of the result.
Augmented rows carry the teacher's logits as soft targets and no gold label.

Only train rows are ever augmented; the result is cached beside the fine-tuned teacher (its directory is already keyed
by teacher, data, seed and sequence length)."""

from __future__ import annotations

import hashlib
import json
import pathlib
import re
from dataclasses import asdict, dataclass

import numpy as np
import torch

from nas.compute import CPU, Compute

from nas.paths import save_atomic

WORD = re.compile(r"\w+|[^\w\s]")


@dataclass(frozen=True)
class AugmentSettings:
    copies: int = 4  # perturbed copies per train text
    p_mask: float = 0.1  # per word: replace by the mask token
    p_neighbour: float = 0.15  # per word: replace by a nearest neighbour in the teacher's embedding space
    p_window: float = 0.25  # per copy: keep only a random window of words
    neighbours: int = 8  # candidates per word for replacement
    seed: int = 0


def embedding_neighbours(tokenizer, embeddings: torch.Tensor, k: int = 8, chunk: int = 2048) -> dict[str, list[str]]:
    """Whole-word vocabulary entries -> their k nearest whole-word neighbours by cosine in the input embedding matrix
    (vocab, dim). Sub-word pieces, special tokens and non-alphabetic entries are left out. WordPiece vocabularies
    (BERT, ELECTRA, MPNet, DistilBERT) mark continuations with ##; byte-level BPE (RoBERTa: Ġ) and SentencePiece
    (XLM-R: ▁) mark the start of a word instead, so there only the marked entries are words (named without the mark)."""
    vocab = tokenizer.get_vocab()
    special = set(tokenizer.all_special_tokens)
    start = next((m for m in ("\u0120", "\u2581") if sum(w.startswith(m) for w in vocab) > len(vocab) // 10), None)

    def word(w: str) -> str | None:
        if w in special:
            return None
        if start is not None:
            return w[1:] if w.startswith(start) else None
        return None if w.startswith("##") else w

    words = sorted((i, word(w)) for w, i in vocab.items() if i < len(embeddings))
    words = [(i, w) for i, w in words if w is not None and w.isalpha() and len(w) > 1]
    ids = torch.tensor([i for i, _ in words], device="cpu")
    names = [w for _, w in words]
    e = torch.nn.functional.normalize(embeddings[ids].float(), dim=1)
    out: dict[str, list[str]] = {}
    for start in range(0, len(ids), chunk):
        sim = e[start:start + chunk] @ e.T
        rows = torch.arange(sim.shape[0], device="cpu")
        sim[rows, rows + start] = -2.0  # not itself
        top = sim.topk(k, dim=1).indices
        for r, row in enumerate(top.tolist()):
            out[names[start + r]] = [names[j] for j in row]
    return out


def augment_text(text: str, rng: np.random.Generator, neighbours: dict[str, list[str]], mask_token: str,
                 s: AugmentSettings) -> str:
    words = WORD.findall(text)
    if not words:
        return text
    out = []
    for w in words:
        r = rng.random()
        if r < s.p_mask:
            out.append(mask_token)
        elif r < s.p_mask + s.p_neighbour and w.lower() in neighbours:
            out.append(neighbours[w.lower()][int(rng.integers(len(neighbours[w.lower()])))])
        else:
            out.append(w)
    if len(out) > 3 and rng.random() < s.p_window:
        n = int(rng.integers(max(1, len(out) // 3), len(out)))
        start = int(rng.integers(0, len(out) - n + 1))
        out = out[start:start + n]
    return " ".join(out)


def augment_texts(texts: list[str], tokenizer, embeddings: torch.Tensor, s: AugmentSettings) -> tuple[list[str], list[int]]:
    """`s.copies` perturbed copies of every text; returns (new texts, index of the source text for each)."""
    neighbours = embedding_neighbours(tokenizer, embeddings, s.neighbours)
    rng = np.random.default_rng(s.seed)
    mask = tokenizer.mask_token or "[MASK]"
    new, src = [], []
    for c in range(s.copies):
        for i, t in enumerate(texts):
            new.append(augment_text(t, rng, neighbours, mask, s))
            src.append(i)
    return new, src


def transfer_set_path(cache_dir: str | pathlib.Path, train_idx, s: AugmentSettings) -> pathlib.Path:
    """Cache file of a transfer set: keyed by the settings and the train rows (the directory keys teacher and data)."""
    h = hashlib.sha256(json.dumps(asdict(s), sort_keys=True).encode())
    h.update(np.asarray(train_idx, dtype=np.int64).tobytes())
    return pathlib.Path(cache_dir) / f"augment-{h.hexdigest()[:16]}.pt"


def teacher_transfer_set(teacher, tokenizer, ds, train_idx, max_len: int, s: AugmentSettings,
                         cache_dir: str | pathlib.Path | None = None, log=print, compute: Compute = CPU,
                         student_tokenizer=None, progress: bool = False) -> dict:
    """Augmented copies of the train rows, tokenised and labelled by `teacher`: {"tensors": {...} (m, seq), "logits":
    (m, classes), "source": (m,) row index into the dataset}. Cached under `cache_dir` when given (a directory of this
    teacher and student tokenizer). `student_tokenizer`: the students read another tokenizer than the teacher (they
    are sliced from a student initialiser): the teacher labels its own tokens, "tensors" are the students'.
    `progress`: a progress bar over the labelling."""
    from nas.data import encode
    from nas.distill.evaluate import predict_logits

    if ds.task != "classification":
        raise ValueError("augmentation is implemented for single-text classification")
    path = transfer_set_path(cache_dir, train_idx, s) if cache_dir else None
    if path is not None and path.is_file():
        return torch.load(path, map_location="cpu")
    train_idx = np.asarray(train_idx)
    texts = [ds.texts[i] for i in train_idx]
    emb = teacher.get_input_embeddings().weight.detach()
    new, src = augment_texts(texts, tokenizer, emb, s)
    tensors = encode(tokenizer, new, max_len)
    students = encode(student_tokenizer, new, max_len) if student_tokenizer is not None else tensors
    log(f"labelling {len(new)} augmented rows with the teacher (cached afterwards)")
    out = {"tensors": students, "logits": predict_logits(teacher, tensors, compute=compute,
                                                             progress="labelling" if progress else None),
           "source": torch.as_tensor(train_idx[src], device="cpu")}
    if path is not None:
        save_atomic(out, path)
    return out


def with_transfer_set(tensors: dict, labels: torch.Tensor, soft: torch.Tensor, train_idx, transfer: dict | None,
                      transfer_soft: torch.Tensor | None = None):
    """Train rows plus the transfer set, as the arguments of `distill`: (tensors, labels, soft, hard_mask). Augmented
    rows take the label of their source text as a placeholder (masked out of the hard loss)."""
    tr = torch.as_tensor(np.asarray(train_idx), dtype=torch.long, device="cpu")
    x = {k: v[tr] for k, v in tensors.items()}
    y, t, hard = labels[tr], soft[tr], torch.ones(len(tr), dtype=torch.bool, device="cpu")
    if transfer is None:
        return x, y, t, hard
    extra = transfer["logits"] if transfer_soft is None else transfer_soft
    x = {k: torch.cat([v, transfer["tensors"][k]]) for k, v in x.items()}
    y = torch.cat([y, labels[transfer["source"].clamp_min(0)]])  # corpus rows (source -1) have no text of their own
    t = torch.cat([t, extra.to(t.dtype)])
    hard = torch.cat([hard, torch.zeros(len(extra), dtype=torch.bool, device="cpu")])
    return x, y, t, hard
