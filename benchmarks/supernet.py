"""Issue 3 figures: supernet extraction exactness, proxy-vs-final ranking, AutoDisc assistant, two-step vs one-step
distillation at equal student steps, retention at >= 10x measured speed. Last line of output: one JSON object.

    python benchmarks/supernet.py                 # all of Rotten Tomatoes fresh/rotten, seq 64
    python benchmarks/supernet.py --rows 3000     # a stratified slice (what fits a short session)
    python benchmarks/supernet.py --quick         # a tiny smoke run (< 3 min with a cached teacher)
    python benchmarks/supernet.py --only-ranking  # extraction and proxy-vs-final ranking only (--skip-ranking: the rest)

Everything is measured in this one run on this machine: the plain recipe (students sliced from the fine-tuned teacher,
0.5 KL(T=2) + 0.5 CE) is run beside ours on the same shapes, seeds, data and step counts. Two-step students are run
twice: sliced from the supernet (two_step) and, where the shape fits inside the assistant, sliced from the distilled
assistant itself (two_step_ainit; a job's search.final.student_init: assistant), and from a second-round supernet
trained from the distilled assistant over the student shapes inside it (two_step_round2; a job's
search.autodisc.second_round). two_step_tinit and one_step_tinit are ours with every student sliced from the fine-tuned
teacher instead (a job's search.final.student_init: teacher): the plain recipe's start, ours otherwise (lr by size,
transfer set, assistant targets for two-step). `--variants` picks which run.
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
# student finals on the small shapes: two-step sliced from the supernet / from the distilled assistant / from a
# second-round supernet trained from the assistant; one-step (teacher targets, supernet slice); two-step and one-step
# sliced from the fine-tuned teacher; the plain recipe
VARIANTS = ("two_step", "two_step_ainit", "two_step_round2", "one_step", "two_step_tinit", "one_step_tinit", "plain")
sys.path.insert(0, str(ROOT))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--rows", type=int, default=None, help="stratified slice of the dataset (default: all)")
    ap.add_argument("--dataset", default="rotten-tomatoes")
    ap.add_argument("--seq", type=int, default=64)
    ap.add_argument("--teacher-epochs", type=float, default=2.0)
    ap.add_argument("--supernet-steps", type=int, default=None)
    ap.add_argument("--final-epochs", type=float, default=2.0)
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--kendall-shapes", type=int, default=12)
    ap.add_argument("--kendall-seeds", type=int, default=2,
                    help="final trainings per ranked shape: kendall_tau is against their mean, and with >= 2 the "
                         "finals' own seed-to-seed tau is printed as the ceiling any proxy can reach")
    ap.add_argument("--supernet-file", default=None,
                    help="save the trained supernet here, or load it from here when the file exists (same arguments)")
    ap.add_argument("--probe-rows", type=int, default=2000,
                    help="train rows (outside the rewiring slice) the probe proxy's logistic regression is fitted on")
    ap.add_argument("--only-ranking", action="store_true",
                    help="stop after extraction and the proxy-vs-final ranking (no assistant, no two-step comparison)")
    ap.add_argument("--skip-ranking", action="store_true",
                    help="leave out the proxy-vs-final ranking (its finals are the costliest part: 2 x 12 distillations "
                         "on all of RT) and measure only the assistant, two-step and retention figures")
    ap.add_argument("--augment", type=int, default=2, help="teacher-labelled copies per train text for the final "
                                                             "students of ours (0: off); the plain recipe gets none")
    ap.add_argument("--lr-teacher-size", type=float, default=5e-5,
                    help="final students of ours get lr_by_size(distill lr, this, share of the teacher's encoder "
                         "weights), as search.final.lr_teacher_size does in a job; 0: the distill lr for every shape "
                         "(what runs before 2026-11-23 12:40 did). The plain recipe keeps the distill lr")
    ap.add_argument("--small",
                    default="L1-H128-A2-F256,L1-H128-A4-F512,L2-H128-A4-F512,L3-H128-A4-F512,L1-H256-A8-F1024",
                    help="student shapes (comma-separated keys) of the two-step comparison and the retention figure; "
                         "retention counts those measured at >= 10x the teacher's speed")
    ap.add_argument("--soft", default="average", choices=["assistant", "average"],
                    help="two-step soft targets: the assistant's, or the mean of teacher and assistant logits")
    ap.add_argument("--variants", default=None,
                    help="student finals to run on the small shapes (comma-separated): " + ", ".join(VARIANTS)
                         + "; default all (--quick: all but the teacher-slice ones, to stay under 3 minutes)")
    args = ap.parse_args()
    if args.variants is None:
        args.variants = ",".join(v for v in VARIANTS if not (args.quick and v.endswith("_tinit")))
    variants = [v.strip() for v in args.variants.split(",") if v.strip()]
    if not variants or any(v not in VARIANTS for v in variants):
        ap.error(f"--variants: choose from {', '.join(VARIANTS)}; found {args.variants!r}")
    if args.quick:
        args.rows = args.rows or 600
        args.teacher_epochs, args.final_epochs, args.seeds = 2.0, 1.0, 1
        args.kendall_shapes = min(args.kendall_shapes, 8)  # a smoke run: the >= 12-shape figure is the full run's
        args.kendall_seeds = 1
        args.supernet_steps = args.supernet_steps or 20
        args.augment = min(args.augment, 1)

    import numpy as np
    import torch
    from scipy.stats import kendalltau
    from transformers import BertForSequenceClassification
    from transformers.utils import logging as hf_logging

    from nas.distill.augment import AugmentSettings, teacher_transfer_set, with_transfer_set
    from nas.distill.evaluate import predict_logits, scores
    from nas.distill.loop import DistillSettings, distill, lr_by_size, steps_for
    from nas.distill.proxy import evaluate_shape, probe_logits
    from nas.distill.supernet import train_supernet
    from nas.latency.measure import MeasureSettings, measure_interleaved, measure_latency
    from nas.search.space import all_shapes, clip_space, sample_shape, union_space
    from nas.stages.supernet.autodisc import Candidate, assistant_candidates, rank_candidates
    from nas.students.bert_slice import count_parameters, extract_subnet, shape_config, supernet_forward
    from nas.students.rewire import rewire
    from nas.students.shape import Shape
    from nas.teachers.load import load_teacher

    hf_logging.set_verbosity_error()
    torch.set_num_threads(os.cpu_count() or 1)
    t_start = time.perf_counter()
    stages: dict[str, float] = {}  # wall seconds per stage, to see where a run's time goes
    t_lap = [t_start]

    def lap(name: str) -> None:
        now = time.perf_counter()
        stages[name] = round(stages.get(name, 0.0) + now - t_lap[0], 1)
        t_lap[0] = now

    from task_setup import classification_task

    task = classification_task(args.dataset, args.rows, args.seq, args.teacher_epochs)
    space, ds, tok, tensors, splits, labels = task.space, task.ds, task.tok, task.tensors, task.splits, task.labels
    info, teacher, t_logits, dev, test = task.info, task.teacher, task.t_logits, task.dev, task.test
    lat_settings = MeasureSettings(seq_len=args.seq, threads=os.cpu_count() or 1)
    t_lat = measure_latency(teacher, lat_settings)["p50_ms"]
    lap("teacher")
    print(f"teacher: dev {info['dev']['accuracy']:.4f} test {info['test']['accuracy']:.4f} p50 {t_lat:.2f} ms", flush=True)

    # supernet: rewire on held-out train rows, sandwich training over student + assistant shapes
    rng = np.random.default_rng(0)
    train = np.asarray(splits["train"])
    held = np.sort(rng.choice(train, size=min(256, len(train) // 5), replace=False))
    sn_train = np.setdiff1d(train, held)
    full_space = union_space(space.student, space.assistant)
    settings = DistillSettings(**{**space.distill.model_dump(), "lr": 2e-4})
    sn_steps = args.supernet_steps or steps_for(len(sn_train), settings.batch_size, 2.0, None)
    from tqdm import tqdm

    def trained_supernet(model, targets, space_, path: pathlib.Path | None, seed: int, desc: str):
        """Rewire `model` and sandwich-train it over `space_` on `targets` in place, or load the state an earlier run with
        the same arguments saved at `path`."""
        if path is not None and path.is_file():
            model.load_state_dict(torch.load(path))
            print(f"{desc} loaded from {path}", flush=True)
        else:
            rewire(model, tensors, labels, held)
            bar = tqdm(total=sn_steps, desc=desc, unit="step", mininterval=10)
            train_supernet(model, targets, tensors, labels, sn_train, space_, sn_steps, settings, n_random=2,
                           hidden_weight=1.0, seed=seed,
                           on_step=lambda s, l: (bar.update(1), bar.set_postfix(loss=f"{l:.3f}", refresh=False)))
            bar.close()
            if path is not None:
                path.parent.mkdir(parents=True, exist_ok=True)
                torch.save(model.state_dict(), path)
        return model.eval()

    saved = pathlib.Path(args.supernet_file) if args.supernet_file else None
    t0 = time.perf_counter()
    supernet = trained_supernet(load_teacher(info), t_logits, full_space, saved, 0, "supernet")
    supernet_train_s = time.perf_counter() - t0
    lap("supernet")

    # 1. extraction equals slicing
    diffs = []
    batch = {k: v[dev[:16]] for k, v in tensors.items()}
    for _ in range(20):
        s = sample_shape(full_space, rng)
        with torch.inference_mode():
            a = supernet_forward(supernet, s, batch)[0]
            b = extract_subnet(supernet, s)(**batch).logits
        diffs.append(float((a - b).abs().max()))

    transfer = None
    if args.augment and not args.only_ranking:
        t0 = time.perf_counter()
        transfer = teacher_transfer_set(teacher, tok, ds, train, args.seq, AugmentSettings(copies=args.augment),
                                        cache_dir=pathlib.Path(info["logits_path"]).parent)
        print(f"transfer set: {len(transfer['source'])} rows ({time.perf_counter() - t0:.0f} s)", flush=True)
    lap("extract_and_transfer_set")

    def final_student(shape: Shape, soft: torch.Tensor, seed: int, source: torch.nn.Module, transfer_soft=None,
                      augment: bool = False, plain: bool = False) -> tuple[float, float, torch.nn.Module]:
        """Distil `shape` sliced from `source` (the supernet, the distilled assistant or the teacher for ours, the teacher
        for the plain recipe); returns dev and test accuracy and the model."""
        model = extract_subnet(source, shape)
        st = DistillSettings(**space.distill.model_dump())
        if not plain:  # ours; the plain recipe keeps one lr for every shape
            st.lr = lr_by_size(st.lr, args.lr_teacher_size or None, shape.share_of(Shape.of_config(teacher.config)))
        x, y, sf, hard = with_transfer_set(tensors, labels, soft, train, transfer if augment else None, transfer_soft)
        steps = steps_for(len(y), st.batch_size, args.final_epochs, None)
        distill(model, x, y, sf, st, steps, seed=seed, hard_mask=hard)
        d = scores(predict_logits(model, {k: v[dev] for k, v in tensors.items()}), labels[dev])["accuracy"]
        t = scores(predict_logits(model, {k: v[test] for k, v in tensors.items()}), labels[test])["accuracy"]
        return d, t, model

    # 2. proxy vs final ranking over shapes spread across sizes
    if args.only_ranking and args.skip_ranking:
        ap.error("--only-ranking and --skip-ranking exclude each other")
    t0 = time.perf_counter()

    def n_params(s: Shape) -> int:  # exact, without allocating or copying weights (the space holds 400 shapes)
        with torch.device("meta"):
            return count_parameters(BertForSequenceClassification(shape_config(supernet.config, s)))

    shapes = sorted(all_shapes(space.student), key=n_params)
    pick = [shapes[i] for i in np.unique(np.round(np.linspace(0, len(shapes) - 1, args.kendall_shapes)).astype(int))]

    def rank(t_begin: float) -> dict:
        proxy = [evaluate_shape(supernet, s, tensors, labels, dev) for s in pick]
        search_s = time.perf_counter() - t_begin
        # the probe proxy: a logistic regression on each shape's own inherited features, fitted on train rows
        t0 = time.perf_counter()
        probe_idx = np.sort(np.random.default_rng(1).choice(sn_train, size=min(args.probe_rows, len(sn_train)), replace=False))
        probe = [float((probe_logits(supernet, s, tensors, labels, probe_idx, dev).argmax(1) == labels[dev]).float().mean())
                 for s in pick]
        probe_s = time.perf_counter() - t0
        lap("proxies")
        runs = [[final_student(s, t_logits, seed, supernet)[0] for s in tqdm(pick, desc=f"final (ranking, seed {seed})",
                                                                                  mininterval=10)]
                for seed in range(max(1, args.kendall_seeds))]
        finals = [float(v) for v in np.mean(runs, axis=0)]
        lap("ranking_finals")
        tau_k = float(kendalltau(proxy, finals).statistic)
        ranking = {"kendall_tau": tau_k, "kendall_tau_seed0": float(kendalltau(proxy, runs[0]).statistic),
                   # how well one seed's finals rank the other's: the ceiling for any proxy scored against these finals
                   "kendall_tau_final_vs_final": (float(kendalltau(runs[0], runs[1]).statistic) if len(runs) > 1 else None),
                   "kendall_tau_probe": float(kendalltau(probe, finals).statistic),
                   "kendall_tau_probe_seed0": float(kendalltau(probe, runs[0]).statistic), "probe_s_per_shape": probe_s / len(pick),
                   "shapes": [s.key for s in pick], "proxy_dev": proxy, "probe_dev": probe, "final_dev": finals,
                   "final_dev_runs": runs, "search_s": search_s}
        # printed as soon as known: a run stopped later still leaves its ranking figure behind
        print("kendall: " + json.dumps(ranking), flush=True)
        return ranking

    ranking = {} if args.skip_ranking else rank(t0)
    search_s = ranking.pop("search_s", None)
    if args.only_ranking:
        print(json.dumps({"dataset": args.dataset, "rows": len(ds.labels), "seq_len": args.seq,
                          "teacher_dev_acc": info["dev"]["accuracy"], "teacher_test_acc": info["test"]["accuracy"],
                          "extract_max_abs_diff": max(diffs), "n_subnets": len(all_shapes(full_space)), **ranking,
                          "supernet_steps": sn_steps, "supernet_train_s": supernet_train_s, "search_s": search_s,
                          "stage_s": stages, "wall_s": time.perf_counter() - t_start}))
        return

    # 3. AutoDisc assistant
    t_params = count_parameters(teacher)
    cands = []
    for s in assistant_candidates(space.assistant, Shape.of_config(teacher.config), space.student):
        p = evaluate_shape(supernet, s, tensors, labels, dev)
        cands.append(Candidate(s, p, n_params(s) / t_params))
    ranked = rank_candidates(cands, 0.2)
    asst_shape = ranked[0].shape
    lap("assistant_search")

    # 4. two-step vs one-step (equal student steps) and the plain recipe, on small shapes, several seeds
    small = [Shape.from_key(k) for k in args.small.split(",")]
    speed = {}
    for runtime in ("eager", "onnx"):
        rs = MeasureSettings(**{**lat_settings.__dict__, "runtime": runtime, "max_runs": 90 if args.quick else 300})
        rows = measure_interleaved({"teacher": teacher, **{s.key: extract_subnet(supernet, s) for s in small}}, rs,
                                   rounds=3 if args.quick else 5, reference="teacher")
        speed[runtime] = {k: {"p50_ms": r["p50_ms"], "speedup": r["speedup"]} for k, r in rows.items()}
        print(f"speed ({runtime}): " + json.dumps(speed[runtime]), flush=True)
    lat = {s.key: speed["eager"][s.key]["p50_ms"] for s in small}
    lap("latency")
    # two_step: students sliced from the supernet, taught by the assistant; two_step_ainit: the same, but sliced from the
    # distilled assistant itself (search.final.student_init: assistant) where the shape fits inside it
    res = {k: {s.key: [] for s in small} for k in variants}
    # the assistant is distilled once (teacher -> assistant, with the transfer set) and teaches every seed's students
    a_dev, a_test, a_model = final_student(asst_shape, t_logits, 100, supernet, augment=True)
    asst_acc = [a_test]
    a_logits = predict_logits(a_model, tensors)
    a_transfer = predict_logits(a_model, transfer["tensors"]) if transfer is not None else None
    if args.soft == "average":
        a_logits = (a_logits + t_logits) / 2
        a_transfer = (a_transfer + transfer["logits"]) / 2 if transfer is not None else None
    print(f"assistant {asst_shape.key}: dev {a_dev:.4f} test {a_test:.4f}", flush=True)
    lap("assistant_final")
    round2 = None
    if "two_step_round2" in variants:
        # AutoDisc's second round (search.autodisc.second_round): a supernet over the student shapes inside the
        # assistant, initialised from the distilled assistant (rewired again) and trained on the students' soft targets
        r2_space, _ = clip_space(space.student, asst_shape)
        r2_saved = saved.with_name(saved.stem + f"-round2-{asst_shape.key}.pt") if saved is not None else None
        t0 = time.perf_counter()
        round2 = trained_supernet(copy.deepcopy(a_model), a_logits, r2_space, r2_saved, 1, "supernet (round 2)")
        supernet_round2_s = time.perf_counter() - t0
        lap("supernet_round2")
    for seed in range(args.seeds):
        for s in small:
            if "two_step" in res:
                res["two_step"][s.key].append(final_student(s, a_logits, seed, supernet, a_transfer, augment=True)[1])
            if "two_step_ainit" in res and s.fits_in(asst_shape):
                res["two_step_ainit"][s.key].append(
                    final_student(s, a_logits, seed, a_model, a_transfer, augment=True)[1])
            if "two_step_round2" in res and s.fits_in(asst_shape):
                res["two_step_round2"][s.key].append(
                    final_student(s, a_logits, seed, round2, a_transfer, augment=True)[1])
            if "one_step" in res:
                res["one_step"][s.key].append(final_student(s, t_logits, seed, supernet, augment=True)[1])
            if "two_step_tinit" in res:
                res["two_step_tinit"][s.key].append(
                    final_student(s, a_logits, seed, teacher, a_transfer, augment=True)[1])
            if "one_step_tinit" in res:
                res["one_step_tinit"][s.key].append(final_student(s, t_logits, seed, teacher, augment=True)[1])
            if "plain" in res:
                res["plain"][s.key].append(final_student(s, t_logits, seed, teacher, plain=True)[1])
        last = {k: {kk: vv[-1] for kk, vv in v.items() if vv} for k, v in res.items()}
        print(f"seed {seed}: " + json.dumps(last), flush=True)
    mean = {k: {kk: float(np.mean(vv)) for kk, vv in v.items() if vv} for k, v in res.items()}
    lap("two_step_finals")
    def versus(kind: str, base: str = "one_step") -> list[float]:  # paired by shape, where both ran
        if kind not in mean or base not in mean:
            return []
        return [mean[kind][s.key] - mean[base][s.key] for s in small if s.key in mean[kind] and s.key in mean[base]]

    deltas, deltas_ainit, deltas_round2 = (versus(k) for k in ("two_step", "two_step_ainit", "two_step_round2"))
    deltas_tinit = versus("two_step_tinit", "one_step_tinit")  # two-step vs one-step, both sliced from the teacher
    t_test = info["test"]["accuracy"]
    def retention(kind: str, runtime: str = "eager") -> float | None:
        fast = [s for s in small if speed[runtime][s.key]["speedup"] >= 10]
        if not fast:
            return None
        vals = [mean[kind][s.key] for s in fast if s.key in mean.get(kind, {})]
        return max(vals) / t_test if vals else None

    out = {
        "dataset": args.dataset, "rows": len(ds.labels), "seq_len": args.seq, "seeds": args.seeds,
        "teacher_dev_acc": info["dev"]["accuracy"], "teacher_test_acc": t_test, "teacher_p50_ms": t_lat,
        "extract_max_abs_diff": max(diffs), "n_subnets": len(all_shapes(full_space)),
        **{k: v for k, v in ranking.items() if k != "shapes"}, "kendall_shapes": [s.key for s in pick],
        "assistant": {"shape": asst_shape.key, "tau": ranked[0].tau, "P": ranked[0].metric, "scale": ranked[0].scale,
                      "test_acc_mean": float(np.mean(asst_acc))},
        "variants": variants,
        "two_step_wins": sum(d > 0 for d in deltas), "two_step_of": len(deltas),
        "mean_delta": float(np.mean(deltas)) if deltas else None,
        "two_step_ainit_wins": sum(d > 0 for d in deltas_ainit), "two_step_ainit_of": len(deltas_ainit),
        "mean_delta_ainit": float(np.mean(deltas_ainit)) if deltas_ainit else None,
        "two_step_round2_wins": sum(d > 0 for d in deltas_round2), "two_step_round2_of": len(deltas_round2),
        "mean_delta_round2": float(np.mean(deltas_round2)) if deltas_round2 else None,
        "supernet_round2_s": supernet_round2_s if round2 is not None else None,
        "two_step_tinit_wins": sum(d > 0 for d in deltas_tinit), "two_step_tinit_of": len(deltas_tinit),
        "mean_delta_tinit": float(np.mean(deltas_tinit)) if deltas_tinit else None,
        # ours against the plain recipe, paired by shape: the product's best variant that ran vs what it must beat
        "versus_plain": {k: float(np.mean(d)) for k in mean if k != "plain" and (d := versus(k, "plain"))},
        "per_shape": {s.key: {"speedup": speed["eager"][s.key]["speedup"], "speedup_onnx": speed["onnx"][s.key]["speedup"],
                              **{k: mean[k][s.key] for k in mean if s.key in mean[k]}} for s in small},
        "speed": speed, "augment_copies": args.augment, "soft_targets": args.soft,
        "retention_at_10x": retention("two_step"), "retention_at_10x_one_step": retention("one_step"),
        "retention_at_10x_ainit": retention("two_step_ainit"),
        "retention_at_10x_round2": retention("two_step_round2"),
        "retention_at_10x_tinit": retention("two_step_tinit"),
        "retention_at_10x_one_step_tinit": retention("one_step_tinit"),
        "retention_at_10x_plain": retention("plain"),
        "retention_at_10x_onnx": retention("two_step", "onnx"), "retention_at_10x_onnx_plain": retention("plain", "onnx"),
        "best_retention": {k: max(mean[k].values()) / t_test for k in mean if mean[k]},
        "supernet_steps": sn_steps, "supernet_train_s": supernet_train_s, "search_s": search_s,
        "stage_s": stages, "wall_s": time.perf_counter() - t_start,
    }
    print(json.dumps(out))


if __name__ == "__main__":
    main()
