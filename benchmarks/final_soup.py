"""How far a final's test accuracy moves with its training seed, and what averaging the weights of finals trained from the
same slice with different seeds (a uniform "model soup": one model, the same shape, the same latency) does to it.
Last line of output: one JSON object.

    python benchmarks/final_soup.py --workdir .nas/bench-large-imdb120-emb1 \
        --transfer .nas/cache/teachers/<teacher>/for-<init>/transfer-<key>.pt --seeds 1,2

It reads a finished `benchmarks/large_teacher.py` run in --workdir: its job's best final at >= --min-speedup (its shape,
the weights it was sliced from, its lr and steps, the job's precision) and retrains that final with each of --seeds on the
same rows (the train rows and the teacher-labelled transfer set the job used, --transfer) and the same settings, as the
finals' worker does (`nas/workers/finals.py`). Each seed's weights are kept in --workdir/soup/ (a rerun skips them; a
killed seed goes on from its training checkpoint). It scores the job's own final (seed 0), every seed, and the average
of their weights on all dev and test rows, and the retention of each against the teacher's test accuracy.

With --greedy it also scores the greedy soup (Wortsman et al., 2022, recipe 1): the members sorted by dev accuracy, each
added to the average only if the average's dev accuracy does not drop. On a run whose final was kept as the average of
`search.final.seeds` members, those members stand in for seed 0 (--seeds may then be empty: no training).

With --ema D1,D2,... each new seed also keeps an exponential moving average of its weights with each decay (Polyak
averaging; the plain mean of the weights so far until its window is reached), scored beside the seed's own last weights: the same training run, so
the comparison is paired. Such a seed trains without a checkpoint (a killed one starts again).

With --epochs K each seed trains K times the job's steps (K epochs over the same rows, the lr schedule stretched over
them); --seeds may then name the job's own members' seeds (0, 1, ...), and the K-epoch members are scored beside the
job's own one-epoch members of the same seeds and their average (a paired comparison of the schedule's length):

    python benchmarks/final_soup.py --workdir .nas/bench-large-amd-seeds3 --transfer ... --seeds 0,1 --epochs 2
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


def best_final(store, job_id: int, min_speedup: float) -> dict:
    """The job's final student (kind student, a saved model) with the best final dev accuracy at >= min_speedup."""
    from nas.store.records import metric_value

    rows = [t for t in store.trials(job_id, kind="student")
            if any(a["kind"] == "model" for a in t["artefacts"])
            and (metric_value(t, "speedup", "dev", "proxy") or 0.0) >= min_speedup]
    if not rows:
        print(f"--min-speedup: no final with a saved model at >= {min_speedup}x in this job", file=sys.stderr)
        raise SystemExit(2)
    return max(rows, key=lambda t: metric_value(t, "accuracy", "dev", "final") or 0.0)


