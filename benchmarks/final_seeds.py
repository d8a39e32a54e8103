"""`search.final.seeds` on the service's own schedule: each final student trained N times from its slice, with seeds
0..N-1, and the average of their weights kept. Is the kept model better than a typical member (the median seed), and
than the member the seed would have handed out alone? Last line of output: one JSON object.

    python benchmarks/final_seeds.py            # all of Rotten Tomatoes, MiniLM-L6 teacher, 3 finals x 5 seeds
    python benchmarks/final_seeds.py --quick    # a 1,000-row slice, 1 final x 2 seeds (a smoke run)

The job is the demo's (examples/rt_demo.yaml: rewired MiniLM-L6 teacher -> supernet -> AutoDisc assistant -> NSGA-II
-> finals) on more data (--max-rows, --data-fraction), with final.seeds N. It runs in --workdir and resumes there (a
killed run's trained members are kept). Every member's dev and test scores are the job's own stored metrics
(seed{i}_accuracy); the kept model's are its `accuracy`. Member 0 is the final a job without `seeds` trains.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import statistics
import sys
import time

import yaml

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))


def job_spec(args) -> dict:
    spec = yaml.safe_load((ROOT / "examples" / "rt_demo.yaml").read_text())
    spec["name"] = f"final-seeds-{args.seeds}" + ("-quick" if args.quick else "")
    spec["dataset"] = {"name": "rotten-tomatoes", **({"max_rows": args.max_rows} if args.max_rows else {})}
    spec["budgets"].update(data_fraction=args.data_fraction)
    spec["search"]["final"].update(top_k=args.top_k, epochs=args.final_epochs, seeds=args.seeds)
    spec["compute"] = {"precision": args.precision}
    return spec


def final_rows(store, job_id: int, seeds: int, speed: dict) -> list[dict]:
    """Per final student: its members' dev and test scores, their median and the seed-0 member, and the kept average."""
    from nas.store.records import metric_value, seed_members
    from nas.students.shape import Shape

    rows = []
    for t in store.trials(job_id, kind="student", state="COMPLETE"):
        if metric_value(t, "accuracy", "test", "final") is None:
            continue
        row = {"trial": t["number"], "shape": Shape.from_dict(t["config"]["shape"]).key,
               "speedup": round(speed.get(t["number"], 0.0), 2), "member_s": member_seconds(t, seeds)}
        for split in ("dev", "test"):
            members = seed_members(t, "accuracy", split)
            kept = metric_value(t, "accuracy", split, "final")
            row[split] = {"members": [round(m, 4) for m in members], "median": round(statistics.median(members), 4),
                          "seed0": round(members[0], 4), "best": round(max(members), 4), "average": round(kept, 4),
                          "average_minus_median": round(100 * (kept - statistics.median(members)), 2),
                          "members_below_average": sum(m < kept for m in members)}
        rows.append(row)
    return sorted(rows, key=lambda r: -r["speedup"])


def member_seconds(trial: dict, seeds: int) -> list[float]:
    """Seconds between one member's stored dev score and the next's: members 1..N-1's training and scoring."""
    done = {m["name"]: m["created_at"] for m in trial["metrics"]
            if m["split"] == "dev" and m["source"] == "final" and m.get("created_at")}
    stamps = [done.get(f"seed{i}_accuracy") for i in range(seeds)]
    return [round((b - a).total_seconds(), 1) for a, b in zip(stamps, stamps[1:]) if a and b]


