"""Venus-style AutoML of distillation hyperparameters for the shapes a search put on its front.

For each chosen shape:
1. sample search: configurations from `search_spaces/hpo/*.yaml` distilled on a stratified sample of train (default 6%)
   under Ray Tune, dev accuracy reported `reports` times per trial so that an early-stopping scheduler (ASHA by default,
   Hyperband, BOHB's own) stops bad ones; every configuration is a trial of kind `hpo-sample` (PRUNED when stopped);
2. full re-training: the top-k configurations and the space's defaults distilled on all of train (`hpo-full` trials,
   linked to their sample trial), so "tuned vs default" is measured at equal data and steps;
3. a summary trial of kind `hpo` per shape: the sample-vs-full rank agreement (Spearman), the search and re-training
   times, default and tuned dev/test accuracy.

Every stage resumes from the store: finished sample trials are replayed into a fresh searcher (`hpo_search.replay`),
finished full trials are kept.
"""

from __future__ import annotations

import os
import pathlib
import time
from typing import Callable

import numpy as np

from ray import tune

from nas.hpo_search import ALGORITHMS, PARAM_TYPES, make_scheduler, make_searcher, replay
from nas.spec import SEARCH_SPACE_DIR, SpecError, read_yaml
from nas.store.store import Store, metric_value, nas_home

HPO_SPACE_DIR = SEARCH_SPACE_DIR / "hpo"
KNOWN_PARAMS = ("lr", "alpha_soft", "beta_hard", "temperature", "warmup_ratio", "batch_size", "weight_decay",
                "soft_loss", "hidden_weight", "attention_weight", "relevance_weight", "hinge_weight", "hinge_margin")


# -- the parameter table ------------------------------------------------------------------------------------------------
def load_hpo_space(name: str) -> dict[str, dict]:
    """`search_spaces/hpo/<name>.yaml` (or a path): {params: {name: {type, low, high[, q] | values}}}, checked with
    field paths (`hpo.space.params.lr.low`)."""
    p = pathlib.Path(name)
    path = p if (p.suffix in (".yaml", ".yml") or p.exists()) else HPO_SPACE_DIR / f"{name}.yaml"
    if not path.is_file():
        known = ", ".join(sorted(x.stem for x in HPO_SPACE_DIR.glob("*.yaml")))
        raise SpecError("hpo.space", f"no such hyperparameter space {name!r} (known: {known}; or a YAML path)")
    data = read_yaml(path, "hpo.space")
    if not isinstance(data, dict) or not isinstance(data.get("params"), dict) or not data["params"]:
        raise SpecError("hpo.space.params", f"{path} must hold `params:`, a non-empty mapping of parameter tables")
    out = {}
    for name_, p_ in data["params"].items():
        f = f"hpo.space.params.{name_}"
        if name_ not in KNOWN_PARAMS:
            raise SpecError(f, f"unknown hyperparameter; known: {', '.join(KNOWN_PARAMS)}")
        if not isinstance(p_, dict) or p_.get("type") not in PARAM_TYPES:
            raise SpecError(f + ".type", f"expected one of {', '.join(PARAM_TYPES)}; found {p_!r}")
        t = p_["type"]
        if t == "choice":
            vals = p_.get("values")
            if not isinstance(vals, list) or not vals:
                raise SpecError(f + ".values", "a choice needs a non-empty list of values")
            out[name_] = {"type": t, "values": vals}
            continue
        lo, hi = p_.get("low"), p_.get("high")
        if not all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in (lo, hi)) or not lo < hi:
            raise SpecError(f + ".low", f"needs numbers low < high; found low={lo!r} high={hi!r}")
        if t == "loguniform" and lo <= 0:
            raise SpecError(f + ".low", f"loguniform needs low > 0; found {lo}")
        entry = {"type": t, "low": float(lo), "high": float(hi)}
        if t == "quniform":
            q = p_.get("q")
            if not isinstance(q, (int, float)) or q <= 0:
                raise SpecError(f + ".q", f"quniform needs a step q > 0; found {q!r}")
            entry["q"] = float(q)
        out[name_] = entry
    return out


def default_point(params: dict[str, dict], defaults: dict) -> dict:
    """The space's own defaults (search space `distill:` block) as a point of the HPO space, clipped into it."""
    point = {}
    for name, p in params.items():
        d = defaults.get(name, 0.0 if name.endswith("_weight") else None)
        if p["type"] == "choice":
            point[name] = d if d in p["values"] else p["values"][0]
        else:
            point[name] = float(np.clip(d if d is not None else p["low"], p["low"], p["high"]))
    return point


