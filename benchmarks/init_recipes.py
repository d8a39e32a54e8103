"""Where issue 25's accuracy goes: the student initialiser itself. Every student of `large_teacher.py --student-init
minilm-l6` is sliced from MiniLM-L6 after it has learnt from the fine-tuned mpnet-base, so what MiniLM-L6 reaches at
full size (5.8x the teacher's speed) bounds what its >= 10x slices can keep. This trains it under several recipes on
Rotten Tomatoes (every train row; all 1,280 dev and 1,280 test rows) and scores each. Last line of output: one JSON
object.

    python benchmarks/init_recipes.py                          # kd:1 kd:3 aug2:3 labels:3
    python benchmarks/init_recipes.py --recipes kd:3 aug4:2

Recipes (E: at most E epochs; every recipe keeps its best epoch on dev, as the service does):
  kd:E       the service's: the teacher's logits on the train rows, 0.5 KL(T=2) + 0.5 CE (budgets.student_init_epochs)
  augK:E     the same beside K augmented copies of every train text labelled by the teacher (soft loss only on them)
  corpusK:E  K augmented copies (K may be 0) and the unlabelled text of --corpus, labelled by the teacher: what a
             job's `transfer: {path: CORPUS, augment: K}` gives its initialiser (read from the same cache entry)
  labels:E   fine-tuned on the labels alone, no teacher: the reference

--init SOURCE: what the initialiser starts from: `minilm-l6` (the default: the packaged MiniLM-L6, as the job's
`student_init`), a local Hugging Face directory of a family the service slices, or `teacher:SHAPE` (e.g.
teacher:L6-H384-A6-F1536): the fine-tuned teacher itself, rewired by importance (heads, FFN neurons and hidden units,
on 1,024 train rows) and sliced to SHAPE (evenly spaced layers, the leading units of every matrix), saved beside the
teacher; it reads the teacher's tokens. Its transfer sets are labelled in its tokens, in their own cache folder.

--lr LR and --soft-loss soft_kl|soft_mse: the kd, aug and corpus recipes' peak learning rate (default 1e-4) and their
loss on the teacher's logits (default KL at T=2; soft_mse: MSE on the raw logits), as a job's budgets.student_init_lr
and budgets.student_init_soft_loss (their own cache entries where not the defaults).

--length-groups N: the kd, aug and corpus recipes draw batches of rows of similar length from pools of N batches
(a job's budgets.student_init_length_groups; its own cache entries): less padding to compute, the same rows an epoch.

--embedding W: the kd and corpus recipes also learn the teacher's mean-pooled final hidden state through a projection,
1 - cosine at weight W (a job's budgets.student_init_embedding; its own cache entries). --attention W: they learn the
teacher's attention maps too, the teacher run on each batch (budgets.student_init_attention). --hidden W: they learn
its hidden states layer by layer through a learned projection, MSE at weight W, the teacher run on each batch
(budgets.student_init_hidden).

The teacher must be the one `large_teacher.py` fine-tuned and cached (run it first). Every model is cached with the
teachers (NAS_CACHE, default .nas/cache): a rerun reports without training, and the job's own initialiser (kd:E at the
job's student_init_epochs) is read from the same cache entry.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import sys
import time

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
INIT = "minilm-l6"  # the default --init


def parse_recipe(text: str) -> tuple[str, int, float]:
    """'kd:3' -> ('kd', 0, 3.0); 'aug2:3' -> ('aug', 2, 3.0); 'corpus0:2' (or 'corpus:2') -> ('corpus', 0, 2.0);
    'labels:3' -> ('labels', 0, 3.0)."""
    kind, _, epochs = text.partition(":")
    copies = 0
    for prefix in ("aug", "corpus"):
        if kind.startswith(prefix) and kind[len(prefix):].isdigit():
            kind, copies = prefix, int(kind[len(prefix):])
    if kind not in ("kd", "aug", "corpus", "labels") or not epochs or (kind == "aug" and copies < 1):
        raise SystemExit(f"--recipes: {text!r} is not kd:E, augK:E (K >= 1), corpusK:E or labels:E")
    return kind, copies, float(epochs)


def transfer_set(teacher_info: dict, ds, train, seq: int, copies: int, init: str, init_tok, compute) -> str:
    """K augmented copies of every train text, labelled by the teacher, in MiniLM's tokens: where the large-teacher
    job keeps its own (`transfer_home`; the job's initialiser and finals learn from it), made here if missing."""
    from transformers import AutoTokenizer

    from nas.distill.augment import AugmentSettings, teacher_transfer_set, transfer_set_path
    from nas.teachers.load import load_teacher, transfer_home

    settings = AugmentSettings(copies=copies, seed=0)
    cache = transfer_home(teacher_info, init)[0]
    path = transfer_set_path(cache, train, settings)
    if not path.is_file():
        cache.mkdir(parents=True, exist_ok=True)
        teacher_transfer_set(load_teacher(teacher_info), AutoTokenizer.from_pretrained(teacher_info["dir"]), ds, train,
                             seq, settings, cache_dir=cache, student_tokenizer=init_tok, compute=compute, progress=True)
    return str(path)


def corpus_transfer_set(teacher_info: dict, ds, train, seq: int, copies: int, corpus_file: str, init: str, init_tok,
                        compute, pooled: bool = False) -> str:
    """K augmented copies and the unlabelled text of `corpus_file`, labelled by the teacher, in MiniLM's tokens: the
    cache entry a job with `transfer: {path: corpus_file, augment: K}` (nas/stages/transfer.py) reads and writes."""
    from nas.distill.augment import AugmentSettings
    from nas.distill.transfer import cached_corpus_set, read_corpus
    from nas.teachers.load import transfer_home

    path = cached_corpus_set(teacher_info, ds.texts, train, read_corpus(corpus_file),
                             AugmentSettings(copies=copies, seed=0), seq, transfer_home(teacher_info, init)[0],
                             compute=compute, student_tokenizer=init_tok, pooled=pooled)
    return str(path)


def teacher_slice(teacher_info: dict, ds, splits, seq: int, key: str, compute) -> str:
    """The fine-tuned teacher rewired by importance (heads, FFN neurons and hidden units; cross-entropy on the first
    1,024 train rows) and sliced to the shape `key`, saved (with the teacher's tokenizer) beside the teacher; its
    directory. Cached: a rerun reads it back."""
    import torch
    from transformers import AutoTokenizer

    from nas.data import tokenize
    from nas.students.bert_slice import extract_subnet
    from nas.students.rewire import rewire
    from nas.students.shape import Shape
    from nas.teachers.load import load_teacher

    shape = Shape.from_key(key)
    out = pathlib.Path(teacher_info["logits_path"]).parent / f"slice-{shape.key}"
    if (out / "config.json").is_file():
        return str(out)
    tok = AutoTokenizer.from_pretrained(teacher_info["dir"])
    tensors = tokenize(tok, ds, seq)
    model = load_teacher(teacher_info)
    rows = list(splits["train"][:1024])
    print(f"teacher:{shape.key}: rewiring the teacher on {len(rows)} train rows, then slicing", flush=True)
    rewire(model, tensors, torch.as_tensor(ds.labels), rows, reorder_hidden=True, device=compute.device)
    student = extract_subnet(model, shape)
    tmp = out.with_name(out.name + ".tmp")
    student.save_pretrained(tmp)
    tok.save_pretrained(tmp)
    tmp.replace(out)
    return str(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--recipes", nargs="+", default=["kd:1", "kd:3", "aug2:3", "labels:3"])
    ap.add_argument("--init", default=INIT, help="what the initialiser starts from: minilm-l6, a local model "
                    "directory, or teacher:SHAPE (the fine-tuned teacher rewired and sliced, e.g. teacher:L6-H384-A6-F1536)")
    ap.add_argument("--seq", type=int, default=48, help="tokens per text (the large-teacher job's)")
    ap.add_argument("--teacher-epochs", type=float, default=1.0, help="the large-teacher job's teacher_epochs")
    ap.add_argument("--precision", default="fp32", choices=["fp32", "bf16"],
                    help="the large-teacher job's compute.precision: its teacher is read from the cache under that key, "
                         "and labelling and training run in it (scores are the fp32 model's either way)")
    ap.add_argument("--corpus", default="", help="unlabelled in-domain text for corpusK:E recipes (one per line, or "
                    "the text column of a CSV / TSV / JSONL), as a job's transfer.path")
    ap.add_argument("--embedding", type=float, default=0.0,
                    help="kd and corpus recipes also learn the teacher's pooled final hidden state at this weight")
    ap.add_argument("--attention", type=float, default=0.0,
                    help="kd and corpus recipes also learn the teacher's attention maps at this weight")
    ap.add_argument("--hidden", type=float, default=0.0,
                    help="kd and corpus recipes also learn the teacher's hidden states layer by layer through a "
                         "learned projection, MSE at this weight (budgets.student_init_hidden)")
    ap.add_argument("--lr", type=float, default=None,
                    help="the kd, aug and corpus recipes' peak learning rate (budgets.student_init_lr; default: the "
                         "service's)")
    ap.add_argument("--soft-loss", default=None, choices=["soft_kl", "soft_mse"],
                    help="their loss on the teacher's logits: KL at T=2, or MSE on the raw logits "
                         "(budgets.student_init_soft_loss)")
    ap.add_argument("--length-groups", type=int, default=0,
                    help="their batches of rows of similar length, from pools of N batches "
                         "(budgets.student_init_length_groups; 0: random batches)")
    args = ap.parse_args()
    recipes = [(r, *parse_recipe(r)) for r in args.recipes]
    if args.embedding and any(kind == "aug" for _, kind, _, _ in recipes):
        ap.error("--embedding: augK:E sets keep no pooled states; use corpus0:E with copies, e.g. corpus2:1")
    if any(kind == "corpus" for _, kind, _, _ in recipes) and not args.corpus:
        ap.error("a corpusK:E recipe needs --corpus FILE")
    os.environ.setdefault("NAS_CACHE", str(ROOT / ".nas" / "cache"))
    os.environ.setdefault("HF_HUB_OFFLINE", "1")

    import torch
    from transformers import AutoTokenizer
    from transformers.utils import logging as hf_logging

    from nas.compute import Compute
    from nas.data import load_dataset, split_indices, tokenize
    from nas.latency.measure import device_fingerprint
    from nas.spec.job import DatasetRef
    from nas.teachers.load import cached_teacher, prepare_teacher, teacher_path, teacher_pooled

    hf_logging.set_verbosity_error()
    torch.set_num_threads(os.cpu_count() or 1)
    ds = load_dataset(DatasetRef(name="rotten-tomatoes"), "classification", 0)
    splits = split_indices(ds.labels, 0)
    compute = Compute("cpu", args.precision)
    teacher = cached_teacher("mpnet-base", ds, 0, args.teacher_epochs, args.seq, precision=args.precision)
    if teacher is None:
        print(f"no fine-tuned mpnet-base for Rotten Tomatoes at seq {args.seq}, teacher_epochs {args.teacher_epochs} in "
              f"the cache (precision {args.precision}): run `python benchmarks/large_teacher.py --student-init {INIT} "
              f"--train-rows 0 --precision {args.precision}` first",
              file=sys.stderr)
        sys.exit(2)
    init = (teacher_slice(teacher, ds, splits, args.seq, args.init.split(":", 1)[1], compute)
            if args.init.startswith("teacher:") else args.init)
    init_tok = AutoTokenizer.from_pretrained(teacher_path(init, "student_init"))
    tensors = tokenize(init_tok, ds, args.seq)
    if args.embedding:  # the teacher's pooled states on every row, in its own tokens (cached beside its logits)
        teacher_pooled(teacher, tokenize(AutoTokenizer.from_pretrained(teacher["dir"]), ds, args.seq), compute)
    t_test = teacher["test"]["accuracy"]
    rows = []
    for text, kind, copies, epochs in recipes:
        t0 = time.perf_counter()
        kw = {}
        if kind in ("kd", "aug", "corpus"):
            given = {"lr": args.lr, "soft_loss": args.soft_loss, "length_groups": args.length_groups or None}
            kw.update(soft_from=teacher["logits_path"], **{k: v for k, v in given.items() if v is not None})
        if kind == "aug":
            kw["transfer"] = transfer_set(teacher, ds, splits["train"], args.seq, copies, init, init_tok, compute)
        if kind == "corpus":
            kw["transfer"] = corpus_transfer_set(teacher, ds, splits["train"], args.seq, copies, args.corpus, init, init_tok,
                                                 compute, pooled=args.embedding > 0)
        if kind in ("kd", "corpus"):  # the initialiser's targets beside the logits, where asked for
            kw.update({k: w for k, w in (("embedding", args.embedding), ("attention", args.attention),
                                         ("hidden", args.hidden)) if w})
        print(f"{text}: training (or reading the cache)", flush=True)
        info = prepare_teacher(init, ds, tensors, splits, 0, epochs, args.seq, compute=compute, **kw)
        row = {"recipe": text, "dev": round(info["dev"]["accuracy"], 4), "test": round(info["test"]["accuracy"], 4),
               "retention": round(info["test"]["accuracy"] / t_test, 4), "transfer_rows": info.get("transfer_rows", 0),
               "embedding": info.get("embedding", 0.0), "attention": info.get("attention", 0.0),
               "hidden": info.get("hidden", 0.0),
               "lr": info.get("lr"), "soft_loss": info.get("soft_loss"), "length_groups": info.get("length_groups", 0),
               "early_stopping": info.get("early_stopping"),
               "train_s": round(info["train_s"], 1), "wall_s_this_run": round(time.perf_counter() - t0, 1)}
        rows.append(row)
        print(f"{text}: dev {row['dev']:.4f} test {row['test']:.4f} retention {row['retention']:.4f} "
              f"({row['early_stopping'] or 'no early stopping'})", flush=True)
    fp = device_fingerprint()
    print(json.dumps({"teacher": "mpnet-base", "teacher_test_acc": round(t_test, 4),
                      "teacher_dev_acc": round(teacher["dev"]["accuracy"], 4), "initialiser": args.init, "seq": args.seq,
                      "precision": args.precision,
                      **({"corpus": args.corpus} if args.corpus else {}), "recipes": rows,
                      "fingerprint": {k: fp.get(k) for k in ("cpu", "cores", "threads")}}))


if __name__ == "__main__":
    main()
