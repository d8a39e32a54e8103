"""The supernet schedule of a job (AutoDisc-style): supernet -> assistant -> student search on inherited weights -> final.

Each stage is resumable from the store: the supernet trains from its last checkpoint, evaluated shapes are not evaluated
again, final distillations already COMPLETE are kept. Heavy work runs in Ray tasks; the driver only decides and records.
"""

from __future__ import annotations

import os
import pathlib
import time
from typing import Callable

import numpy as np

from nas.spec import StudentSpace
from nas.store.store import Store, metric_value, nas_home, trial_objectives
from nas.supernet import Shape


def union_space(a: StudentSpace, b: StudentSpace | None) -> StudentSpace:
    if b is None:
        return a
    return StudentSpace(layers=sorted(set(a.layers) | set(b.layers)), hidden=sorted(set(a.hidden) | set(b.hidden)),
                        heads=sorted(set(a.heads) | set(b.heads)), ffn=sorted(set(a.ffn) | set(b.ffn)))


# -- Ray task bodies (run in workers) ------------------------------------------------------------------------------------
def clip_space(space: StudentSpace, outer: Shape) -> tuple[StudentSpace | None, dict]:
    """The part of `space` inside `outer` on every axis, and the dropped choices by axis; (None, {axis: []}) naming the
    axes left without any choice when nothing fits."""
    axes = ("layers", "hidden", "heads", "ffn")
    kept = {ax: [v for v in getattr(space, ax) if v <= getattr(outer, ax)] for ax in axes}
    empty = {ax: [] for ax in axes if not kept[ax]}
    if empty:
        return None, empty
    dropped = {ax: sorted(set(getattr(space, ax)) - set(kept[ax])) for ax in axes}
    return StudentSpace(**kept), {ax: v for ax, v in dropped.items() if v}


def _load_common(ctx: dict):
    import torch
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    torch.set_num_threads(int(ctx["threads"]))
    tensors = torch.load(ctx["tokens_path"])
    labels = torch.as_tensor(ctx["labels"])
    return tensors, labels


def train_supernet_task(ctx: dict, trial_id: int) -> str:
    """Rewire and sandwich-train a supernet; returns its saved model directory. Round 1 starts from the teacher and its
    logits; a second round (ctx `init_dir`, `target_logits_paths`, `out_name`) from the distilled assistant and its."""
    import torch
    from transformers import AutoTokenizer, BertForSequenceClassification

    from nas.distill import DistillSettings
    from nas.supernet import rewire
    from nas.supernet_train import train_supernet
    from nas.teacher import load_teacher

    tensors, labels = _load_common(ctx)
    store = Store(ctx["storage"], migrate=False)
    store.start_trial(trial_id)
    try:
        sn = ctx["supernet"]
        if ctx.get("init_dir"):
            model = BertForSequenceClassification.from_pretrained(ctx["init_dir"], attn_implementation="eager").eval()
        else:
            model = load_teacher(ctx["teacher"])
        teacher_logits = _soft_targets(ctx.get("target_logits_paths") or [ctx["teacher"]["logits_path"]])
        if sn["rewire"]:
            # importance from cross-entropy on held-out train rows: KL to the teacher's own logits is flat at the teacher
            rewire(model, tensors, labels, ctx["rewire_idx"])
        out = pathlib.Path(ctx["artefact_dir"]) / ctx.get("out_name", "supernet")
        out.mkdir(parents=True, exist_ok=True)
        settings = DistillSettings(**{**ctx["distill"], "lr": sn["lr"]})
        last = [time.monotonic()]

        def on_step(step: int, loss: float) -> None:
            if time.monotonic() - last[0] > 3 or step + 1 == ctx["supernet_steps"]:
                store.add_metric(trial_id, "train_loss", loss, "train", "proxy", step=step + 1)
                store.heartbeat(trial_id)
                last[0] = time.monotonic()

        space = StudentSpace(**ctx["space"])
        info = train_supernet(model, teacher_logits, tensors, labels, ctx["train_idx"], space, ctx["supernet_steps"],
                              settings, n_random=sn["n_random"], hidden_weight=sn["hidden_weight"], seed=ctx["seed"],
                              checkpoint_path=out / "checkpoint.pt", checkpoint_every=sn["checkpoint_every"], on_step=on_step)
        model.save_pretrained(out / "model")
        AutoTokenizer.from_pretrained(ctx["teacher"]["dir"]).save_pretrained(out / "model")
        store.add_artefact(ctx["job_id"], trial_id, "checkpoint", str(out / "checkpoint.pt"))
        store.add_artefact(ctx["job_id"], trial_id, "supernet", str(out / "model"))
        store.add_metric(trial_id, "train_s", info["train_s"], "train", "proxy")
        store.add_metric(trial_id, "step_s", info["step_s"], "train", "proxy")
        store.finish_trial(trial_id, "COMPLETE")
        return str(out / "model")
    except Exception as exc:
        store.finish_trial(trial_id, "FAILED", error=f"{type(exc).__name__}: {exc}")
        raise
    finally:
        store.dispose()


