"""Distillation recipes for one student shape, side by side on one teacher and one split: what moves a small student's
final accuracy (learning rate, epochs, a teacher-labelled transfer set, the soft loss, the initialisation).
Last line of output: one JSON object.

    python benchmarks/recipes.py                                   # L1-H128-A4-F512 (the >= 10x student), all of RT
    python benchmarks/recipes.py --shape L4-H384-A12-F1536 --variants lr=1e-4,epochs=2 lr=1e-3,epochs=2
    python benchmarks/recipes.py --augment 8 --variants augment,epochs=2
    python benchmarks/recipes.py --shape L3-H256-A8-F1024 --speed --variants   # its measured speedup only

A variant is a comma-separated list of key=value (or a bare flag):
    lr=<float>  epochs=<float>  soft=soft_kl|soft_mse  alpha=<soft weight>  beta=<hard weight>
    augment          train rows + the --augment copies of teacher-labelled perturbed train texts (nas/augment.py)
    init=teacher|rewired|rewired-hidden|supernet
                                           teacher slice (default), or slice of the rewired teacher (heads and FFN
                                           reordered by importance; with hidden dims too), or of a supernet saved by
                                           `benchmarks/supernet.py --supernet-file` (pass the same file here)
    freeze-embeddings                      the word embeddings are not trained
    hidden=<w>  attention=<w>              hidden-state MSE / attention-map KL against the teacher's forward (weights)
    map=sliced|uniform                     the teacher layer each student layer learns: the one it was sliced from, or
                                           TinyBERT's uniform map (a 1-layer student learns the teacher's top layer)
Every variant starts from the same seed; the plain recipe is `lr=1e-3,epochs=4` (0.5 KL(T=2) + 0.5 CE).
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import pathlib
import sys
import time

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

DEFAULT_VARIANTS = ["lr=1e-3,epochs=4", "lr=1e-3,epochs=4,freeze-embeddings", "lr=3e-3,epochs=4", "lr=3e-4,epochs=8",
                    "lr=1e-3,epochs=4,init=rewired-hidden", "lr=1e-3,epochs=4,soft=soft_mse,alpha=1,beta=0"]


def parse_variant(text: str) -> dict:
    out = {"lr": 1e-3, "epochs": 4.0, "soft": "soft_kl", "alpha": 0.5, "beta": 0.5, "augment": False, "init": "teacher",
           "freeze_embeddings": False, "hidden": 0.0, "attention": 0.0, "map": "sliced"}
    for part in filter(None, text.split(",")):
        key, _, value = part.partition("=")
        key = key.strip().replace("-", "_")
        if key not in out:
            raise SystemExit(f"variant {text!r}: unknown key {key!r} (known: {', '.join(out)})")
        if isinstance(out[key], bool):
            out[key] = value.lower() not in ("0", "false", "no") if value else True
        elif isinstance(out[key], float):
            out[key] = float(value)
        else:
            out[key] = value
    if out["init"] not in ("teacher", "rewired", "rewired-hidden", "supernet"):
        raise SystemExit(f"variant {text!r}: init must be teacher, rewired, rewired-hidden or supernet")
    if out["map"] not in ("sliced", "uniform"):
        raise SystemExit(f"variant {text!r}: map must be sliced or uniform")
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dataset", default="rotten-tomatoes")
    ap.add_argument("--rows", type=int, default=None, help="stratified slice of the dataset (default: all)")
    ap.add_argument("--seq", type=int, default=64)
    ap.add_argument("--teacher-epochs", type=float, default=2.0)
    ap.add_argument("--shape", default="L1-H128-A4-F512", help="student shape, L<layers>-H<hidden>-A<heads>-F<ffn>")
    ap.add_argument("--augment", type=int, default=8, help="copies per train text in the transfer set of `augment` variants")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--variants", nargs="*", default=DEFAULT_VARIANTS,
                    help="recipes to train (see above); none with --speed: only the speed measurement")
    ap.add_argument("--speed", action="store_true",
                    help="first measure the shape's speedup over the teacher (eager, batch 1, --seq, all cores; "
                         "interleaved rounds with the teacher re-measured in each: benchmarks/latency.py's protocol); "
                         "run it on an otherwise idle machine")
    ap.add_argument("--supernet-file", default=None,
                    help="state dict of a trained supernet (benchmarks/supernet.py --supernet-file) for init=supernet")
    args = ap.parse_args()
    variants = [parse_variant(v) for v in args.variants]
    if not variants and not args.speed:
        raise SystemExit("--variants: give at least one recipe (or --speed to measure the shape's speed only)")
    if any(v["init"] == "supernet" for v in variants) and not (args.supernet_file and pathlib.Path(args.supernet_file).is_file()):
        raise SystemExit("init=supernet needs --supernet-file pointing to a saved supernet state dict")

    import numpy as np
    import torch
    from transformers.utils import logging as hf_logging

    from nas.distill.augment import AugmentSettings, teacher_transfer_set, with_transfer_set
    from nas.distill.evaluate import predict_logits, scores
    from nas.distill.loop import DistillSettings, distill, steps_for
    from nas.students.bert_slice import extract_subnet
    from nas.students.rewire import rewire
    from nas.students.shape import Shape

    try:
        shape = Shape.from_key(args.shape)
    except ValueError as e:
        raise SystemExit(f"--shape: {e}") from None
    hf_logging.set_verbosity_error()
    torch.set_num_threads(os.cpu_count() or 1)
    t_start = time.perf_counter()
    from task_setup import classification_task

    task = classification_task(args.dataset, args.rows, args.seq, args.teacher_epochs)
    space, ds, tok, tensors, splits, labels = task.space, task.ds, task.tok, task.tensors, task.splits, task.labels
    info, teacher, t_logits, dev, test = task.info, task.teacher, task.t_logits, task.dev, task.test
    train = task.train
    print(f"teacher: dev {info['dev']['accuracy']:.4f} test {info['test']['accuracy']:.4f}", flush=True)
    speed = None
    if args.speed:
        from latency import measure_with_reference  # benchmarks/latency.py: the issue-4 protocol's interleaved rounds

        from nas.latency.measure import MeasureSettings

        rows = measure_with_reference(teacher, [shape], MeasureSettings(seq_len=args.seq, threads=os.cpu_count() or 1,
                                                                        max_runs=300))
        speed = {"speedup": rows[shape.key]["speedup"], "p50_ms": rows[shape.key]["p50_ms"],
                 "teacher_p50_ms": rows["teacher_rows"][0]["p50_ms"]}
        print(f"speed: {json.dumps(speed)}", flush=True)
    transfer = None
    if any(v["augment"] for v in variants):
        transfer = teacher_transfer_set(teacher, tok, ds, train, args.seq, AugmentSettings(copies=args.augment),
                                        cache_dir=pathlib.Path(info["logits_path"]).parent)
    rewired: dict[str, torch.nn.Module] = {}
    held = np.sort(np.random.default_rng(0).choice(train, size=min(256, len(train) // 5), replace=False))

    def accuracy(model, idx) -> float:
        return scores(predict_logits(model, {k: v[idx] for k, v in tensors.items()}), labels[idx])["accuracy"]

    results = []
    for text, v in zip(args.variants, variants):
        source = teacher
        if v["init"] == "supernet":
            if "supernet" not in rewired:
                rewired["supernet"] = copy.deepcopy(teacher)
                rewired["supernet"].load_state_dict(torch.load(args.supernet_file))
            source = rewired["supernet"]
        elif v["init"] != "teacher":
            if v["init"] not in rewired:
                rewired[v["init"]] = rewire(copy.deepcopy(teacher), tensors, labels, held,
                                            reorder_hidden=v["init"] == "rewired-hidden")
            source = rewired[v["init"]]
        model = extract_subnet(source, shape)
        if v["freeze_embeddings"]:
            model.bert.embeddings.word_embeddings.weight.requires_grad_(False)
        st = DistillSettings(**{**space.distill.model_dump(), "lr": v["lr"], "soft_loss": v["soft"],
                                "alpha_soft": v["alpha"], "beta_hard": v["beta"], "hidden_weight": v["hidden"],
                                "attention_weight": v["attention"], "layer_map": v["map"]})
        x, y, sf, hard = with_transfer_set(tensors, labels, t_logits, train, transfer if v["augment"] else None)
        steps = steps_for(len(y), st.batch_size, v["epochs"], None)
        t0 = time.perf_counter()
        distill(model, x, y, sf, st, steps, seed=args.seed, hard_mask=hard,
                teacher=teacher if st.hidden_weight > 0 or st.attention_weight > 0 else None)
        row = {"variant": text, "train_rows": len(y), "steps": steps, "dev": accuracy(model, dev),
               "test": accuracy(model, test), "train_s": round(time.perf_counter() - t0, 1)}
        row["retention"] = row["test"] / info["test"]["accuracy"]
        results.append(row)
        print("variant: " + json.dumps(row), flush=True)
    best = max(results, key=lambda r: r["dev"], default=None)
    print(json.dumps({"dataset": args.dataset, "rows": len(ds.labels), "seq_len": args.seq, "shape": shape.key,
                      "seed": args.seed, "teacher_dev_acc": info["dev"]["accuracy"],
                      "teacher_test_acc": info["test"]["accuracy"], "augment_copies": args.augment,
                      "speed": speed, "variants": results, "best_by_dev": best and best["variant"],
                      "best_retention": best and best["retention"], "wall_s": time.perf_counter() - t_start}))


if __name__ == "__main__":
    main()
