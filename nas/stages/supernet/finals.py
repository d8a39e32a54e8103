"""Finals: standalone distillation of the chosen front points (teacher -> assistant -> student), whose accuracy is the
`final` value."""

from __future__ import annotations

import dataclasses
import pathlib
import time

import numpy as np

from nas.stages.supernet.state import SupernetRun
from nas.store.records import metric_value, trial_objectives
from nas.students.shape import Shape
from nas.workers.finals import FinalTask, final_distill_task, labelled_transfer_set


def distil(state: SupernetRun, task: FinalTask) -> dict:
    """One standalone distillation in a Ray task (a whole node's CPUs)."""
    import ray

    remote = ray.remote(num_cpus=state.ctx.threads, **state.ctx.compute.ray_resources(whole_gpu=True))(final_distill_task)
    return ray.get(remote.remote(state.ctx, task, state.supernet_dir))


def final_slots(ctx) -> tuple[int, int]:
    """(how many finals the Ray cluster runs at once, the CPU threads of each). On the CPU a final takes a whole node's
    CPUs (the driver's node's count), so one per such node; on GPUs it takes a whole GPU and its node's CPUs shared
    among the node's GPUs, so one per GPU."""
    import ray

    res, gpus = ray.cluster_resources(), ctx.compute.gpus_per_task
    if not gpus:
        return max(1, int(res.get("CPU", 1.0) // ctx.threads)), ctx.threads
    per_node = max((n["Resources"].get("GPU", 0.0) for n in ray.nodes() if n.get("Alive")), default=0.0)
    threads = max(1, int(ctx.threads // max(1.0, per_node)))
    return max(1, int(min(res.get("GPU", 0.0) // gpus, res.get("CPU", 1.0) // threads))), threads


def distil_all(state: SupernetRun, units: list[tuple[FinalTask, tuple[int, ...]]], on_done) -> int:
    """Run `units` (each a FinalTask and the indices of the units it waits for) as Ray tasks, as many at once as the
    cluster has room for (`final_slots`), the first ready unit first (nas/service/cluster.py: run_units); `on_done(i)`
    after unit i. Once the job's wall-clock budget is spent no unit that trains starts (averaging members already
    trained still does). After a failure nothing more starts, the running units finish, and the first failure is
    raised. Returns how many units did not run."""
    import ray

    from nas.service.cluster import run_units

    ctx = state.ctx
    slots, threads = final_slots(ctx)
    if slots > 1 and len(units) > 1:
        ctx.say(f"final: up to {slots} finals at once ({threads} CPU threads each)")
    remote = ray.remote(num_cpus=threads, **ctx.compute.ray_resources(whole_gpu=True))(final_distill_task)

    def submit(i: int):
        return remote.remote(ctx, dataclasses.replace(units[i][0], threads=threads), state.supernet_dir)

    def may_start(i: int) -> bool:  # a member, or a final of one seed, trains; averaging members does not
        trains = units[i][0].member is not None or units[i][0].seeds == 1
        return not trains or ctx.deadline is None or time.time() < ctx.deadline

    return len(units) - len(run_units(submit, [deps for _, deps in units], slots, may_start, on_done))


def transfer_set(state: SupernetRun) -> None:
    """The teacher-labelled transfer set (cached beside the teacher), once per run: the job's transfer corpus, or
    final.augment's copies."""
    ctx, fin = state.ctx, state.ctx.spec.search.final
    if ctx.transfer_path and state.transfer_path is None:  # the job's transfer corpus (spec `transfer:`) wins
        state.transfer_path = ctx.transfer_path
    if fin.augment and state.transfer_path is None:
        ctx.say(f"final: labelling {fin.augment} augmented copies of {len(ctx.train_idx)} train texts with the "
                "teacher (cached)")
        state.transfer_path = labelled_transfer_set(ctx)


def distilled_assistant(state: SupernetRun) -> dict:
    """teacher -> assistant, once per job (its artefacts are reused on resume): {"model", "logits", "transfer_logits"}."""
    ctx = state.ctx
    transfer_set(state)
    state.assistant = a = state.store.get_trial(state.assistant["id"])
    arts = {x["kind"]: x["path"] for x in a["artefacts"]}
    if "logits" not in arts or "model" not in arts or (state.transfer_path and "transfer_logits" not in arts):
        ctx.say(f"final: distilling the assistant {Shape.from_dict(a['config']['shape']).key} from the teacher")
        r = distil(state, FinalTask(trial_id=a["id"], number=a["number"], shape=a["config"]["shape"],
                                    soft_logits_paths=[ctx.teacher["logits_path"]], save_model=True, save_logits=True,
                                    transfer_path=state.transfer_path))
        arts = {"logits": r["logits_path"], "transfer_logits": r.get("transfer_logits_path"), "model": r["model_path"]}
    return arts


def assistant_soft(state: SupernetRun, arts: dict) -> list[str]:
    """Two-step soft targets: the assistant's logits, averaged with the teacher's when final.soft_targets says so."""
    average = state.ctx.spec.search.final.soft_targets == "average"
    return [arts["logits"]] + ([state.ctx.teacher["logits_path"]] if average else [])


def final_sources(state: SupernetRun) -> dict:
    """Where every final's soft targets and weights come from: {"soft", "transfer_soft", "init_dir", "fits_in"}."""
    import torch

    ctx, fin = state.ctx, state.ctx.spec.search.final
    out = {"soft": [ctx.teacher["logits_path"]], "transfer_soft": None, "init_dir": None, "fits_in": None}
    if state.assistant is not None and fin.two_step:
        arts = distilled_assistant(state)
        out["soft"] = assistant_soft(state, arts)
        if fin.student_init == "assistant":
            out["init_dir"], out["fits_in"] = arts["model"], Shape.from_dict(state.assistant["config"]["shape"])
            ctx.say(f"final: students are sliced from the distilled assistant {out['fits_in'].key}")
        if state.transfer_path:
            out["transfer_soft"] = [arts["transfer_logits"]]
            if fin.soft_targets == "average":
                t_path = pathlib.Path(ctx.artefact_dir) / "transfer_teacher_logits.pt"
                t_path.parent.mkdir(parents=True, exist_ok=True)
                torch.save(torch.load(state.transfer_path)["logits"], t_path)
                out["transfer_soft"].append(str(t_path))
    if fin.student_init == "teacher":
        out["init_dir"], out["fits_in"] = ctx.source["dir"], None
        ctx.say("final: students are sliced from the fine-tuned teacher")
    return out


def run_finals(state: SupernetRun) -> None:
    """Distil the chosen front points standalone (and the one-step baseline beside each, when asked)."""
    from tqdm import tqdm

    ctx, fin, spec = state.ctx, state.ctx.spec.search.final, state.ctx.spec
    if fin.top_k == 0:
        return
    state.store.set_job_stage(ctx.job_id, "final")
    if state.assistant is not None and fin.two_step and ctx.deadline is not None:
        ctx.say("final: a wall-clock budget is set: finals are teacher -> student (no assistant distillation)")
        state.assistant = None
    if ctx.deadline is not None and time.time() >= ctx.deadline:
        ctx.say("final: the wall-clock budget is spent; no final starts")
        return
    transfer_set(state)
    src = final_sources(state)
    one_step = fin.one_step_baseline and state.assistant is not None and fin.two_step
    chosen = choose_final(state.store.trials(ctx.job_id, kind="student", state="COMPLETE"), fin.top_k,
                          spec.objectives.metric, spec.objectives.latency, spec.constraints.model_dump(), ctx.say)
    # the most accurate on the proxy first: a wall-clock budget or a stop leaves the finals that matter most done
    todo = sorted((t for t in chosen if metric_value(t, spec.objectives.metric, "dev", "final") is None),
                  key=lambda t: -(metric_value(t, spec.objectives.metric, "dev", "proxy") or 0.0))
    bar = tqdm(total=len(chosen), initial=len(chosen) - len(todo), desc="final", unit="student", disable=not ctx.progress)
    # every final (with seeds > 1: each member, then the average of their weights) and the one-step baselines, the most
    # accurate on the proxy first; they run at once where the cluster has room
    units: list[tuple[FinalTask, tuple[int, ...]]] = []
    kept = set()  # the units whose end is a final's kept model (the progress bar counts those)
    for t in todo:
        base = {"trial_id": t["id"], "number": t["number"], "shape": t["config"]["shape"],
                "transfer_path": state.transfer_path}
        if one_step:
            # teacher -> student with no assistant anywhere: sliced from the first (teacher-initialised) supernet, or
            # from the teacher when the students are
            units.append((FinalTask(**base, soft_logits_paths=[ctx.teacher["logits_path"]], metric_prefix="one_step_",
                                    init_dir=src["init_dir"] if fin.student_init == "teacher"
                                    else state.first_supernet_dir), ()))
        init_dir = src["init_dir"]
        shape = Shape.from_dict(t["config"]["shape"])
        if init_dir is not None and src["fits_in"] is not None and not shape.fits_in(src["fits_in"]):
            ctx.say(f"final: {shape.key} does not fit inside the assistant {src['fits_in'].key}; sliced from the "
                    "supernet instead")
            init_dir = None
        if fin.seeds > 1:
            ctx.say(f"final: {shape.key} trained {fin.seeds} times (seeds {spec.seed}-{spec.seed + fin.seeds - 1}); "
                    "it keeps the average of their weights")
        final = FinalTask(**base, soft_logits_paths=src["soft"], save_model=True, init_dir=init_dir,
                          transfer_soft_paths=src["transfer_soft"], seeds=fin.seeds)
        members = [(dataclasses.replace(final, member=i), ()) for i in range(fin.seeds)] if fin.seeds > 1 else []
        units += members
        units.append((final, tuple(range(len(units) - len(members), len(units)))))
        kept.add(len(units) - 1)
    left = distil_all(state, units, lambda i: bar.update(1) if i in kept else None)
    if left:
        ctx.say(f"final: the wall-clock budget is spent after {bar.n} of {len(chosen)} finals")
    bar.close()


def choose_final(trials: list[dict], k: int, metric: str, pct: str, constraints: dict | None = None,
                 log=lambda m: None) -> list[dict]:
    """Up to k points spread along the proxy front (by latency); when the front is smaller, the next non-dominated ranks.
    With `constraints` (the spec's), the k most accurate points by proxy within them, while there are any (else every
    point, spread, and `log` says so): a latency budget spends every final where the best student inside it is likely
    to be, near the budget, not on 100x points the user did not ask for."""
    from nas.search.constraints import describe, feasible
    from nas.search.pareto import non_dominated_sort

    if not trials:
        return []
    points = [trial_objectives(t, metric, pct, "proxy") for t in trials]
    within = feasible(points, constraints or {})
    if describe(constraints or {}) and not within:
        log(f"final: no candidate meets the constraints ({describe(constraints)}); the finals are chosen from all")
    elif describe(constraints or {}):
        best = sorted(within, key=lambda i: (-points[i]["metric"], points[i]["latency_ms"]))[:k]
        return [trials[i] for i in best]
    objs = [[o["metric"], o["latency_ms"]] for o in points]
    chosen: list[int] = []
    for front in non_dominated_sort(objs, [True, False]):
        front = sorted(front, key=lambda i: objs[i][1])
        room = k - len(chosen)
        if len(front) <= room:
            chosen += front
        else:
            picks = np.unique(np.round(np.linspace(0, len(front) - 1, room)).astype(int))
            chosen += [front[i] for i in picks]
        if len(chosen) >= k:
            break
    return [trials[i] for i in chosen]