def evaluate_shapes_task(ctx: dict, items: list[dict]) -> list[dict]:
    """Proxy dev metric with inherited weights, parameters and measured latency of each shape; one trial per item.
    Latency: all shapes of the batch measured together in interleaved rounds with the teacher as the reference."""
    from transformers import BertForSequenceClassification

    from nas.distill import scores
    from nas.latency.measure import measure_models, settings_from_spec
    from nas.latency.slot import heavy_work
    from nas.supernet import count_parameters, extract_subnet
    from nas.supernet_train import probe_logits, shape_logits
    from nas.teacher import load_teacher

    tensors, labels = _load_common(ctx)
    store = Store(ctx["storage"], migrate=False)
    model = BertForSequenceClassification.from_pretrained(ctx["supernet_dir"], attn_implementation="eager").eval()
    lat_settings = settings_from_spec(ctx["latency"])
    results, subs = [], {}
    try:
        with heavy_work():
            for item in items:
                tid, shape = item["trial_id"], Shape.from_dict(item["shape"])
                store.start_trial(tid)
                try:
                    dev = labels[ctx["dev_idx"]]
                    head = scores(shape_logits(model, shape, tensors, ctx["dev_idx"]), dev)
                    if ctx.get("proxy") == "probe":  # the ranking metric is the probe's; the head's is kept beside it
                        sc = scores(probe_logits(model, shape, tensors, labels, ctx["probe_idx"], ctx["dev_idx"]), dev)
                        store.add_metric(tid, "head_accuracy", head["accuracy"], "dev", "proxy")
                    else:
                        sc = head
                    for name, value in sc.items():
                        store.add_metric(tid, name, value, "dev", "proxy")
                    sub = extract_subnet(model, shape)
                    params = count_parameters(sub)
                    store.add_metric(tid, "params", params, "dev", "proxy")
                    # the supernet this proxy was read from (a second round has its own): an export slices the same
                    store.add_artefact(ctx["job_id"], tid, "proxy_source", ctx["supernet_dir"])
                    subs[tid] = (shape, sub)
                    results.append({"trial_id": tid, "shape": shape.as_dict(), "state": "COMPLETE", **sc, "params": params})
                except Exception as exc:
                    store.finish_trial(tid, "FAILED", error=f"{type(exc).__name__}: {exc}")
                    results.append({"trial_id": tid, "shape": shape.as_dict(), "state": "FAILED", "error": str(exc)})
        if subs:
            try:
                teacher = load_teacher(ctx["teacher"])
                rows = measure_models(store, {s.key: m for s, m in subs.values()}, lat_settings,
                                      ctx["latency"].get("extra_runtimes", ()), reference=teacher)
            except Exception as exc:
                for r in results:
                    if r["trial_id"] in subs:
                        store.finish_trial(r["trial_id"], "FAILED", error=f"latency: {type(exc).__name__}: {exc}")
                        r.update({"state": "FAILED", "error": str(exc)})
                return results
            for r in results:
                if r["trial_id"] not in subs:
                    continue
                tid, shape = r["trial_id"], subs[r["trial_id"]][0]
                for row in rows[shape.key]:
                    store.add_latency(tid, shape.key, row)
                lat = rows[shape.key][-1]
                speedup = lat.get("speedup") or ctx["teacher_p50_ms"] / lat["p50_ms"]
                store.add_metric(tid, "speedup", speedup, "dev", "proxy")
                store.finish_trial(tid, "COMPLETE")
                r.update({"p50_ms": lat["p50_ms"], "p90_ms": lat["p90_ms"], "speedup": speedup})
        return results
    finally:
        store.dispose()


