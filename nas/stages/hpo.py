"""Venus-style AutoML of distillation hyperparameters for the shapes a search put on its front.

For each chosen shape:
1. sample search: configurations from `search_spaces/hpo/*.yaml` distilled on a stratified sample of train (default 6%)
   under Ray Tune, dev accuracy reported `reports` times per trial so that an early-stopping scheduler (ASHA by default,
   Hyperband, BOHB's own) stops bad ones; every configuration is a trial of kind `hpo-sample` (PRUNED when stopped);
2. full re-training: the top-k configurations and the space's defaults distilled on all of train (`hpo-full` trials,
   linked to their sample trial), so "tuned vs default" is measured at equal data and steps;
3. a summary trial of kind `hpo` per shape: the sample-vs-full rank agreement (Spearman), the search and re-training
   times, default and tuned dev/test accuracy.

Every stage resumes from the store: finished sample trials are replayed into a fresh searcher (`nas.hpo.searchers.replay`),
finished full trials are kept."""

from __future__ import annotations

import pathlib
import time

import numpy as np
from ray import tune

from nas.context import JobContext
from nas.data import stratified_sample
from nas.distill.aux_teacher import aux_probs_path
from nas.hpo import make_searcher
from nas.hpo.record import RecordTrials
from nas.hpo.searchers import make_scheduler, replay
from nas.hpo.space import default_point, load_hpo_space
from nas.spec.errors import SpecError
from nas.spec.job import JobSpec
from nas.store.engine import nas_home
from nas.store.records import metric_value
from nas.store.store import Store
from nas.students.shape import Shape
from nas.workers.hpo import HPOTask, full_retrain_task, hpo_trainable


def chosen_shapes(store: Store, job_id: int, spec) -> list[dict]:
    from nas.results.front import front_rows

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


