"""Issue 25, where the accuracy goes: students of the non-BERT families (issue 26) distilled from the 110M teacher of
`benchmarks/large_teacher.py` on every train row, against the same students taught by MiniLM (`benchmarks/families.py`).
Last line of output: one JSON object.

    python benchmarks/large_families.py                 # after large_teacher.py and families.py have run
    python benchmarks/large_families.py --augment 4     # also 4 teacher-labelled augmented copies of each train text
    python benchmarks/large_families.py --shapes bilstm-E256-H256-L2-M0,textcnn-E256-C512-K3-M0   # other shapes

It reads the large-teacher job back from its store (the fine-tuned mpnet-base, its logits on every row, its splits and
tokens), labels a transfer corpus with it (the 1,097 plot summaries, and --augment copies; cached in --out), and trains
each shape of SHAPES with the families benchmark's recipe (2 epochs, lr 2e-3, batch 64) on all 10,248 train rows plus
that corpus: the same code path as the families job's trials. Every student and the teacher are timed end to end from
raw text in the same interleaved rounds, in eager PyTorch and in ONNX Runtime. The best on dev at >= 10x per runtime is
trained again with two more seeds. Results are kept in --out/results.json (a rerun skips what is there).
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
sys.path.insert(0, str(ROOT / "benchmarks"))

SHAPES = [
    {"family": "bilstm", "emb": 128, "hidden": 32, "layers": 1, "mlp": 0},
    {"family": "bilstm", "emb": 128, "hidden": 64, "layers": 1, "mlp": 0},
    {"family": "textcnn", "emb": 128, "channels": 128, "kernels": 3, "mlp": 0},
    {"family": "textcnn", "emb": 128, "channels": 256, "kernels": 3, "mlp": 0},
    {"family": "boe", "emb": 128, "ngrams": 2, "mlp": 256},
]


def main() -> None:
    import torch

    import families as fam
    from nas.store import Store
    from nas.store.records import metric_value
    from nas.students.arch import student_shape

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--large", default=str(ROOT / ".nas" / "bench-large"), help="large_teacher.py's --workdir")
    ap.add_argument("--out", default=str(ROOT / ".nas" / "bench-large-families"))
    ap.add_argument("--augment", type=int, default=0, help="teacher-labelled augmented copies of each train text")
    ap.add_argument("--epochs", type=float, default=2.0)
    ap.add_argument("--seeds", default="1,2")
    ap.add_argument("--shapes", default="", help="shape keys to train instead of SHAPES (comma-separated), e.g. "
                                                  "bilstm-E256-H256-L2-M0 (the 110M teacher leaves room for larger ones)")
    args = ap.parse_args()
    out = pathlib.Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(2)
    t0 = time.perf_counter()
    store = Store(f"sqlite:///{pathlib.Path(args.large) / 'nas.db'}")
    job = store.list_jobs()[0]
    task = fam.Task(store, job["id"])
    teacher_test = task.info["test"]["accuracy"]
    _, corpus = fam.write_inputs(out, quick=False)
    transfer = fam.transfer_set(task, args.augment, corpus, out)
    walls = {"transfer": round(time.perf_counter() - t0, 1)}
    results_path = out / "results.json"
    results = json.loads(results_path.read_text()) if results_path.is_file() else {}

    def trained(shape: dict, seed: int) -> dict:
        arch = student_shape(shape)
        key = f"{arch.key}/augment{args.augment}/seed{seed}"
        if key not in results:
            model, info = task.train(arch, fam.SMALL_DISTILL, args.epochs, seed, transfer)
            path = out / "students" / key.replace("/", "-")
            model.save_pretrained(path)
            results[key] = {"dev": task.score(model, "dev"), "test": task.score(model, "test"), "path": str(path), **info}
            results_path.write_text(json.dumps(results, indent=1))
            print(f"{key}: dev {results[key]['dev']:.4f} test {results[key]['test']:.4f} ({info['train_s']} s)",
                  flush=True)
        return results[key]

    t1 = time.perf_counter()
    from nas.students.arch import shape_from_key

    shapes = [shape_from_key(k.strip()).as_dict() for k in args.shapes.split(",") if k.strip()] or SHAPES
    rows = [{"shape": student_shape(s).key, "config": s, **trained(s, 0)} for s in shapes]
    walls["students"] = round(time.perf_counter() - t1, 1)
    t2 = time.perf_counter()
    speeds = {rt: fam.e2e_speedups(task, rows, None, rt) for rt in ("eager", "onnx")}
    walls["e2e_latency"] = round(time.perf_counter() - t2, 1)
    seeds = [int(x) for x in args.seeds.split(",") if x.strip()]
    best = {}
    for rt, sp in speeds.items():
        fast = [r for r in rows if sp[r["shape"]]["speedup"] >= 10]
        if not fast:
            best[rt] = None
            continue
        w = max(fast, key=lambda r: r["dev"])
        tests = [w["test"]] + [trained(w["config"], 1000 * s)["test"] for s in seeds]
        best[rt] = {"shape": w["shape"], "speedup": round(sp[w["shape"]]["speedup"], 2), "dev": round(w["dev"], 4),
                    "test_by_seed": [round(x, 4) for x in tests], "test_median": round(statistics.median(tests), 4),
                    "retention": round(statistics.median(tests) / teacher_test, 4)}
    tfidf = next((t for t in store.trials(job["id"], kind="reference") if t["config"].get("name") == "tfidf-linear"),
                 None)
    print(json.dumps({
        "teacher": "mpnet-base", "dataset": "rotten-tomatoes", "teacher_test_acc": teacher_test,
        "teacher_e2e_p50_ms": {rt: round(sp["teacher"]["p50_ms"], 3) for rt, sp in speeds.items()},
        "tfidf_test": metric_value(tfidf, "accuracy", "test", "final") if tfidf else None,
        "augment": args.augment, "train_rows": len(task.splits["train"]),
        "transfer_rows": len(transfer["source"]) if transfer else 0, "best_at_10x": best,
        "students": [{"shape": r["shape"], "dev": round(r["dev"], 4), "test": round(r["test"], 4),
                      **{f"speedup_{rt}": round(sp[r["shape"]]["speedup"], 2) for rt, sp in speeds.items()},
                      "train_s": r["train_s"]} for r in rows],
        "wall_s": walls, "fingerprint": {k: speeds["eager"]["teacher"]["fingerprint"].get(k)
                                         for k in ("cpu", "cores", "threads")},
    }))


if __name__ == "__main__":
    main()