def transfer_set_task(ctx: dict, texts: list[str]) -> str:
    """Teacher-labelled augmented copies of the train texts (cached beside the teacher); returns the file's path."""
    from transformers import AutoTokenizer

    from nas.augment import AugmentSettings, teacher_transfer_set, transfer_set_path
    from nas.data import Dataset
    from nas.teacher import load_teacher

    import torch

    torch.set_num_threads(int(ctx["threads"]))  # the token tensors are not needed: the texts are tokenised here
    teacher = load_teacher(ctx["teacher"])
    tok = AutoTokenizer.from_pretrained(ctx["teacher"]["dir"])
    train = np.asarray(ctx["train_idx"])
    ds = Dataset("train", "classification", texts, np.asarray(ctx["labels"]), [])
    settings = AugmentSettings(copies=int(ctx["final"]["augment"]), seed=int(ctx["seed"]))
    cache = pathlib.Path(ctx["teacher"]["logits_path"]).parent
    teacher_transfer_set(teacher, tok, ds, train, int(ctx["max_seq_len"]), settings, cache_dir=cache, log=lambda m: None)
    return str(transfer_set_path(cache, train, settings))


def _soft_targets(paths: list[str]):
    """One set of soft targets from one or more teachers' logits files: their mean (multi-teacher averaging)."""
    import torch

    logits = [torch.load(p).float() for p in paths]
    return logits[0] if len(logits) == 1 else torch.stack(logits).mean(0)