# -- one configuration, trained and scored (inside Ray workers) ---------------------------------------------------------
def train_config(ctx: dict, hp: dict, rows: list[int], epochs: float, seed: int, reports: int = 1,
                 on_report: Callable[[dict], None] | None = None, with_test: bool = False) -> dict:
    """Distil ctx's shape from the teacher with `hp` on train `rows` for `epochs`; dev scores `reports` times (evenly
    over the steps) passed to `on_report`; returns the last scores (+ test when asked) and the training seconds."""
    import torch
    from transformers.utils import logging as hf_logging

    from nas.distill import DistillSettings, distill, predict_logits, scores, steps_for
    from nas.supernet import Shape, extract_subnet
    from nas.teacher import load_teacher

    hf_logging.set_verbosity_error()
    torch.set_num_threads(int(ctx.get("threads", 1)))
    tensors = torch.load(ctx["tokens_path"])
    labels = torch.as_tensor(ctx["labels"])
    teacher_logits = torch.load(ctx["teacher"]["logits_path"])
    aux = torch.load(ctx["aux_path"]) if ctx.get("aux_path") else None
    teacher = load_teacher(ctx["teacher"])
    student = extract_subnet(teacher, Shape.from_dict(ctx["shape"]))
    settings = DistillSettings.from_dict({**ctx["defaults"], **hp})
    if settings.relevance_weight > 0 and aux is None:
        settings.relevance_weight = 0.0  # no auxiliary teacher in this job: the axis is inert
    needs_teacher = settings.hidden_weight > 0 or settings.attention_weight > 0
    train = torch.as_tensor(rows)
    dev = torch.as_tensor(ctx["dev_idx"])
    steps = steps_for(len(train), settings.batch_size, epochs, None)
    marks = sorted({max(1, round(steps * (r + 1) / reports)) for r in range(reports)})
    t0 = time.perf_counter()
    state: dict = {"train_s": 0.0}

    def evaluate(step: int) -> None:
        state["train_s"] += time.perf_counter() - state.get("t", t0)
        dev_scores = scores(predict_logits(student, {k: v[dev] for k, v in tensors.items()}), labels[dev])
        student.train()
        state.update(dev_scores, steps=step, data_seen=step * settings.batch_size, t=time.perf_counter())
        if on_report:
            on_report({**dev_scores, "steps": step, "data_seen": step * settings.batch_size,
                       "train_s": state["train_s"]})

    def on_step(step: int, loss: float) -> None:
        if step + 1 in marks:
            evaluate(step + 1)

    distill(student, {k: v[train] for k, v in tensors.items()}, labels[train], teacher_logits[train], settings, steps,
            seed=seed, on_step=on_step, teacher=teacher if needs_teacher else None,
            aux_probs=aux[train] if (aux is not None and settings.relevance_weight > 0) else None)
    out = {k: state[k] for k in ("accuracy", "f1_macro", "steps", "train_s")}
    if with_test:
        test = torch.as_tensor(ctx["test_idx"])
        out["test"] = scores(predict_logits(student, {k: v[test] for k, v in tensors.items()}), labels[test])
    return out


def hpo_trainable(config: dict, ctx: dict) -> None:
    train_config(ctx, config, ctx["sample_idx"], ctx["epochs"], ctx["seed"], ctx["reports"],
                 on_report=lambda m: tune.report(m))


def _full_task(ctx: dict, hp: dict, seed: int) -> dict:
    return train_config(ctx, hp, ctx["train_idx"], ctx["full_epochs"], seed, reports=1, with_test=True)


# -- the stage (driver) -------------------------------------------------------------------------------------------------
def chosen_shapes(store: Store, job_id: int, spec) -> list[dict]:
    from nas.pipeline import front_rows

    if spec.hpo.shapes:
        return [s.model_dump() for s in spec.hpo.shapes]
    front = front_rows(store, job_id)["front"]
    best = sorted(front, key=lambda r: -(r["metric"] or 0.0))[: spec.hpo.top_k_shapes]
    return [r["shape"] for r in best]


def _history(trials: list[dict], params: dict, reports: int) -> list[dict]:
    out = []
    for t in trials:
        if t["state"] not in ("COMPLETE", "PRUNED"):
            continue
        acc = metric_value(t, "accuracy", "dev", "proxy")
        if acc is None:
            continue
        out.append({"config": {k: t["config"]["hparams"][k] for k in params}, "accuracy": acc,
                    "train_s": metric_value(t, "train_s", "dev", "proxy") or 0.0,
                    "budget": metric_value(t, "budget_reached", "dev", "proxy") or reports})
    return out


