"""Issue 5: Venus-style AutoML of distillation hyperparameters on Rotten Tomatoes.

One job (real MiniLM teacher, cached by NAS_CACHE), one student shape, the pipeline's own HPO stage:
  1. sample search: `--samples` configurations from search_spaces/hpo/fast.yaml (`--space`) on a stratified `--fraction` of train
     under Ray Tune + ASHA (optuna-tpe by default), each scored on dev `--reports` times;
  2. the top `--top-k` configurations and the defaults re-trained on all of train (`hpo-full` trials): the Spearman rank
     agreement of sample vs full-data dev accuracy over those configurations;
  3. the best tuned configuration and the defaults each trained with `--seeds` seeds on all of train: default_acc,
     tuned_acc and gain in test accuracy (mean over seeds);
  4. the same sample search run on all of train, for the cost ratio (full_search_s);
  5. every other search algorithm (random, Optuna NSGA-II, NNI TPE / evolution / regularized evolution, BOHB) runs the
     same sample search, so algorithms_run lists what was exercised, with each one's best sample accuracy.
The last stdout line is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import sys
import tempfile
import time

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent))
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("HF_HUB_OFFLINE", "1")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true",
                    help="a 1,000-row slice, 6 configurations, one seed, no other algorithms (about 3 minutes)")
    ap.add_argument("--dataset", default="rotten-tomatoes")
    ap.add_argument("--rows", type=int, default=None, help="stratified slice of the dataset (default: all)")
    ap.add_argument("--seq", type=int, default=64)
    ap.add_argument("--teacher-epochs", type=float, default=2.0)
    ap.add_argument("--shape", default="1,128,4,512", help="layers,hidden,heads,ffn of the student")
    ap.add_argument("--algorithm", default="optuna-tpe")
    ap.add_argument("--samples", type=int, default=16)
    ap.add_argument("--fraction", type=float, default=0.06)
    ap.add_argument("--epochs", type=float, default=6.0, help="budget of one sample configuration (epochs)")
    ap.add_argument("--full-epochs", type=float, default=4.0, help="epochs of a re-training on all of train")
    ap.add_argument("--reports", type=int, default=3)
    ap.add_argument("--top-k", type=int, default=8)
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--space", default="fast", help="default adds hidden/attention losses (3-5x slower)")
    ap.add_argument("--no-full-search", action="store_true", help="skip the all-data search (no cost ratio)")
    ap.add_argument("--no-other-algorithms", action="store_true")
    ap.add_argument("--resume", metavar="DIR", default=None,
                    help="continue an earlier run in DIR (its NAS_HOME, printed at the start): finished stages, seed "
                         "runs and searches are kept; a search finished earlier is timed by its trials' timestamps")
    args = ap.parse_args()
    if args.quick:
        args.rows, args.samples, args.top_k, args.seeds = args.rows or 1000, 6, 3, 1
        args.epochs, args.full_epochs, args.reports, args.fraction = 3.0, 2.0, 2, 0.2
        args.no_other_algorithms = True

    import numpy as np
    import ray

    from nas.hpo import ALGORITHMS
    from nas.hpo.space import load_hpo_space
    from nas.pipeline import job_context, prepare
    from nas.service.cluster import init_ray
    from nas.spec.job import parse_spec
    from nas.stages import hpo as hpo_stage
    from nas.stages import teacher as teacher_stage
    from nas.stages.hpo import run_sample_search
    from nas.store import Store
    from nas.store.records import metric_value
    from nas.workers.hpo import HPOTask, full_retrain_task

    if args.resume:
        home = pathlib.Path(args.resume)
        if not (home / "nas.db").is_file():
            print(f"error: --resume: no nas.db in {home}", file=sys.stderr)
            raise SystemExit(2)
    else:
        home = pathlib.Path(tempfile.mkdtemp(prefix="nas-bench-hpo-"))
    os.environ["NAS_HOME"] = str(home)
    print(f"NAS_HOME {home} (continue an interrupted run with --resume {home})", flush=True)
    L, H, A, F = (int(x) for x in args.shape.split(","))
    shape = {"layers": L, "hidden": H, "heads": A, "ffn": F}
    dataset = {"name": args.dataset, **({"max_rows": args.rows} if args.rows else {})}
    spec_d = {
        "name": "bench-hpo", "teacher": "minilm-l6", "dataset": dataset, "search_space": "bert_small",
        "latency": {"seq_len": args.seq, "threads": 2},
        "budgets": {"trials": 1, "epochs": args.full_epochs, "max_seq_len": args.seq,
                    "teacher_epochs": args.teacher_epochs},
        "hpo": {"algorithm": args.algorithm, "scheduler": "asha", "space": args.space, "shapes": [shape],
                "samples": args.samples, "sample_fraction": args.fraction, "epochs": args.epochs,
                "reports": args.reports, "top_k": args.top_k, "full_epochs": args.full_epochs, "max_concurrent": 2},
        "seed": 0,
    }
    spec = parse_spec(spec_d)
    prep = prepare(spec)
    store = Store(f"sqlite:///{home / 'nas.db'}")

    def job_named(name: str, finished_samples: int | None = None) -> int:
        """The earlier run's job of this name when resuming (for a search: only one whose trials all finished),
        else a new one."""
        for j in sorted(store.list_jobs(), key=lambda j: -j["id"]) if args.resume else []:
            if j["name"] != name:
                continue
            if finished_samples is None:
                return j["id"]
            states = [t["state"] for t in store.trials(j["id"], kind="hpo-sample")]
            if len(states) >= finished_samples and all(s in ("COMPLETE", "PRUNED") for s in states):
                return j["id"]
        return store.create_job(name, spec.model_dump(mode="json"), status="RUNNING")

    def search_s(job: int, measured: float) -> float:
        """Seconds of a search: as measured in this run, or (finished in an earlier run) first start to last finish."""
        if measured > 0:
            return measured
        ts = store.trials(job, kind="hpo-sample")
        return (max(t["finished_at"] for t in ts) - min(t["started_at"] for t in ts)).total_seconds()

    job_id = job_named(spec.name)
    t0 = time.perf_counter()
    ctx = job_context(prep, store, job_id, progress=False)
    teacher_stage.run(ctx, store)
    print(f"teacher ready in {time.perf_counter() - t0:.0f} s; {len(ctx.train_idx)} train rows", flush=True)
    init_ray(num_cpus=2)
    params = load_hpo_space(args.space)

    # 1-2: the stage as a job runs it
    summary = hpo_stage.run(ctx, store)[0]
    print("stage summary:", json.dumps(summary), flush=True)

    # 3: seeds for the defaults and the best tuned configuration (seed 0 is the stage's own re-training)
    full = [t for t in store.trials(job_id, kind="hpo-full") if t["state"] == "COMPLETE"]
    default_t = next(t for t in full if t["config"]["label"] == "default")
    tuned_t = max((t for t in full if t["config"]["label"] != "default"),
                  key=lambda t: metric_value(t, "accuracy", "dev", "final"))
    def task_for(sample_idx: list[int]) -> HPOTask:
        return HPOTask(shape=shape, defaults=prep.space.distill.model_dump(), sample_idx=sample_idx, epochs=args.epochs,
                       reports=args.reports, full_epochs=args.full_epochs, threads=1)

    base = task_for([])
    task = ray.remote(num_cpus=1)(full_retrain_task)
    runs = {"default": [metric_value(default_t, "accuracy", "test", "final")],
            "tuned": [metric_value(tuned_t, "accuracy", "test", "final")]}
    seed_file = home / "seed_runs.json"  # seed runs are not trials of the job; kept here for --resume
    seed_done = json.loads(seed_file.read_text()) if seed_file.is_file() else {}
    refs = {}
    for seed in range(1, args.seeds):
        for label, t in (("default", default_t), ("tuned", tuned_t)):
            if f"{label}-{seed}" not in seed_done:
                refs[task.remote(ctx, base, t["config"]["hparams"], seed)] = (label, seed)
    for ref, (label, seed) in refs.items():
        seed_done[f"{label}-{seed}"] = ray.get(ref)["test"]["accuracy"]
        seed_file.write_text(json.dumps(seed_done))
        print(f"seed run {label} (seed {seed}): test {seed_done[f'{label}-{seed}']:.4f}", flush=True)
    for seed in range(1, args.seeds):
        for label in ("default", "tuned"):
            runs[label].append(seed_done[f"{label}-{seed}"])
    default_acc, tuned_acc = float(np.mean(runs["default"])), float(np.mean(runs["tuned"]))

    # 4: the same search on all of train, for the cost ratio
    from nas.spec.job import HPOSettings

    full_search_s = None
    if not args.no_full_search:
        hpo_full = HPOSettings(**{**spec_d["hpo"], "sample_fraction": 1.0})
        job_full = job_named("bench-hpo-full-search", args.samples)
        full_search_s = search_s(job_full, run_sample_search(store, ctx, task_for(list(ctx.train_idx)), hpo_full,
                                                             params, home / "ray_results", job_id=job_full))
        print(f"full-data search: {full_search_s:.0f} s", flush=True)

    # 5: every other algorithm on the same sample search
    per_algorithm = {args.algorithm: {"best_sample_acc": max(
        metric_value(t, "accuracy", "dev", "proxy") or 0 for t in store.trials(job_id, kind="hpo-sample")),
        "search_s": summary["sample_search_s"]}}
    if not args.no_other_algorithms:
        from nas.data import stratified_sample

        train_idx = np.asarray(ctx.train_idx)
        labels = np.asarray(ctx.labels)
        sample_idx = train_idx[stratified_sample(labels[train_idx], args.fraction, 0)].tolist()
        for alg in ALGORITHMS:
            if alg == args.algorithm:
                continue
            hpo_a = HPOSettings(**{**spec_d["hpo"], "algorithm": alg})
            job_a = job_named(f"bench-hpo-{alg}", args.samples)
            s_a = search_s(job_a, run_sample_search(store, ctx, task_for(sample_idx), hpo_a, params,
                                                    home / "ray_results", job_id=job_a))
            trials = store.trials(job_a, kind="hpo-sample")
            per_algorithm[alg] = {"best_sample_acc": max((metric_value(t, "accuracy", "dev", "proxy") or 0)
                                                         for t in trials) if trials else None,
                                  "search_s": s_a, "trials": len(trials),
                                  "pruned": sum(t["state"] == "PRUNED" for t in trials)}
            print(f"{alg}: {json.dumps(per_algorithm[alg])}", flush=True)

    samples = store.trials(job_id, kind="hpo-sample")
    out = {
        "dataset": args.dataset + (f"[{args.rows}]" if args.rows else ""), "shape": f"L{L}-H{H}-A{A}-F{F}",
        "train_rows": len(ctx.train_idx), "teacher_test": ctx.teacher["test"]["accuracy"],
        "default_acc": default_acc, "tuned_acc": tuned_acc, "gain": tuned_acc - default_acc, "seeds": args.seeds,
        "default_runs": runs["default"], "tuned_runs": runs["tuned"], "tuned_hparams": tuned_t["config"]["hparams"],
        "default_dev": summary["default_dev"], "tuned_dev": summary["tuned_dev"],
        "sample_fraction": args.fraction, "samples": len(samples),
        "pruned": sum(t["state"] == "PRUNED" for t in samples),
        "rank_corr_sample_vs_full": summary["rank_corr_sample_vs_full"], "rank_n": summary["rank_n"],
        "sample_search_s": summary["sample_search_s"], "full_search_s": full_search_s,
        "cost_ratio": (summary["sample_search_s"] / full_search_s) if full_search_s else None,
        "full_retrain_s": summary["full_retrain_s"], "algorithm": args.algorithm,
        "algorithms_run": sorted(per_algorithm), "per_algorithm": per_algorithm,
        "wall_s": time.perf_counter() - t0,
    }
    ray.shutdown()
    print(json.dumps(out))


if __name__ == "__main__":
    main()