def final_distill_task(ctx: dict, item: dict) -> dict:
    """Standalone distillation of one shape, initialised from the supernet, from the soft targets in
    `item["soft_logits_paths"]` (the teacher's or the assistant's logits on every row; several files are averaged). With a
    transfer set (`item["transfer_path"]`), its augmented rows are added with soft targets from
    `item["transfer_soft_paths"]` (default: the teacher's labels stored in the set). Writes `final` dev and test metrics
    under `item["metric_prefix"]`."""
    import torch
    from transformers import AutoTokenizer, BertForSequenceClassification

    from nas.augment import with_transfer_set
    from nas.distill import DistillSettings, distill, lr_by_size, predict_logits, scores, steps_for
    from nas.supernet import extract_subnet

    tensors, labels = _load_common(ctx)
    store = Store(ctx["storage"], migrate=False)
    tid = item["trial_id"]
    prefix = item.get("metric_prefix", "")
    try:
        store.heartbeat(tid)
        # the source of the student's weights: the supernet, or (student_init: assistant) the distilled assistant
        init_path = item.get("init_dir") or ctx["supernet_dir"]
        source = BertForSequenceClassification.from_pretrained(init_path, attn_implementation="eager").eval()
        shape = Shape.from_dict(item["shape"])
        model = extract_subnet(source, shape)
        # the lr by size is relative to the teacher (a second-round supernet is only the assistant's size)
        share = shape.share_of(Shape.from_dict(ctx["teacher_shape"]))
        final = ctx["final"]
        settings = DistillSettings(**{**ctx["distill"], **({"lr": final["lr"]} if final.get("lr") else {}),
                                      "hidden_weight": final["hidden_weight"],
                                      "attention_weight": final["attention_weight"], "layer_map": final["layer_map"]})
        settings.lr = lr_by_size(settings.lr, final.get("lr_teacher_size"), share)
        # the intermediate losses' targets: the fine-tuned teacher's forward (rewiring leaves its outputs unchanged,
        # and only heads and FFN neurons are reordered, so its hidden dims are the ones every slice keeps); when the
        # student was sliced from the teacher itself, the model already loaded is that teacher
        inner_teacher = None
        if settings.hidden_weight > 0 or settings.attention_weight > 0:
            inner_teacher = (source if init_path == ctx["teacher"]["dir"] else BertForSequenceClassification
                             .from_pretrained(ctx["teacher"]["dir"], attn_implementation="eager").eval())
        del source
        soft = _soft_targets(item["soft_logits_paths"])
        transfer = torch.load(item["transfer_path"]) if item.get("transfer_path") else None
        t_soft = _soft_targets(item["transfer_soft_paths"]) if transfer is not None and item.get("transfer_soft_paths") else None
        x, y, s, hard = with_transfer_set(tensors, labels, soft, ctx["train_idx"], transfer, t_soft)
        steps = steps_for(len(y), settings.batch_size, final["epochs"], None)
        info = distill(model, x, y, s, settings, steps, seed=int(ctx["seed"]) + int(item.get("seed_offset", 0)),
                       on_step=lambda st, l: store.heartbeat(tid) if st % 50 == 0 else None, hard_mask=hard,
                       teacher=inner_teacher)
        del inner_teacher
        out: dict = {"trial_id": tid, "steps": steps, "train_s": info["train_s"], "train_rows": len(y)}
        store.add_metric(tid, prefix + "lr", settings.lr, "train", "final", step=steps)  # what lr_by_size chose
        for name in ("hidden_weight", "attention_weight"):  # the intermediate losses this final trained with, when on
            if getattr(settings, name) > 0:
                store.add_metric(tid, prefix + name, getattr(settings, name), "train", "final", step=steps)
        store.add_artefact(ctx["job_id"], tid, prefix + "init", init_path)  # the model the student was sliced from
        for split in ("dev", "test"):
            idx = torch.as_tensor(ctx[f"{split}_idx"])
            sc = scores(predict_logits(model, {k: v[idx] for k, v in tensors.items()}), labels[idx])
            for name, value in sc.items():
                store.add_metric(tid, prefix + name, value, split, "final", step=steps)
            out[split] = sc
        if item.get("save_model"):
            path = pathlib.Path(ctx["artefact_dir"]) / f"trial-{item['number']:04d}{'-' + prefix.rstrip('_') if prefix else ''}"
            model.config.architectures = ["BertForSequenceClassification"]
            model.save_pretrained(path / "model")
            AutoTokenizer.from_pretrained(ctx["teacher"]["dir"]).save_pretrained(path / "model")
            store.add_artefact(ctx["job_id"], tid, "model", str(path / "model"))
            out["model_path"] = str(path / "model")
            if item.get("save_logits"):
                torch.save(predict_logits(model, tensors), path / "logits.pt")
                store.add_artefact(ctx["job_id"], tid, "logits", str(path / "logits.pt"))
                out["logits_path"] = str(path / "logits.pt")
                if transfer is not None:
                    torch.save(predict_logits(model, transfer["tensors"]), path / "transfer_logits.pt")
                    store.add_artefact(ctx["job_id"], tid, "transfer_logits", str(path / "transfer_logits.pt"))
                    out["transfer_logits_path"] = str(path / "transfer_logits.pt")
        return out
    finally:
        store.dispose()