def run_sample_search(store: Store, ctx: JobContext, task: HPOTask, hpo, params: dict,
                      storage_dir: pathlib.Path, job_id: int | None = None) -> float:
    """Stage 1 for one shape under Ray Tune; returns the seconds it took in this run. Resumable."""
    job_id, shape, log = job_id or ctx.job_id, task.shape, ctx.say
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
    points = [default_point(params, task.defaults)] if (hpo.include_default and not mine) else []
    searcher = make_searcher(hpo.algorithm, params, "accuracy", ctx.seed + len(mine), hpo.max_concurrent, points,
                             population=max(4, min(hpo.samples // 2, 8)))
    replayed = replay(searcher, history, params)
    if replayed:
        log(f"hpo {key}: {replayed} finished configuration(s) replayed into the {hpo.algorithm} searcher")
    scheduler = make_scheduler(hpo.algorithm, hpo.scheduler, "accuracy", hpo.reports)
    record = RecordTrials(store.url, job_id, {
        "shape": shape, "shape_key": key, "algorithm": hpo.algorithm, "scheduler": hpo.scheduler,
        "sample_fraction": hpo.sample_fraction, "epochs": hpo.epochs}, hpo.reports,
        {"device": ctx.compute.device, "precision": ctx.compute.precision})

    cpus = max(1, task.threads)
    t0 = time.perf_counter()
    tuner = tune.Tuner(
        tune.with_resources(tune.with_parameters(hpo_trainable, ctx=ctx, task=task),
                            {"cpu": cpus, **({"gpu": ctx.compute.gpus_per_trial} if ctx.compute.gpus_per_trial else {})}),
        tune_config=tune.TuneConfig(search_alg=searcher, scheduler=scheduler, num_samples=remaining,
                                    max_concurrent_trials=hpo.max_concurrent, reuse_actors=True),
        run_config=tune.RunConfig(name=f"job-{job_id}-hpo-{key}-{int(time.time())}", storage_path=str(storage_dir),
                                  callbacks=[record], verbose=0,
                                  failure_config=tune.FailureConfig(max_failures=1)),
    )
    tuner.fit()
    return time.perf_counter() - t0


def _shape_key(shape: dict) -> str:
    return Shape.from_dict(shape).key


def spearman(a: list[float], b: list[float]) -> float | None:
    if len(a) < 3:
        return None
    from scipy.stats import spearmanr

    r = spearmanr(a, b).statistic
    return None if r is None or np.isnan(r) else float(r)


def run_full_retrain(store: Store, ctx: JobContext, task: HPOTask, hpo, params: dict, job_id: int | None = None) -> float:
    """Stage 2 for one shape: the top-k sample configurations and the defaults on all of train. Resumable."""
    import ray

    job_id, shape, log = job_id or ctx.job_id, task.shape, ctx.say
    key = _shape_key(shape)
    samples = [t for t in store.trials(job_id, kind="hpo-sample") if t["config"].get("shape_key") == key
               and t["state"] in ("COMPLETE", "PRUNED")]

    def rank(t):  # configurations that ran their whole budget first, then by their last sample score
        return (metric_value(t, "budget_reached", "dev", "proxy") or 0, metric_value(t, "accuracy", "dev", "proxy") or 0.0)

    default = default_point(params, task.defaults)
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
    remote = ray.remote(num_cpus=max(1, task.threads), **ctx.compute.ray_resources())(full_retrain_task)
    t0 = time.perf_counter()
    pending = {}
    for label, hp, number in todo:
        t = store.add_trial(job_id, "hpo-full", {"shape": shape, "shape_key": key, "hparams": hp, "label": label,
                                                 "sample_trial": number, "epochs": task.full_epochs}, state="RUNNING")
        store.start_trial(t["id"])
        store.set_trial_compute(t["id"], {"device": ctx.compute.device, "precision": ctx.compute.precision})
        pending[remote.remote(ctx, task, hp, ctx.seed)] = t["id"]
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


def summarise_shape(store: Store, job_id: int, shape: dict, hpo, sample_s: float, full_s: float) -> dict:
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


def check(spec: JobSpec, teacher_config: dict) -> None:
    """The hyperparameter space parses and every explicit shape fits inside the teacher."""
    if spec.hpo is None:
        return
    from nas.teachers import family

    load_hpo_space(spec.hpo.space)
    limits = Shape(**family(teacher_config.get("model_type", "bert")).shape_limits(teacher_config))
    for i, sh in enumerate(spec.hpo.shapes):
        try:
            Shape.from_dict(sh.model_dump()).check_fits(limits)
        except ValueError as exc:
            raise SpecError(f"hpo.shapes[{i}]", str(exc)) from None


def run(ctx: JobContext, store: Store) -> list[dict]:
    """The stage as the pipeline runs it, after the architecture search. Returns one summary per shape."""
    spec, hpo = ctx.spec, ctx.spec.hpo
    params = load_hpo_space(hpo.space)
    store.set_job_stage(ctx.job_id, "hpo")
    shapes = chosen_shapes(store, ctx.job_id, spec)
    if not shapes:
        ctx.say("hpo: no shape on the front to tune")
        return []
    train_idx, labels = np.asarray(ctx.train_idx), np.asarray(ctx.labels)
    sample_idx = train_idx[stratified_sample(labels[train_idx], hpo.sample_fraction, spec.seed)]
    aux_path = None
    if "relevance_weight" in params:
        aux_path = str(aux_probs_path(ctx.dataset, ctx.train_idx, ctx.dev_idx, spec.seed, ctx.say))
    summaries = []
    done = {t["config"].get("shape_key"): t for t in store.trials(ctx.job_id, kind="hpo", state="COMPLETE")}
    for shape in shapes:
        key = _shape_key(shape)
        if key in done:
            summaries.append(done[key]["config"]["summary"])
            continue
        ctx.say(f"hpo {key}: {hpo.samples} configurations ({hpo.algorithm}, {hpo.scheduler}) on {len(sample_idx)} "
                f"sample rows ({hpo.sample_fraction:.0%} of train), then the top {hpo.top_k} + defaults on all "
                f"{len(train_idx)}")
        task = HPOTask(shape=shape, defaults=ctx.space.distill.model_dump(), sample_idx=sample_idx.tolist(),
                       epochs=hpo.epochs, reports=hpo.reports, full_epochs=hpo.full_epochs or spec.budgets.epochs,
                       threads=max(1, ctx.threads // hpo.max_concurrent), aux_path=aux_path)
        sample_s = run_sample_search(store, ctx, task, hpo, params, nas_home() / "ray_results")
        full_s = run_full_retrain(store, ctx, task, hpo, params)
        summary = summarise_shape(store, ctx.job_id, shape, hpo, sample_s, full_s)
        record_summary(store, ctx, shape, summary)
        ctx.say(f"hpo {key}: default dev {summary['default_dev']}, tuned dev {summary['tuned_dev']} "
                f"(test {summary['default_test']} -> {summary['tuned_test']}); sample-vs-full Spearman "
                f"{summary['rank_corr_sample_vs_full']} over {summary['rank_n']}")
        summaries.append(summary)
    return summaries


def record_summary(store: Store, ctx: JobContext, shape: dict, summary: dict) -> None:
    """The shape's summary as a COMPLETE `hpo` trial with its figures as metrics."""
    t = store.add_trial(ctx.job_id, "hpo", {"shape": shape, "shape_key": _shape_key(shape), "summary": summary},
                        state="RUNNING")
    for name in ("rank_corr_sample_vs_full", "sample_search_s", "full_retrain_s"):
        if summary[name] is not None:
            store.add_metric(t["id"], name, summary[name], "dev", "final")
    for split in ("dev", "test"):
        for which in ("default", "tuned"):
            if summary[f"{which}_{split}"] is not None:
                store.add_metric(t["id"], f"{which}_accuracy", summary[f"{which}_{split}"], split, "final")
    store.finish_trial(t["id"], "COMPLETE")
