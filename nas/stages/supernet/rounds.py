"""Supernet rounds: rewire the teacher and sandwich-train one weight-sharing supernet over the student and assistant
shapes (round 1); AutoDisc's optional second round, a supernet over the student shapes inside the assistant, initialised
from the distilled assistant and trained on its soft targets."""

from __future__ import annotations

from nas.search.space import clip_space, union_space
from nas.spec.space import StudentSpace
from nas.stages.supernet.finals import assistant_soft, distilled_assistant
from nas.stages.supernet.state import SupernetRun
from nas.students.shape import Shape
from nas.workers.supernet import SupernetRound, train_supernet_task


def first_round(state: SupernetRun) -> None:
    ctx = state.ctx
    sn, space = ctx.spec.search.supernet, ctx.space
    state.store.set_job_stage(ctx.job_id, "supernet")
    full = union_space(space.student, space.assistant)
    state.supernet_dir = state.first_supernet_dir = supernet_round(
        state, 1, full, state.steps, {}, {},
        f"supernet: {'rewired ' if sn.rewire else ''}teacher -> {state.steps} sandwich steps over "
        f"{len(full.layers)}x{len(full.hidden)}x{len(full.heads)}x{len(full.ffn)} choices "
        f"(checkpoint every {sn.checkpoint_every})")


def second_round(state: SupernetRun) -> StudentSpace:
    """Round 2 when asked for and possible; returns the student space the search runs over (clipped to the assistant
    when round 2 ran)."""
    from nas.distill.loop import steps_for

    ctx = state.ctx
    ad, sn = ctx.spec.search.autodisc, ctx.spec.search.supernet
    if not (ad.enabled and ad.second_round and state.assistant is not None):
        return ctx.space.student
    a_shape = Shape.from_dict(state.assistant["config"]["shape"])
    if ctx.deadline is not None:
        ctx.say("supernet (round 2): a wall-clock budget is set: the search stays on the first supernet")
        return ctx.space.student
    clipped, dropped = clip_space(ctx.space.student, a_shape)
    if clipped is None:
        ctx.say(f"supernet (round 2): no student choice of {', '.join(dropped)} fits inside the assistant "
                f"{a_shape.key}; the search stays on the first supernet")
        return ctx.space.student
    arts = distilled_assistant(state)
    steps2 = (steps_for(len(state.sn_train), ctx.space.distill.batch_size, ad.second_round_epochs, None)
              if ad.second_round_epochs else state.steps)
    state.store.set_job_stage(ctx.job_id, "supernet")
    state.supernet_dir = supernet_round(
        state, 2, clipped, steps2, {"from_assistant": a_shape.key, "from_trial": state.assistant["number"]},
        {"init_dir": arts["model"], "target_logits_paths": assistant_soft(state, arts), "out_name": "supernet-round2"},
        f"supernet (round 2): {'rewired ' if sn.rewire else ''}distilled assistant {a_shape.key} -> "
        f"{steps2} sandwich steps over the student shapes"
        + (f" (choices larger than the assistant dropped: {dropped})" if dropped else ""))
    return clipped


def supernet_round(state: SupernetRun, round_no: int, space: StudentSpace, steps: int, extra_cfg: dict,
                   overrides: dict, what: str) -> str:
    """Train (or resume, or reuse when complete) the supernet trial of one round; returns its model directory. `what`
    is logged when it trains."""
    import ray
    from tqdm import tqdm

    ctx, store = state.ctx, state.store
    sn = ctx.spec.search.supernet
    sup = [t for t in store.trials(ctx.job_id, kind="supernet") if t["config"].get("round", 1) == round_no]
    if sup and sup[-1]["state"] == "COMPLETE":
        return next(a["path"] for a in sup[-1]["artefacts"] if a["kind"] == "supernet")
    ctx.say(what)
    config = {"space": space.model_dump(), "steps": steps, "supernet": sn.model_dump(), "rewire_rows": len(state.held),
              **({"round": round_no} if round_no > 1 else {}), **extra_cfg}
    tid = sup[-1]["id"] if sup else store.add_trial(ctx.job_id, "supernet", config)["id"]
    rnd = SupernetRound(space=space.model_dump(), steps=steps, train_idx=state.sn_train.tolist(),
                        rewire_idx=state.held.tolist(), **overrides)
    task = ray.remote(num_cpus=ctx.threads, **ctx.compute.ray_resources(whole_gpu=True))(train_supernet_task)
    ref = task.remote(ctx, tid, rnd)
    bar = tqdm(total=steps, desc="supernet" if round_no == 1 else f"supernet (round {round_no})", unit="step",
               disable=not ctx.progress)
    while True:
        done, _ = ray.wait([ref], timeout=2.0)
        losses = [m for m in store.get_trial(tid)["metrics"] if m["name"] == "train_loss"]
        if losses:
            bar.n = losses[-1]["step"]
            bar.set_postfix(loss=f"{losses[-1]['value']:.3f}")
            bar.refresh()
        if done:
            break
    bar.close()
    return ray.get(ref)
