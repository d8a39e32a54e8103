"""AutoDisc: choose a teacher assistant between the teacher and the students.

Candidates are the shapes of the spec's assistant grid; each is scored on the supernet with inherited weights (P, the dev
metric) and by its scale relative to the teacher (parameters, or measured latency). The λ-tradeoff τ = P + λ·(1 − scale)
rewards accuracy and penalises size; the best τ is the assistant, and distillation runs teacher -> assistant -> student."""

from __future__ import annotations

from dataclasses import dataclass

from nas.search.space import all_shapes
from nas.spec.space import StudentSpace
from nas.stages.supernet.search import evaluate_new
from nas.stages.supernet.state import SupernetRun
from nas.store.records import metric_value
from nas.students.shape import Shape


@dataclass
class Candidate:
    shape: Shape
    metric: float  # P: proxy dev metric on the supernet
    scale: float  # size or latency relative to the teacher, in (0, 1]
    tau: float = 0.0


def tradeoff(metric: float, scale: float, lam: float = 0.2) -> float:
    """τ = P + λ·(1 − scale)."""
    return metric + lam * (1.0 - scale)


def assistant_candidates(grid: StudentSpace, teacher: Shape, students: StudentSpace | None = None) -> list[Shape]:
    """Valid shapes of the grid that fit in the teacher and are larger than the largest student shape (by parameters
    proxy: layers x hidden), so an assistant really sits between the two."""
    out = []
    for s in all_shapes(grid):
        if s.layers > teacher.layers or s.hidden > teacher.hidden or s.heads > teacher.heads or s.ffn > teacher.ffn:
            continue
        if students is not None and s.layers * s.hidden <= min(students.layers) * min(students.hidden):
            continue
        out.append(s)
    return out


def rank_candidates(candidates: list[Candidate], lam: float = 0.2) -> list[Candidate]:
    """Candidates sorted by τ, best first (ties: the smaller scale wins)."""
    for c in candidates:
        c.tau = tradeoff(c.metric, c.scale, lam)
    return sorted(candidates, key=lambda c: (-c.tau, c.scale))


def choose_assistant(state: SupernetRun) -> None:
    """Score the grid's candidates on the supernet (resumable: scored ones are kept), rank them by tau, and set
    `state.assistant` to the best one's trial."""
    ctx, store = state.ctx, state.store
    ad, space = ctx.spec.search.autodisc, ctx.space
    if not ad.enabled or space.assistant is None:
        return
    store.set_job_stage(ctx.job_id, "assistant")
    teacher_shape = Shape.from_dict(ctx.teacher_shape)
    done_keys = {Shape.from_dict(t["config"]["shape"]).key for t in store.trials(ctx.job_id, kind="assistant")}
    todo = [s for s in assistant_candidates(space.assistant, teacher_shape, space.student) if s.key not in done_keys]
    if todo:
        ctx.say(f"assistant: scoring {len(todo)} candidates on the supernet")
        evaluate_new(state, "assistant", todo)
    cands, by_key = [], {}
    for t in store.trials(ctx.job_id, kind="assistant", state="COMPLETE"):
        shape = Shape.from_dict(t["config"]["shape"])
        p = metric_value(t, ctx.spec.objectives.metric, "dev", "proxy")
        if ad.scale_by == "latency":
            scale = t["latency"][-1]["p50_ms"] / ctx.teacher_p50_ms
        else:
            scale = metric_value(t, "params", "dev", "proxy") / ctx.teacher_params
        cands.append(Candidate(shape, p, scale))
        by_key[shape.key] = t
    ranked = rank_candidates(cands, ad.lam)
    for c in ranked:
        t = by_key[c.shape.key]
        if metric_value(t, "tau", "dev", "proxy") is None:
            store.add_metric(t["id"], "scale", c.scale, "dev", "proxy")
            store.add_metric(t["id"], "tau", c.tau, "dev", "proxy")
    if ranked:
        state.assistant = by_key[ranked[0].shape.key]
        best = ranked[0]
        ctx.say(f"assistant: {best.shape.key} (P {best.metric:.4f}, scale {best.scale:.3f}, τ {best.tau:.4f}, λ {ad.lam})")