class moving_average:
    """An exponential moving average of `model`'s floating-point weights in fp32, updated by calling it with the step
    just taken (0-based). Its decay is min(decay, step / (step + 1)): the plain mean of the weights after every step so
    far until the window 1 / (1 - decay) is reached, so the starting weights do not linger in it. (The first run of
    this option, 2026-12-07, used TensorFlow's (1 + step) / (10 + step) instead, which caps every decay at 0.998 until
    step 4,490: its three decays measured one average.)"""

    def __init__(self, model, decay: float):
        self.model, self.decay = model, decay
        state = model.state_dict()
        self.keys = [k for k, v in state.items() if v.is_floating_point()]
        self.avg = [state[k].detach().float().clone() for k in self.keys]

    def __call__(self, step: int) -> None:
        import torch

        d = min(self.decay, step / (step + 1))
        current = self.model.state_dict()
        torch._foreach_mul_(self.avg, d)
        torch._foreach_add_(self.avg, [current[k].detach().float() for k in self.keys], alpha=1.0 - d)

    def state(self) -> dict:
        """The averaged weights as a state dict of the model's (integer buffers its own, dtypes its own)."""
        out = dict(self.model.state_dict())
        out.update({k: a.to(out[k].dtype) for k, a in zip(self.keys, self.avg)})
        return {k: v.detach().clone() for k, v in out.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--workdir", required=True, help="a finished benchmarks/large_teacher.py run (its NAS_HOME)")
    ap.add_argument("--transfer", required=True, help="the teacher-labelled transfer set the job's finals trained on")
    ap.add_argument("--seeds", default="1,2", help="training seeds besides the job's own (0), comma-separated")
    ap.add_argument("--min-speedup", type=float, default=10.0)
    ap.add_argument("--greedy", action="store_true", help="also score the greedy soup (members added by dev accuracy "
                                                            "while the average's dev accuracy does not drop)")
    ap.add_argument("--ema", default="", help="decays of moving averages of each new seed's weights, comma-separated "
                                               "(e.g. 0.999,0.9995); none by default")
    ap.add_argument("--epochs", type=int, default=1, help="train each seed for this many times the job's steps "
                                                           "(default 1: as the job did)")
    args = ap.parse_args()

    import torch
    from transformers import AutoTokenizer

    from large_teacher import job_sources
    from nas.compute import resolve
    from nas.data import split_indices, tokenize
    from nas.distill.augment import with_transfer_set
    from nas.distill.evaluate import predict_logits, scores
    from nas.distill.loop import DistillSettings, distill
    from nas.distill.resume import TrainCheckpoint
    from nas.distill.soup import average_state_dicts
    from nas.spec.space import load_search_space
    from nas.store.records import metric_value
    from nas.store.store import Store
    from nas.students import load_student
    from nas.students.bert_slice import extract_subnet
    from nas.students.shape import Shape
    from nas.teachers import load_pretrained

    torch.set_num_threads(2)
    t_start = time.perf_counter()
    workdir = pathlib.Path(args.workdir).resolve()
    if not (workdir / "nas.db").is_file():
        ap.error(f"--workdir: no nas.db in {workdir} (a benchmarks/large_teacher.py run's workdir)")
    transfer_path = pathlib.Path(args.transfer)
    if not transfer_path.is_file():
        ap.error(f"--transfer: no such file {transfer_path}")
    try:
        seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
    except ValueError:
        ap.error(f"--seeds: expected comma-separated integers, got {args.seeds!r}")
    try:
        decays = [float(d) for d in args.ema.split(",") if d.strip()]
    except ValueError:
        ap.error(f"--ema: expected comma-separated decays, got {args.ema!r}")
    if any(not 0.0 < d < 1.0 for d in decays):
        ap.error(f"--ema: every decay must lie in (0, 1), got {args.ema!r}")
    if args.epochs < 1:
        ap.error(f"--epochs: expected a whole number >= 1, got {args.epochs}")
    store = Store(f"sqlite:///{workdir / 'nas.db'}", migrate=False)
    job_id = store.list_jobs()[0]["id"]
    sources = job_sources(store, job_id)
    spec, ds, info, src = sources
    final = best_final(store, job_id, args.min_speedup)
    shape = Shape.from_dict(final["config"]["shape"])
    arts = {a["kind"]: a["path"] for a in final["artefacts"]}
    steps = int(max(m["step"] or 0 for m in final["metrics"] if m["name"] == "accuracy" and m["source"] == "final"))
    lr = next(m["value"] for m in final["metrics"] if m["name"] == "lr" and m["source"] == "final")
    compute = resolve(spec.compute)
    print(f"final trial {final['id']}: {shape.key} at {metric_value(final, 'speedup', 'dev', 'proxy'):.2f}x, {steps} steps "
          f"at lr {lr:.3g}, sliced from {arts['init']}", flush=True)

    tensors = tokenize(AutoTokenizer.from_pretrained(src["dir"]), ds, spec.budgets.max_seq_len)
    labels, soft = torch.as_tensor(ds.labels, device="cpu"), torch.load(info["logits_path"])
    splits = split_indices(ds.labels, spec.seed)
    transfer = torch.load(transfer_path)
    x, y, s, hard = with_transfer_set(tensors, labels, soft, splits["train"], transfer)
    print(f"{len(y)} training rows ({int(hard.sum())} train rows, {int((~hard).sum())} transfer rows)", flush=True)
    settings = DistillSettings(**{**load_search_space(spec.search_space).distill.model_dump(), "lr": lr})
    source = load_pretrained(arts["init"])

    def score(model) -> dict:
        out = {}
        for split in ("dev", "test"):
            idx = torch.as_tensor(splits[split], device="cpu")
            logits = predict_logits(model, {k: v[idx] for k, v in tensors.items()}, compute=compute.exact())
            out[split] = round(scores(logits, labels[idx])["accuracy"], 4)
        return out

    soup_dir = workdir / "soup"
    soup_dir.mkdir(exist_ok=True)
    # a final kept as the average of its members (search.final.seeds, artefacts seed{i}_weights): its seeds 0, 1, ...
    own = {int(k[4:-8]): path for k, path in arts.items() if k.startswith("seed") and k.endswith("_weights")}
    states = ({i: torch.load(own[i], map_location="cpu")["state"] for i in sorted(own)} if own
              else {0: load_student(arts["model"]).state_dict()})
    if set(seeds) & set(states) and args.epochs == 1:
        ap.error(f"--seeds: {sorted(set(seeds) & set(states))} are the job's own members")
    tag = "" if args.epochs == 1 else f"e{args.epochs}"  # the K-epoch members' names: seed0e2, ...
    new_steps = steps * args.epochs
    new = [f"{seed}{tag}" if tag else seed for seed in seeds]  # the new members' keys in `states`
    averages = {}  # (seed, decay) -> the moving average of that seed's weights
    for seed, name in zip(seeds, new):
        path = soup_dir / f"{shape.key}-seed{seed}{tag}.pt"
        ema_paths = {d: soup_dir / f"{shape.key}-seed{seed}{tag}-ema{d}.pt" for d in decays}
        if not path.is_file():  # (a seed trained before keeps its weights, and has no moving averages)
            model = extract_subnet(source, shape)
            ckpt = None if decays else TrainCheckpoint(
                soup_dir / f"{shape.key}-seed{seed}{tag}.checkpoint.pt",
                key=repr((arts["init"], shape.key, settings, str(transfer_path), seed, len(y), new_steps)))
            ema = {d: moving_average(model, d) for d in decays}
            info_s = distill(model, x, y, s, settings, new_steps, seed=spec.seed + seed, hard_mask=hard, compute=compute,
                             checkpoint=ckpt, on_step=(lambda step, loss: [f(step) for f in ema.values()]) if ema else None)
            torch.save(model.state_dict(), path)
            for d, f in ema.items():
                torch.save(f.state(), ema_paths[d])
            if ckpt:
                ckpt.clear()
            print(f"seed {seed}{tag}: trained in {info_s['train_s']:.0f} s", flush=True)
        states[name] = torch.load(path)
        averages.update({(seed, d): torch.load(p) for d, p in ema_paths.items() if p.is_file()})
    # with --epochs: the job's own members of the same seeds, averaged, beside the new ones' average
    same = {"soup_own_same_seeds": [m for m in seeds if m in states]} if tag and len(seeds) > 1 else {}

    teacher_test = info["test"]["accuracy"]
    model = extract_subnet(source, shape)
    rows = {}
    for seed, state in states.items():
        model.load_state_dict(state)
        rows[f"seed{seed}"] = score(model)
        print(f"seed {seed}: {rows[f'seed{seed}']}", flush=True)
    for (seed, d), state in averages.items():
        model.load_state_dict(state)
        rows[f"seed{seed}{tag}_ema{d}"] = score(model)
        print(f"seed {seed}{tag}, moving average {d}: {rows[f'seed{seed}{tag}_ema{d}']}", flush=True)
    soups = {"soup": [m for m in states if m not in new] if tag else list(states),
             **({"soup_new_seeds": new} if len(seeds) > 1 else {}), **same}
    for name, members in soups.items():
        model.load_state_dict(average_state_dicts(states[m] for m in members))
        rows[name] = {**score(model), "members": [f"seed{m}" for m in members]}
        print(f"{name} of {members}: {rows[name]}", flush=True)
    if args.greedy:
        order = sorted(states, key=lambda m: -rows[f"seed{m}"]["dev"])
        chosen, best = [order[0]], rows[f"seed{order[0]}"]
        for m in order[1:]:
            model.load_state_dict(average_state_dicts(states[c] for c in chosen + [m]))
            trial_scores = score(model)
            if trial_scores["dev"] >= best["dev"]:
                chosen, best = chosen + [m], trial_scores
        rows["greedy_soup"] = {"dev": best["dev"], "test": best["test"], "members": [f"seed{m}" for m in chosen]}
        print(f"greedy soup of {chosen}: {rows['greedy_soup']}", flush=True)
    for r in rows.values():
        r["retention"] = round(r["test"] / teacher_test, 4)
    # one schedule's members: with --epochs the K-epoch ones (the job's own are in rows beside them)
    singles = [rows[f"seed{m}"]["test"] for m in (new if tag else states)]
    print(json.dumps({
        "workdir": str(workdir), "final_trial": final["id"], "shape": shape.key,
        "speedup": round(metric_value(final, "speedup", "dev", "proxy"), 2), "steps": steps, "lr": lr,
        "epochs": args.epochs, "new_seed_steps": new_steps,
        "precision": spec.compute.precision, "teacher_test_acc": round(teacher_test, 4), "results": rows,
        "seed_test_median": round(statistics.median(singles), 4), "seed_test_range": [min(singles), max(singles)],
        "wall_s": round(time.perf_counter() - t_start, 1),
        "fingerprint": {"cpu": next((ln.split(":", 1)[1].strip() for ln in open("/proc/cpuinfo")
                                     if ln.startswith("model name")), "?"), "threads": torch.get_num_threads()},
    }))


if __name__ == "__main__":
    main()
