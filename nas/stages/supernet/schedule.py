"""The supernet schedule (AutoDisc-style), in order: supernet -> assistant -> (second round) -> student search on inherited
weights -> finals. Heavy work runs in Ray tasks (`nas/workers/supernet.py`, `nas/workers/finals.py`); the driver only
decides and records. Each step resumes from the store: the supernet trains from its last checkpoint, evaluated shapes
are not evaluated again, the distilled assistant and finals already COMPLETE are kept.

With a deadline (`ctx.deadline`, from `budgets.time_s` or a caller), no proxy generation or final starts after it and the
finals are teacher -> student: the assistant's own distillation, the longest single step, would leave no time for the
students."""

from __future__ import annotations

import numpy as np

from nas.context import JobContext
from nas.spec.errors import SpecError
from nas.spec.job import JobSpec
from nas.spec.space import load_search_space
from nas.stages.supernet import autodisc, finals, rounds, search
from nas.stages.supernet.state import SupernetRun
from nas.store.store import Store


def check(spec: JobSpec, teacher_config: dict) -> None:
    ad = spec.search.autodisc
    if ad.second_round:
        space = load_search_space(spec.search_space, teacher_config)
        if spec.search.supernet is None or not ad.enabled or space.assistant is None:
            raise SpecError("search.autodisc.second_round", "a second-round supernet starts from the AutoDisc assistant: "
                            "it needs search.supernet, autodisc.enabled and an assistant grid in the search space")
    if spec.search.supernet is not None and load_search_space(spec.search_space, teacher_config).other_families():
        raise SpecError("search_space.families", "the supernet schedule searches BERT slices only; a space with other "
                        "student families is searched per trial (search.strategy random or evolution, no "
                        "search.supernet)")
    if spec.search.final.seeds > 1 and (spec.search.supernet is None or spec.search.final.top_k == 0):
        raise SpecError("search.final.seeds", "seeds trains each final student several times and averages their "
                        "weights: it needs the finals (search.supernet and search.final.top_k >= 1)")
    if spec.search.final.augment and spec.task != "classification":
        raise SpecError("search.final.augment", "augmentation is implemented for classification; set it to 0 for pairs")


def start(ctx: JobContext, store: Store) -> SupernetRun:
    """The rows of each use (fixed by the seed, so a resumed run draws the same) and the first round's steps."""
    from nas.distill.loop import steps_for

    sn = ctx.spec.search.supernet
    train_idx = np.asarray(ctx.train_idx)
    n_rewire = min(sn.rewire_rows, max(1, len(train_idx) // 5)) if sn.rewire else 0
    rng = np.random.default_rng(ctx.seed + 17)
    held = np.sort(rng.choice(train_idx, size=n_rewire, replace=False)) if n_rewire else np.array([], dtype=int)
    sn_train = np.setdiff1d(train_idx, held)
    steps = sn.steps or steps_for(len(sn_train), ctx.space.distill.batch_size, sn.epochs, None)
    probe_idx = np.sort(np.random.default_rng(ctx.seed + 29).choice(
        sn_train, size=min(sn.probe_rows, len(sn_train)), replace=False)).tolist() if sn.proxy == "probe" else []
    return SupernetRun(ctx, store, held, sn_train, steps, probe_idx)


def run(ctx: JobContext, store: Store) -> None:
    """Supernet -> AutoDisc assistant -> (second round) -> student search on inherited weights -> finals."""
    state = start(ctx, store)
    rounds.first_round(state)
    autodisc.choose_assistant(state)
    student_space = rounds.second_round(state)
    search.search_students(state, student_space)
    finals.run_finals(state)