def run_sample_search(store: Store, job_id: int, shape: dict, ctx: dict, hpo, params: dict, log,
                      storage_dir: pathlib.Path) -> float:
    """Stage 1 for one shape under Ray Tune; returns the seconds it took in this run. Resumable."""
    key = _shape_key(shape)
    mine = [t for t in store.trials(job_id, kind="hpo-sample") if t["config"].get("shape_key") == key]
    for t in mine:
        if t["state"] in ("RUNNING", "WAITING"):
            store.finish_trial(t["id"], "FAILED", error="interrupted: the job stopped while this configuration ran")
    mine = [store.get_trial(t["id"]) for t in mine]
    history = _history(mine, params, hpo.reports)
    remaining = hpo.samples - len(mine)
    if remaining <= 0:
        return 0.0
    points = [default_point(params, ctx["defaults"])] if (hpo.include_default and not mine) else []
    searcher = make_searcher(hpo.algorithm, params, "accuracy", ctx["seed"] + len(mine), hpo.max_concurrent, points,
                             population=max(4, min(hpo.samples // 2, 8)))
    replayed = replay(searcher, history, params)
    if replayed:
        log(f"hpo {key}: {replayed} finished configuration(s) replayed into the {hpo.algorithm} searcher")
    scheduler = make_scheduler(hpo.algorithm, hpo.scheduler, "accuracy", hpo.reports)
    record = _RecordTrials(store.url, job_id, {
        "shape": shape, "shape_key": key, "algorithm": hpo.algorithm, "scheduler": hpo.scheduler,
        "sample_fraction": hpo.sample_fraction, "epochs": hpo.epochs}, hpo.reports)

    cpus = max(1, int(ctx.get("threads", 1)))
    t0 = time.perf_counter()
    tuner = tune.Tuner(
        tune.with_resources(tune.with_parameters(hpo_trainable, ctx=ctx), {"cpu": cpus}),
        tune_config=tune.TuneConfig(search_alg=searcher, scheduler=scheduler, num_samples=remaining,
                                    max_concurrent_trials=hpo.max_concurrent, reuse_actors=True),
        run_config=tune.RunConfig(name=f"job-{job_id}-hpo-{key}-{int(time.time())}", storage_path=str(storage_dir),
                                  callbacks=[record], verbose=0,
                                  failure_config=tune.FailureConfig(max_failures=1)),
    )
    tuner.fit()
    return time.perf_counter() - t0


class _RecordTrials(tune.Callback):
    """Ray Tune callback (runs in the driver): each configuration becomes an `hpo-sample` trial in the store, each
    report its metrics, a scheduler stop PRUNED. Holds the store's URL, not the store: Tune pickles its callbacks."""

    def __init__(self, url: str, job_id: int, base_config: dict, reports: int):
        self.url, self.job_id, self.base, self.reports = url, job_id, base_config, reports
        self.ids: dict[str, int] = {}
        self._store = None

    def __getstate__(self):
        return {**self.__dict__, "_store": None}

    @property
    def store(self) -> Store:
        if self._store is None:
            self._store = Store(self.url, migrate=False)
        return self._store

    def on_trial_start(self, iteration, trials, trial, **info):
        if trial.trial_id in self.ids:  # BOHB's scheduler pauses trials and starts them again: one row per trial
            return
        t = self.store.add_trial(self.job_id, "hpo-sample", {**self.base, "hparams": dict(trial.config),
                                                             "tune_trial_id": trial.trial_id}, state="RUNNING")
        self.store.start_trial(t["id"])
        self.ids[trial.trial_id] = t["id"]

    def on_trial_result(self, iteration, trials, trial, result, **info):
        tid = self.ids.get(trial.trial_id)
        if tid is None:
            return
        step = int(result.get("training_iteration", 0))
        for name in ("accuracy", "f1_macro", "train_s", "data_seen"):
            if name in result:
                self.store.add_metric(tid, name, float(result[name]), "dev", "proxy", step=step)
        self.store.heartbeat(tid)

    def on_trial_complete(self, iteration, trials, trial, **info):
        tid = self.ids.get(trial.trial_id)
        if tid is None:
            return
        reached = int((trial.last_result or {}).get("training_iteration", 0))
        self.store.add_metric(tid, "budget_reached", reached, "dev", "proxy")
        self.store.finish_trial(tid, "COMPLETE" if reached >= self.reports else "PRUNED")

    def on_trial_error(self, iteration, trials, trial, **info):
        tid = self.ids.get(trial.trial_id)
        if tid is not None:
            self.store.finish_trial(tid, "FAILED", error=f"Ray Tune trial error (see {getattr(trial, 'path', '')})")


def _shape_key(shape: dict) -> str:
    from nas.supernet import Shape

    return Shape.from_dict(shape).key


def spearman(a: list[float], b: list[float]) -> float | None:
    if len(a) < 3:
        return None
    from scipy.stats import spearmanr

    r = spearmanr(a, b).statistic
    return None if r is None or np.isnan(r) else float(r)


def run_full_retrain(store: Store, job_id: int, shape: dict, ctx: dict, hpo, params: dict, log) -> float:
    """Stage 2 for one shape: the top-k sample configurations and the defaults on all of train. Resumable."""
    import ray

    key = _shape_key(shape)
    samples = [t for t in store.trials(job_id, kind="hpo-sample") if t["config"].get("shape_key") == key
               and t["state"] in ("COMPLETE", "PRUNED")]

    def rank(t):  # configurations that ran their whole budget first, then by their last sample score
        return (metric_value(t, "budget_reached", "dev", "proxy") or 0, metric_value(t, "accuracy", "dev", "proxy") or 0.0)

    default = default_point(params, ctx["defaults"])
    # the defaults are re-trained anyway (as "default"): the sample trial that tried them is not a second candidate
    samples = [t for t in samples if {k: t["config"]["hparams"][k] for k in params} != default]
    top = sorted(samples, key=rank, reverse=True)[: hpo.top_k]
    wanted = [("default", default, None)] + [(f"sample-{t['number']}", {k: t["config"]["hparams"][k] for k in params},
                                              t["number"]) for t in top]
    done = {t["config"].get("label"): t for t in store.trials(job_id, kind="hpo-full")
            if t["config"].get("shape_key") == key and t["state"] == "COMPLETE"}
    for t in store.trials(job_id, kind="hpo-full"):
        if t["config"].get("shape_key") == key and t["state"] in ("RUNNING", "WAITING"):
            store.finish_trial(t["id"], "FAILED", error="interrupted: the job stopped while this configuration ran")
    todo = [w for w in wanted if w[0] not in done]
    if not todo:
        return 0.0
    task = ray.remote(num_cpus=max(1, int(ctx.get("threads", 1))))(_full_task)
    t0 = time.perf_counter()
    pending = {}
    for label, hp, number in todo:
        t = store.add_trial(job_id, "hpo-full", {"shape": shape, "shape_key": key, "hparams": hp, "label": label,
                                                 "sample_trial": number, "epochs": ctx["full_epochs"]}, state="RUNNING")
        store.start_trial(t["id"])
        pending[task.remote(ctx, hp, ctx["seed"])] = t["id"]
    while pending:
        ready, _ = ray.wait(list(pending), num_returns=1)
        tid = pending.pop(ready[0])
        try:
            res = ray.get(ready[0])
        except Exception as exc:  # a failing configuration is recorded; the others go on
            store.finish_trial(tid, "FAILED", error=f"{type(exc).__name__}: {exc}"[:2000])
            continue
        for name in ("accuracy", "f1_macro"):
            store.add_metric(tid, name, res[name], "dev", "final", step=res["steps"])
            store.add_metric(tid, name, res["test"][name], "test", "final", step=res["steps"])
        store.add_metric(tid, "train_s", res["train_s"], "dev", "final")
        store.finish_trial(tid, "COMPLETE")
        trial = store.get_trial(tid)
        log(f"hpo {key}: {trial['config']['label']} on all data: dev {res['accuracy']:.4f} test "
            f"{res['test']['accuracy']:.4f}")
    return time.perf_counter() - t0


def summarise(store: Store, job_id: int, shape: dict, hpo, sample_s: float, full_s: float) -> dict:
    key = _shape_key(shape)
    full = [t for t in store.trials(job_id, kind="hpo-full") if t["config"].get("shape_key") == key
            and t["state"] == "COMPLETE"]
    samples = {t["number"]: t for t in store.trials(job_id, kind="hpo-sample")}
    default = next((t for t in full if t["config"]["label"] == "default"), None)
    tuned = [t for t in full if t["config"]["label"] != "default"]
    pairs = [(metric_value(samples[t["config"]["sample_trial"]], "accuracy", "dev", "proxy"),
              metric_value(t, "accuracy", "dev", "final")) for t in tuned if t["config"]["sample_trial"] in samples]
    pairs = [p for p in pairs if p[0] is not None and p[1] is not None]
    best = max(tuned, key=lambda t: metric_value(t, "accuracy", "dev", "final"), default=None)
    out = {
        "shape": key, "algorithm": hpo.algorithm, "scheduler": hpo.scheduler, "sample_fraction": hpo.sample_fraction,
        "rank_corr_sample_vs_full": spearman([p[0] for p in pairs], [p[1] for p in pairs]), "rank_n": len(pairs),
        "sample_search_s": sample_s, "full_retrain_s": full_s,
        "default_dev": metric_value(default, "accuracy", "dev") if default else None,
        "default_test": metric_value(default, "accuracy", "test") if default else None,
        "tuned_dev": metric_value(best, "accuracy", "dev") if best else None,
        "tuned_test": metric_value(best, "accuracy", "test") if best else None,
        "tuned_hparams": best["config"]["hparams"] if best else None,
    }
    return out


def run_hpo_stage(prep, store: Store, job_id: int, ctx: dict, log: Callable[[str], None], progress: bool) -> list[dict]:
    """The stage as the pipeline runs it, after the architecture search. Returns one summary per shape."""
    from nas.data import stratified_sample

    spec = prep.spec
    hpo = spec.hpo
    params = load_hpo_space(hpo.space)
    store.set_job_stage(job_id, "hpo")
    shapes = chosen_shapes(store, job_id, spec)
    if not shapes:
        log("hpo: no shape on the front to tune")
        return []
    train_idx = np.asarray(ctx["train_idx"])
    labels = np.asarray(ctx["labels"])
    sample_idx = train_idx[stratified_sample(labels[train_idx], hpo.sample_fraction, spec.seed)]
    threads = max(1, (os.cpu_count() or 1) // hpo.max_concurrent)
    base = {**ctx, "defaults": prep.space.distill.model_dump(), "seed": spec.seed, "threads": threads,
            "sample_idx": sample_idx.tolist(), "epochs": hpo.epochs, "reports": hpo.reports,
            "full_epochs": hpo.full_epochs or spec.budgets.epochs}
    if "relevance_weight" in params:
        from nas.aux_teacher import aux_probs_path

        base["aux_path"] = str(aux_probs_path(prep.dataset, ctx, spec.seed, log))
    summaries = []
    done = {t["config"].get("shape_key"): t for t in store.trials(job_id, kind="hpo", state="COMPLETE")}
    for shape in shapes:
        key = _shape_key(shape)
        if key in done:
            summaries.append(done[key]["config"]["summary"])
            continue
        log(f"hpo {key}: {hpo.samples} configurations ({hpo.algorithm}, {hpo.scheduler}) on {len(sample_idx)} sample "
            f"rows ({hpo.sample_fraction:.0%} of train), then the top {hpo.top_k} + defaults on all {len(train_idx)}")
        ctx_s = {**base, "shape": shape}
        sample_s = run_sample_search(store, job_id, shape, ctx_s, hpo, params, log, nas_home() / "ray_results")
        full_s = run_full_retrain(store, job_id, shape, ctx_s, hpo, params, log)
        summary = summarise(store, job_id, shape, hpo, sample_s, full_s)
        t = store.add_trial(job_id, "hpo", {"shape": shape, "shape_key": key, "summary": summary}, state="RUNNING")
        for name, field in (("rank_corr_sample_vs_full", "rank_corr_sample_vs_full"),
                            ("sample_search_s", "sample_search_s"), ("full_retrain_s", "full_retrain_s")):
            if summary[field] is not None:
                store.add_metric(t["id"], name, summary[field], "dev", "final")
        for split in ("dev", "test"):
            for which in ("default", "tuned"):
                if summary[f"{which}_{split}"] is not None:
                    store.add_metric(t["id"], f"{which}_accuracy", summary[f"{which}_{split}"], split, "final")
        store.finish_trial(t["id"], "COMPLETE")
        log(f"hpo {key}: default dev {summary['default_dev']}, tuned dev {summary['tuned_dev']} "
            f"(test {summary['default_test']} -> {summary['tuned_test']}); sample-vs-full Spearman "
            f"{summary['rank_corr_sample_vs_full']} over {summary['rank_n']}")
        summaries.append(summary)
    return summaries


__all__ = ["ALGORITHMS", "load_hpo_space", "run_hpo_stage", "train_config", "default_point", "spearman"]
