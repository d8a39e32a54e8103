"""Issue 5, the pair task: BBC News headline -> article with the seeds' recipe.

The MiniLM teacher is fine-tuned as a pair classifier on train (query, own article) / (query, other article) rows; a
gradient-boosted-trees model on lexical overlap features is the auxiliary teacher; a cross-encoder student (`PairScorer`:
CLS + mean + max pooling -> two linear layers with tanh) sliced from the teacher is trained from (query, positive,
negative) triples with hinge + soft MSE to the teacher's scores, with and without the relevance loss against the trees.
Every model ranks each dev/test headline's own article among `--candidates` articles: AUC and MRR.
The last stdout line is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import sys
import time

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent))
os.environ.setdefault("HF_HUB_OFFLINE", "1")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="200 training headlines, 40 per eval split, 1 seed")
    ap.add_argument("--queries", type=int, default=1000, help="training headlines (triples: queries x negatives; 0: all)")
    ap.add_argument("--eval-queries", type=int, default=0, help="headlines per dev/test split (0: all 222)")
    ap.add_argument("--negatives", type=int, default=2)
    ap.add_argument("--candidates", type=int, default=10)
    ap.add_argument("--seq", type=int, default=64)
    ap.add_argument("--teacher-epochs", type=float, default=2.0)
    ap.add_argument("--shape", default="3,384,12,1536",
                    help="student layers,hidden,heads,ffn (a 2-layer 256-wide slice stayed near chance on unseen headlines)")
    ap.add_argument("--epochs", type=float, default=2.0)
    ap.add_argument("--lr", type=float, default=5e-4)
    ap.add_argument("--margin", type=float, default=0.7)
    ap.add_argument("--relevance-weight", type=float, default=0.5)
    ap.add_argument("--seeds", type=int, default=2)
    args = ap.parse_args()
    if args.quick:
        args.queries, args.eval_queries, args.seeds, args.epochs, args.teacher_epochs = 200, 40, 1, 2.0, 1.0

    import numpy as np
    import torch
    from pair_recipe import (
        headline_triples,
        rank_metrics,
        score_rows,
        scorer_from_teacher,
        teacher_scores,
        train_pair_student,
    )
    from transformers import AutoTokenizer
    from transformers.utils import logging as hf_logging

    from nas.data import tokenize
    from nas.distill.aux_teacher import fit_aux_probs
    from nas.distill.loop import DistillSettings
    from nas.latency.measure import MeasureSettings, measure_interleaved
    from nas.students.bert_slice import count_parameters
    from nas.students.shape import Shape
    from nas.teachers.load import load_teacher, prepare_teacher, teacher_path

    hf_logging.set_verbosity_error()
    torch.set_num_threads(max(1, os.cpu_count() or 1))
    t0 = time.perf_counter()
    data = headline_triples(0, args.negatives, args.candidates, args.queries or None, args.eval_queries or None)
    ds = data.dataset
    tok = AutoTokenizer.from_pretrained(teacher_path("minilm-l6"))
    tensors = tokenize(tok, ds, args.seq)
    info = prepare_teacher("minilm-l6", ds, tensors, data.splits, 0, args.teacher_epochs, args.seq, log=print)
    t_logits = torch.load(info["logits_path"])
    t_scores = teacher_scores(t_logits)
    print(f"teacher ready in {time.perf_counter() - t0:.0f} s ({len(data.triples)} triples, {len(ds.texts)} rows)",
          flush=True)

    def metrics_of(scores: np.ndarray, split: str, rows_are_global: bool = True) -> dict:
        rows = data.splits[split]
        index = {int(r): (int(r) if rows_are_global else i) for i, r in enumerate(rows)}
        return rank_metrics(scores, data.groups[split], index)

    out: dict = {"dataset": "bbc-news headline->article", "train_queries": args.queries,
                 "eval_queries": args.eval_queries, "candidates": args.candidates, "triples": len(data.triples)}
    out["teacher"] = {s: metrics_of(t_scores.numpy(), s) for s in ("dev", "test")}

    labels = np.asarray(ds.labels)
    aux = fit_aux_probs(ds.texts, labels, data.splits["train"], "pair", seed=0)
    out["gbdt"] = {s: metrics_of(aux[:, 1], s) for s in ("dev", "test")}
    print(f"teacher {json.dumps(out['teacher'])}\ngbdt {json.dumps(out['gbdt'])}", flush=True)
    aux_match = torch.as_tensor(aux[:, 1], dtype=torch.float32)

    teacher = load_teacher(info)
    shape = Shape(*(int(x) for x in args.shape.split(",")))
    runs: dict[str, list] = {"without_relevance": [], "with_relevance": []}
    student = None
    for seed in range(args.seeds):
        for label, rw in (("without_relevance", 0.0), ("with_relevance", args.relevance_weight)):
            torch.manual_seed(seed)
            student = scorer_from_teacher(teacher, shape)
            settings = DistillSettings(lr=args.lr, alpha_soft=1.0, hinge_weight=1.0, hinge_margin=args.margin,
                                       relevance_weight=rw, batch_size=16, warmup_ratio=0.1)
            info_s = train_pair_student(student, tensors, data.triples, t_scores, aux_match, settings, args.epochs, seed)
            res = {"seed": seed, "train_s": info_s["train_s"]}
            for split in ("dev", "test"):
                sc = score_rows(student, tensors, data.splits[split]).numpy()
                res[split] = metrics_of(sc, split, rows_are_global=False)
            runs[label].append(res)
            print(f"{label} seed {seed}: {json.dumps(res)}", flush=True)
    for label, rs in runs.items():
        out[label] = {f"{split}_{m}": float(np.mean([r[split][m] for r in rs])) for split in ("dev", "test")
                      for m in ("auc", "mrr")}
        out[label]["runs"] = rs
    out["relevance_effect_test_mrr"] = out["with_relevance"]["test_mrr"] - out["without_relevance"]["test_mrr"]
    out["relevance_effect_test_auc"] = out["with_relevance"]["test_auc"] - out["without_relevance"]["test_auc"]

    # speed of the cross-encoder student vs the teacher at the eval sequence length (interleaved rounds, batch 1)
    lat = measure_interleaved({"teacher": teacher, "student": student},
                              MeasureSettings(seq_len=args.seq, threads=2), rounds=3, reference="teacher")
    out["teacher_p50_ms"] = lat["teacher"]["p50_ms"]
    out["student_p50_ms"] = lat["student"]["p50_ms"]
    out["student_speedup"] = lat["student"]["speedup"]
    out["student_shape"] = shape.key
    out["student_params"] = count_parameters(student)
    out["teacher_params"] = count_parameters(teacher)
    out["wall_s"] = time.perf_counter() - t0
    print(json.dumps(out))


if __name__ == "__main__":
    main()
