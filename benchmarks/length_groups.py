"""Length-grouped batches (`distill.length_groups`, `budgets.student_init_length_groups`) against random ones on this
machine, side by side in one run: the padding each carries and the wall time of a training step. The rows are what the
large-teacher job's students train on: every Rotten Tomatoes train text and --corpus-rows IMDB review sentences (the
transfer corpus of benchmarks/imdb_corpus.py), in MiniLM-L6's tokens at --seq. The model is a slice of the packaged
MiniLM-L6 (--shapes: the job's >= 10x final and the initialiser itself), trained by `nas.distill.loop.distill` as the
finals train it (AdamW, 0.5 KL + 0.5 CE, --precision), on random soft targets (the step's cost does not depend on them).
Last line of output: one JSON object.

    python benchmarks/length_groups.py                                  # pools of 50 batches, 3 rounds
    python benchmarks/length_groups.py --pool 20 --rounds 5 --steps 60

Each round trains --steps steps with random batches, then --steps with grouped ones (new seeds each round), so a noisy
machine moves both alike; figures are medians over rounds, and the ratio is random / grouped (> 1: grouped is faster).
`slots` counts the token positions the batches compute after their padding is trimmed, over a whole epoch.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import statistics
import sys
import time

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def rows(corpus_rows: int, seq: int):
    """(tokens of the RT train texts and `corpus_rows` IMDB sentences in MiniLM-L6's tokenizer, their lengths)."""
    import numpy as np

    from benchmarks.imdb_corpus import imdb_sentences
    from nas.data import encode, load_dataset, load_tokenizer, split_indices
    from nas.spec.job import DatasetRef
    from nas.teachers.load import teacher_path

    ds = load_dataset(DatasetRef(name="rotten-tomatoes"), "classification", 0)
    texts = [ds.texts[i] for i in split_indices(ds.labels, 0)["train"]]
    corpus = imdb_sentences()
    pick = np.random.default_rng(0).permutation(len(corpus))[:corpus_rows]
    texts += [corpus[i] for i in sorted(pick)]
    tensors = encode(load_tokenizer(teacher_path("minilm-l6")), texts, seq)
    return tensors, tensors["attention_mask"].sum(1).numpy()


def slots(lengths, batch_size: int, pool: int, seed: int = 0) -> int:
    from nas.distill.loop import batches

    n = len(lengths)
    return int(sum(lengths[b].max() * len(b) for b in batches(n, batch_size, n // batch_size, seed, lengths, pool)))


def step_time(model, tensors, labels, soft, settings, steps: int, seed: int, compute) -> float:
    from nas.distill.loop import distill

    info = distill(model, tensors, labels, soft, settings, steps, seed=seed, compute=compute)
    return info["train_s"] / steps


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pool", type=int, default=50, help="batches per length pool (distill.length_groups)")
    ap.add_argument("--shapes", nargs="+", default=["L5-H384-A12-F768", "L6-H384-A12-F1536"],
                    help="slices of MiniLM-L6 to time (L6-H384-A12-F1536: the initialiser itself)")
    ap.add_argument("--steps", type=int, default=40, help="steps per arm per round")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--corpus-rows", type=int, default=120000, help="IMDB sentences beside the RT train texts")
    ap.add_argument("--seq", type=int, default=48, help="tokens per text (the large-teacher job's max_seq_len)")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--precision", default="bf16", choices=["fp32", "bf16"])
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()

    import numpy as np
    import torch

    from benchmarks.precision import cpu_info
    from nas.compute import Compute
    from nas.distill.loop import DistillSettings
    from nas.students.bert_slice import extract_subnet
    from nas.students.shape import Shape
    from nas.teachers import load_pretrained
    from nas.teachers.load import teacher_path

    torch.set_num_threads(args.threads)
    t0 = time.perf_counter()
    tensors, lengths = rows(args.corpus_rows, args.seq)
    n = len(lengths)
    labels = torch.as_tensor(np.random.default_rng(0).integers(0, 2, n))
    soft = torch.randn(n, 2)
    padding = {"rows": n, "real_tokens": int(lengths.sum()), "mean_len": round(float(lengths.mean()), 1),
               "random_slots": slots(lengths, args.batch_size, 0), "grouped_slots": slots(lengths, args.batch_size,
                                                                                            args.pool)}
    padding["slots_ratio"] = round(padding["random_slots"] / padding["grouped_slots"], 3)
    print(json.dumps({"padding": padding}), flush=True)
    compute = Compute(precision=args.precision)
    source = load_pretrained(teacher_path("minilm-l6"))
    out = {}
    for key in args.shapes:
        model = extract_subnet(source, Shape.from_key(key))
        times = {"random": [], "grouped": []}
        for r in range(args.rounds):
            for arm, pool in (("random", 0), ("grouped", args.pool)):
                settings = DistillSettings(lr=1e-4, batch_size=args.batch_size, length_groups=pool)
                times[arm].append(step_time(model, tensors, labels, soft, settings, args.steps, 100 + r, compute))
                print(f"{key} round {r} {arm}: {times[arm][-1]:.3f} s/step", flush=True)
        med = {arm: statistics.median(v) for arm, v in times.items()}
        out[key] = {"random_s_per_step": round(med["random"], 4), "grouped_s_per_step": round(med["grouped"], 4),
                    "speedup": round(med["random"] / med["grouped"], 3),
                    "rounds": {arm: [round(x, 4) for x in v] for arm, v in times.items()}}
    print(json.dumps({"pool": args.pool, "seq": args.seq, "batch_size": args.batch_size, "precision": args.precision,
                      "threads": args.threads, "padding": padding, "step_time": out,
                      "wall_s": round(time.perf_counter() - t0, 1), "fingerprint": cpu_info()}))


if __name__ == "__main__":
    main()