def greedy_soups(store, job_id: int, seeds: int) -> dict:
    """Per final: the "greedy soup" (Wortsman et al., 2022) of its stored members, against the uniform average the
    service keeps and the member best on dev. Members sorted by dev, best first; each joins the soup only if the soup's
    dev accuracy does not drop. Dev chooses, so only its test figure is unbiased. {shape: {"greedy": {...}, ...}}."""
    import torch
    from transformers import AutoTokenizer

    from large_teacher import job_sources
    from nas.data import split_indices, tokenize
    from nas.distill.evaluate import predict_logits
    from nas.distill.soup import average_state_dicts
    from nas.store.records import metric_value
    from nas.students import load_student
    from nas.students.shape import Shape

    spec, ds, _, src = job_sources(store, job_id)
    tensors = tokenize(AutoTokenizer.from_pretrained(src["dir"]), ds, spec.budgets.max_seq_len)
    labels = torch.as_tensor(ds.labels)
    splits = {k: torch.as_tensor(v) for k, v in split_indices(ds.labels, spec.seed).items()}
    out = {}
    for t in store.trials(job_id, kind="student", state="COMPLETE"):
        arts = {a["kind"]: a["path"] for a in t["artefacts"]}
        if f"seed{seeds - 1}_weights" not in arts:
            continue
        model = load_student(arts["model"])
        members = [torch.load(arts[f"seed{i}_weights"], map_location="cpu")["state"] for i in range(seeds)]

        def acc(members_in: list[int], split: str) -> float:
            model.load_state_dict(average_state_dicts(members[i] for i in members_in))
            idx = splits[split]
            logits = predict_logits(model, {k: v[idx] for k, v in tensors.items()})
            return round(float((logits.argmax(-1) == labels[idx]).float().mean()), 4)

        order = sorted(range(seeds), key=lambda i: -metric_value(t, f"seed{i}_accuracy", "dev", "final"))
        soup, best_dev = [order[0]], acc([order[0]], "dev")
        for i in order[1:]:
            dev = acc(soup + [i], "dev")
            if dev >= best_dev:
                soup, best_dev = soup + [i], dev
        out[Shape.from_dict(t["config"]["shape"]).key] = {
            "greedy": {"members": sorted(soup), "dev": best_dev, "test": acc(soup, "test")},
            "best_dev_member": {"member": order[0], "dev": acc([order[0]], "dev"), "test": acc([order[0]], "test")},
            "uniform": {"dev": acc(list(range(seeds)), "dev"), "test": acc(list(range(seeds)), "test")}}
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", type=int, default=5, help="members per final (search.final.seeds; >= 2)")
    ap.add_argument("--top-k", type=int, default=3, help="finals (search.final.top_k)")
    ap.add_argument("--final-epochs", type=float, default=2.0)
    ap.add_argument("--max-rows", type=int, default=0, help="a stratified slice of Rotten Tomatoes (0: all 10,662)")
    ap.add_argument("--data-fraction", type=float, default=1.0, help="of train, what the students train on")
    ap.add_argument("--precision", default="fp32", choices=["fp32", "bf16"])
    ap.add_argument("--workdir", default=str(ROOT / ".nas" / "bench-final-seeds"), help="NAS_HOME (resumable)")
    ap.add_argument("--quick", action="store_true", help="a 1,000-row slice, 1 final x 2 seeds, 1 epoch")
    args = ap.parse_args()
    if args.quick:
        args.seeds, args.top_k, args.final_epochs, args.max_rows = 2, 1, 1.0, 1000
    if args.seeds < 2:
        ap.error(f"--seeds: at least 2 members to average, got {args.seeds}")
    if args.top_k < 1:
        ap.error(f"--top-k: at least 1 final, got {args.top_k}")
    if not 0 < args.data_fraction <= 1:
        ap.error(f"--data-fraction: in (0, 1], got {args.data_fraction}")

    from large_teacher import stage_walls
    from task_setup import bench_workdir, run_or_resume

    workdir = bench_workdir(args.workdir, args.quick, ROOT)
    from nas.latency.measure import device_fingerprint
    from nas.results.front import front_rows
    from nas.store import Store
    from nas.store.records import metric_value

    t0 = time.perf_counter()
    store = Store(f"sqlite:///{workdir / 'nas.db'}")
    job_id = run_or_resume(job_spec(args), store)
    trials = store.trials(job_id)
    teacher = next(t for t in trials if t["kind"] == "teacher")
    f = front_rows(store, job_id, trials)
    rows = final_rows(store, job_id, args.seeds, {r["trial"]: r["speedup"] for r in f["rows"]})
    teacher_test = metric_value(teacher, "accuracy", "test", "final")
    for r in rows:
        print(f"{r['shape']} at {r['speedup']}x: test members {r['test']['members']} (median {r['test']['median']}), "
              f"average {r['test']['average']}; dev members {r['dev']['members']}, average {r['dev']['average']}")
    print(json.dumps({
        "dataset": "rotten-tomatoes", "rows": args.max_rows or "all", "data_fraction": args.data_fraction,
        "teacher": "minilm-l6", "teacher_test_acc": round(teacher_test, 4),
        "teacher_dev_acc": round(metric_value(teacher, "accuracy", "dev", "final"), 4),
        "seeds": args.seeds, "final_epochs": args.final_epochs, "precision": args.precision,
        "finals": rows,
        "test_average_minus_median_mean": round(statistics.mean(r["test"]["average_minus_median"] for r in rows), 2)
        if rows else None,
        "dev_average_minus_median_mean": round(statistics.mean(r["dev"]["average_minus_median"] for r in rows), 2)
        if rows else None,
        "greedy_soups": greedy_soups(store, job_id, args.seeds),
        "stage_wall_s": stage_walls(trials),
        "wall_s": round(time.perf_counter() - t0, 1),
        "fingerprint": {k: (f.get("fingerprint") or device_fingerprint()).get(k) for k in ("cpu", "cores", "threads")},
    }))


if __name__ == "__main__":
    main()