# -- driver ---------------------------------------------------------------------------------------------------------------
def run_supernet_schedule(prep, store: Store, job_id: int, ctx: dict, log: Callable[[str], None], progress: bool,
                          deadline: float | None = None) -> None:
    """Supernet -> AutoDisc assistant -> student search on inherited weights -> finals. With a `deadline` (time.time(),
    from `budgets.time_s` or a caller), no proxy generation or final starts after it and the finals are teacher ->
    student: the assistant's own distillation, the longest single step, would leave no time for the students."""
    import ray
    from tqdm import tqdm

    from nas.distill import steps_for

    spec = prep.spec
    sn = spec.search.supernet
    space = prep.space
    cpus = max(1, os.cpu_count() or 1)
    train_idx = np.asarray(ctx["train_idx"])
    n_rewire = min(sn.rewire_rows, max(1, len(train_idx) // 5)) if sn.rewire else 0
    rng = np.random.default_rng(spec.seed + 17)
    held = np.sort(rng.choice(train_idx, size=n_rewire, replace=False)) if n_rewire else np.array([], dtype=int)
    sn_train = np.setdiff1d(train_idx, held)
    distill_cfg = space.distill.model_dump()
    steps = sn.steps or steps_for(len(sn_train), distill_cfg["batch_size"], sn.epochs, None)
    teacher_trial = store.trials(job_id, kind="teacher", state="COMPLETE")[0]
    t_lat = teacher_trial["latency"][-1]
    base = {
        **ctx, "storage": store.url, "job_id": job_id, "seed": spec.seed, "threads": cpus, "distill": distill_cfg,
        "artefact_dir": str(nas_home() / "artefacts" / f"job-{job_id}"), "latency": spec.latency.model_dump(),
        "final": spec.search.final.model_dump(), "max_seq_len": spec.budgets.max_seq_len,
        "teacher_p50_ms": t_lat["p50_ms"], "proxy": sn.proxy, "teacher_shape": teacher_trial["config"]["shape"],
        # the probe proxy's rows: train rows outside the rewiring slice, never dev
        "probe_idx": np.sort(np.random.default_rng(spec.seed + 29).choice(
            sn_train, size=min(sn.probe_rows, len(sn_train)), replace=False)).tolist() if sn.proxy == "probe" else [],
    }

    # 1. supernet ---------------------------------------------------------------------------------------------------------
    store.set_job_stage(job_id, "supernet")

    def supernet_round(round_no: int, space_: StudentSpace, steps_: int, extra_cfg: dict, extra_ctx: dict,
                       what: str) -> str:
        """Train (or resume, or reuse when complete) the supernet trial of one round; returns its model directory.
        `what` is logged when it trains."""
        sup = [t for t in store.trials(job_id, kind="supernet") if t["config"].get("round", 1) == round_no]
        if sup and sup[-1]["state"] == "COMPLETE":
            return next(a["path"] for a in sup[-1]["artefacts"] if a["kind"] == "supernet")
        log(what)
        config = {"space": space_.model_dump(), "steps": steps_, "supernet": sn.model_dump(), "rewire_rows": int(n_rewire),
                  **({"round": round_no} if round_no > 1 else {}), **extra_cfg}
        tid = sup[-1]["id"] if sup else store.add_trial(job_id, "supernet", config)["id"]
        task_ctx = {**base, "supernet": sn.model_dump(), "space": space_.model_dump(), "supernet_steps": steps_,
                    "train_idx": sn_train.tolist(), "rewire_idx": held.tolist(), **extra_ctx}
        ref = ray.remote(num_cpus=cpus)(train_supernet_task).remote(task_ctx, tid)
        bar = tqdm(total=steps_, desc="supernet" if round_no == 1 else f"supernet (round {round_no})", unit="step",
                   disable=not progress)
        while True:
            done, _ = ray.wait([ref], timeout=2.0)
            t = store.get_trial(tid)
            losses = [m for m in t["metrics"] if m["name"] == "train_loss"]
            if losses:
                bar.n = losses[-1]["step"]
                bar.set_postfix(loss=f"{losses[-1]['value']:.3f}")
                bar.refresh()
            if done:
                break
        bar.close()
        return ray.get(ref)

    full_space = union_space(space.student, space.assistant)
    supernet_dir = supernet_round(
        1, full_space, steps, {}, {},
        f"supernet: {'rewired ' if sn.rewire else ''}teacher -> {steps} sandwich steps over "
        f"{len(full_space.layers)}x{len(full_space.hidden)}x{len(full_space.heads)}x{len(full_space.ffn)} choices "
        f"(checkpoint every {sn.checkpoint_every})")
    base["supernet_dir"] = supernet_dir
    evaluate = ray.remote(num_cpus=cpus)(evaluate_shapes_task)

    def run_items(kind: str, shapes: list[Shape], extra: dict | None = None) -> list[dict]:
        items = []
        for s in shapes:
            t = store.add_trial(job_id, kind, {"shape": s.as_dict(), **(extra or {})})
            items.append({"trial_id": t["id"], "shape": s.as_dict()})
        return ray.get(evaluate.remote(base, items)) if items else []

    # 2. assistant (AutoDisc) ---------------------------------------------------------------------------------------------
    assistant = None
    ad = spec.search.autodisc
    if ad.enabled and space.assistant is not None:
        from nas.autodisc import Candidate, assistant_candidates, rank_candidates

        store.set_job_stage(job_id, "assistant")
        teacher_shape = Shape.from_dict(teacher_trial["config"]["shape"])
        done_keys = {Shape.from_dict(t["config"]["shape"]).key for t in store.trials(job_id, kind="assistant")}
        todo = [s for s in assistant_candidates(space.assistant, teacher_shape, space.student) if s.key not in done_keys]
        if todo:
            log(f"assistant: scoring {len(todo)} candidates on the supernet")
            run_items("assistant", todo)
        t_params = metric_value(teacher_trial, "params", "dev")
        cands, by_key = [], {}
        for t in store.trials(job_id, kind="assistant", state="COMPLETE"):
            shape = Shape.from_dict(t["config"]["shape"])
            p = metric_value(t, spec.objectives.metric, "dev", "proxy")
            if ad.scale_by == "latency":
                scale = t["latency"][-1]["p50_ms"] / t_lat["p50_ms"]
            else:
                scale = metric_value(t, "params", "dev", "proxy") / t_params
            cands.append(Candidate(shape, p, scale))
            by_key[shape.key] = t
        ranked = rank_candidates(cands, ad.lam)
        for c in ranked:
            t = by_key[c.shape.key]
            if metric_value(t, "tau", "dev", "proxy") is None:
                store.add_metric(t["id"], "scale", c.scale, "dev", "proxy")
                store.add_metric(t["id"], "tau", c.tau, "dev", "proxy")
        if ranked:
            assistant = by_key[ranked[0].shape.key]
            log(f"assistant: {ranked[0].shape.key} (P {ranked[0].metric:.4f}, scale {ranked[0].scale:.3f}, "
                f"τ {ranked[0].tau:.4f}, λ {ad.lam})")

    fin = spec.search.final
    final_task = ray.remote(num_cpus=cpus)(final_distill_task)
    teacher_soft = [ctx["teacher"]["logits_path"]]
    common: dict = {}

    def transfer_set() -> None:
        """The teacher-labelled transfer set (cached beside the teacher), once per run, when final.augment asks."""
        if fin.augment and "transfer_path" not in common:
            log(f"final: labelling {fin.augment} augmented copies of {len(train_idx)} train texts with the teacher (cached)")
            texts = list(prep.dataset.texts)
            common["transfer_path"] = ray.get(ray.remote(num_cpus=cpus)(transfer_set_task).remote(base, texts))

    def distilled_assistant() -> dict:
        """teacher -> assistant, once per job (its artefacts are reused on resume): model, logits, transfer logits."""
        nonlocal assistant
        transfer_set()
        assistant = store.get_trial(assistant["id"])
        arts = {a["kind"]: a["path"] for a in assistant["artefacts"]}
        if "logits" not in arts or "model" not in arts or (fin.augment and "transfer_logits" not in arts):
            log(f"final: distilling the assistant {Shape.from_dict(assistant['config']['shape']).key} from the teacher")
            r = ray.get(final_task.remote(base, {"trial_id": assistant["id"], "number": assistant["number"],
                                                 "shape": assistant["config"]["shape"], "soft_logits_paths": teacher_soft,
                                                 "save_model": True, "save_logits": True, **common}))
            arts = {"logits": r["logits_path"], "transfer_logits": r.get("transfer_logits_path"), "model": r["model_path"]}
        return arts

    def assistant_soft(arts: dict) -> list[str]:
        return [arts["logits"]] + (teacher_soft if fin.soft_targets == "average" else [])

    # 2b. AutoDisc's second round: a supernet over the student shapes, from the distilled assistant ------------------------
    student_space = space.student
    if ad.enabled and ad.second_round and assistant is not None:
        a_shape = Shape.from_dict(assistant["config"]["shape"])
        if deadline is not None:
            log("supernet (round 2): a wall-clock budget is set: the search stays on the first supernet")
        else:
            clipped, dropped = clip_space(space.student, a_shape)
            if clipped is None:
                log(f"supernet (round 2): no student choice of {', '.join(dropped)} fits inside the assistant "
                    f"{a_shape.key}; the search stays on the first supernet")
            else:
                student_space = clipped
                arts = distilled_assistant()
                steps2 = (steps_for(len(sn_train), distill_cfg["batch_size"], ad.second_round_epochs, None)
                          if ad.second_round_epochs else steps)
                store.set_job_stage(job_id, "supernet")
                base["supernet_dir"] = supernet_round(
                    2, student_space, steps2, {"from_assistant": a_shape.key, "from_trial": assistant["number"]},
                    {"init_dir": arts["model"], "target_logits_paths": assistant_soft(arts),
                     "out_name": "supernet-round2"},
                    f"supernet (round 2): {'rewired ' if sn.rewire else ''}distilled assistant {a_shape.key} -> "
                    f"{steps2} sandwich steps over the student shapes"
                    + (f" (choices larger than the assistant dropped: {dropped})" if dropped else ""))

    # 3. student search on inherited weights -------------------------------------------------------------------------------
    from nas.search.strategies import make_strategy

    store.set_job_stage(job_id, "search")
    strategy = make_strategy(spec.search.strategy, student_space, spec.seed,
                             **({"population": spec.search.population, "use_size": spec.objectives.size}
                                if spec.search.strategy == "evolution" else {}))
    students = store.trials(job_id, kind="student")
    for t in students:
        shape = Shape.from_dict(t["config"]["shape"])
        if t["state"] == "COMPLETE":
            strategy.tell(shape, trial_objectives(t, spec.objectives.metric, spec.objectives.latency, "proxy"))
        else:
            strategy.tell(shape, {})
    waiting = [t for t in students if t["state"] == "WAITING"]
    if waiting:
        ray.get(evaluate.remote(base, [{"trial_id": t["id"], "shape": t["config"]["shape"]} for t in waiting]))
    bar = tqdm(total=spec.budgets.trials, initial=len(students), desc="search", unit="shape", disable=not progress)
    generation = 0
    n_done = len(students)
    while n_done < spec.budgets.trials:
        if deadline is not None and time.time() >= deadline:
            log(f"search: the wall-clock budget is spent after {n_done} proxy evaluations")
            break
        n = min(spec.search.population, spec.budgets.trials - n_done)
        shapes = strategy.ask(n)
        if not shapes:
            log("search: the space is exhausted")
            break
        shapes = prune_by_predictor(store, job_id, shapes, spec, generation, log)
        for r in run_items("student", shapes, {"strategy": spec.search.strategy, "generation": generation, "source": "proxy"}):
            if r["state"] == "COMPLETE":
                strategy.tell(Shape.from_dict(r["shape"]), {"metric": r[spec.objectives.metric],
                                                            "latency_ms": r["p50_ms" if spec.objectives.latency == "p50" else "p90_ms"],
                                                            "params": r["params"]})
        generation += 1
        n_done += n
        bar.update(n)
    bar.close()

    # 4. final: standalone distillation of chosen front points --------------------------------------------------------------
    if fin.top_k == 0:
        return
    store.set_job_stage(job_id, "final")
    if assistant is not None and fin.two_step and deadline is not None:
        log("final: a wall-clock budget is set: finals are teacher -> student (no assistant distillation)")
        assistant = None
    if deadline is not None and time.time() >= deadline:
        log("final: the wall-clock budget is spent; no final starts")
        return
    transfer_set()
    soft, transfer_soft, init_dir = teacher_soft, None, None
    if assistant is not None and fin.two_step:
        arts = distilled_assistant()
        soft = assistant_soft(arts)
        if fin.student_init == "assistant":
            init_dir, assistant_shape = arts["model"], Shape.from_dict(assistant["config"]["shape"])
            log(f"final: students are sliced from the distilled assistant {assistant_shape.key}")
        if fin.augment:
            transfer_soft = [arts["transfer_logits"]]
            if fin.soft_targets == "average":
                import torch

                t_path = pathlib.Path(base["artefact_dir"]) / "transfer_teacher_logits.pt"
                t_path.parent.mkdir(parents=True, exist_ok=True)
                torch.save(torch.load(common["transfer_path"])["logits"], t_path)
                transfer_soft.append(str(t_path))
    if fin.student_init == "teacher":
        init_dir, assistant_shape = ctx["teacher"]["dir"], None
        log("final: students are sliced from the fine-tuned teacher")
    chosen = choose_final(store.trials(job_id, kind="student", state="COMPLETE"), fin.top_k, spec.objectives.metric,
                          spec.objectives.latency)
    todo = [t for t in chosen if metric_value(t, spec.objectives.metric, "dev", "final") is None]
    bar = tqdm(total=len(chosen), initial=len(chosen) - len(todo), desc="final", unit="student", disable=not progress)
    for t in todo:
        if deadline is not None and time.time() >= deadline:
            log(f"final: the wall-clock budget is spent after {bar.n} of {len(chosen)} finals")
            break
        item = {"trial_id": t["id"], "number": t["number"], "shape": t["config"]["shape"], **common}
        if fin.one_step_baseline and assistant is not None and fin.two_step:
            # teacher -> student with no assistant anywhere: sliced from the first (teacher-initialised) supernet, or
            # from the teacher when the students are
            ray.get(final_task.remote(base, {**item, "soft_logits_paths": teacher_soft, "metric_prefix": "one_step_",
                                             "init_dir": init_dir if fin.student_init == "teacher" else supernet_dir}))
        init = {}
        if init_dir is not None:
            shape = Shape.from_dict(item["shape"])
            if assistant_shape is None or shape.fits_in(assistant_shape):
                init = {"init_dir": init_dir}
            else:
                log(f"final: {shape.key} does not fit inside the assistant {assistant_shape.key}; sliced from the "
                    "supernet instead")
        ray.get(final_task.remote(base, {**item, "soft_logits_paths": soft, "save_model": True, **init,
                                         **({"transfer_soft_paths": transfer_soft} if transfer_soft else {})}))
        bar.update(1)
    bar.close()


def latency_limit(spec) -> tuple[str, float] | None:
    c = spec.constraints
    if c.latency_p90_ms is not None:
        return "p90_ms", c.latency_p90_ms
    if c.latency_p50_ms is not None:
        return "p50_ms", c.latency_p50_ms
    return None


def prune_by_predictor(store: Store, job_id: int, shapes: list[Shape], spec, generation: int, log,
                       min_fit: int = 8) -> list[Shape]:
    """With a latency constraint and enough of the job's own measurements, fit the additive predictor and record the
    shapes it is sure miss the limit as PRUNED trials (never measured); the rest, ordered fastest-predicted first."""
    from nas.latency.predictor import feasible, fit_predictor

    limit = latency_limit(spec)
    if limit is None:
        return shapes
    field, ms = limit
    measured = [(Shape.from_dict(t["config"]["shape"]), t["latency"][-1][field])
                for t in store.trials(job_id, kind="student", state="COMPLETE") if t["latency"]]
    if len(measured) < min_fit:
        return shapes
    pred = fit_predictor([s for s, _ in measured], [v for _, v in measured])
    keep = []
    for s in shapes:
        if feasible(pred, s, ms):
            keep.append(s)
        else:
            t = store.add_trial(job_id, "student", {"shape": s.as_dict(), "strategy": spec.search.strategy,
                                                    "generation": generation, "source": "predictor"})
            store.finish_trial(t["id"], "PRUNED", error=f"predicted {field[:3]} {pred.predict(s):.2f} ms > limit {ms} ms "
                                                      f"(predictor fitted on {pred.n_fit} measurements, MAPE {pred.fit_mape:.3f})")
    if len(keep) < len(shapes):
        log(f"search: the latency predictor pruned {len(shapes) - len(keep)} of {len(shapes)} candidates "
            f"({field[:3]} limit {ms} ms)")
    return sorted(keep, key=pred.predict)


def choose_final(trials: list[dict], k: int, metric: str, pct: str) -> list[dict]:
    """Up to k points spread along the proxy front (by latency); when the front is smaller, the next non-dominated ranks."""
    from nas.search.pareto import non_dominated_sort

    if not trials:
        return []
    objs = [[o["metric"], o["latency_ms"]] for o in (trial_objectives(t, metric, pct, "proxy") for t in trials)]
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
