"""A job is its stages in order: teacher -> search -> front. Each stage starts from what the store already holds, so
`nas resume JOB` continues a killed job, losing at most the trials that were running."""

from __future__ import annotations

import os
import pathlib
import time
from dataclasses import dataclass
from typing import Callable

import numpy as np


from nas.data import Dataset, load_dataset, split_indices, stratified_sample, token_cache_path, tokenize
from nas.spec import JobSpec, SearchSpace, SpecError, load_search_space, parse_spec
from nas.store.store import Store, metric_value, nas_home, trial_objectives


@dataclass
class Prepared:
    spec: JobSpec
    teacher_config: dict
    space: SearchSpace
    dataset: Dataset


def prepare(spec: JobSpec) -> Prepared:
    """Everything that can be wrong with the user's input is found here, before the store is touched."""
    from nas.teacher import teacher_config

    tcfg = teacher_config(spec.teacher)
    space = load_search_space(spec.search_space, tcfg)
    lat = spec.latency
    if lat.dtype in ("fp16", "bf16") and lat.device == "cpu":
        raise SpecError("latency.dtype", f"{lat.dtype} is measured on device cuda; found device cpu (use fp32)")
    if lat.device == "cuda" and (lat.runtime != "eager" or any(r != "eager" for r in lat.extra_runtimes)):
        raise SpecError("latency.runtime", "onnx and int8 are measured on the CPU; on cuda use runtime eager with fp16/bf16")
    if lat.device == "cuda":
        import torch

        if not torch.cuda.is_available():
            raise SpecError("latency.device", "cuda was asked for but no CUDA device is visible here (use cpu or auto)")
    if lat.seq_len > tcfg.get("max_position_embeddings", 512) or spec.budgets.max_seq_len > tcfg.get("max_position_embeddings", 512):
        raise SpecError("budgets.max_seq_len", f"longer than the teacher's {tcfg.get('max_position_embeddings')} positions")
    for i, ref in enumerate(spec.references):
        if not isinstance(ref, str):
            check_reference_model(ref.model, f"references.{i}.model")
    names = [reference_name(r) for r in spec.references]
    if len(set(names)) != len(names) or "teacher" in names:
        raise SpecError("references", f"reference names must be unique and not 'teacher': {names}")
    ad = spec.search.autodisc
    if ad.second_round and (spec.search.supernet is None or not ad.enabled or space.assistant is None):
        raise SpecError("search.autodisc.second_round", "a second-round supernet starts from the AutoDisc assistant: it "
                        "needs search.supernet, autodisc.enabled and an assistant grid in the search space")
    if spec.search.final.augment and spec.task != "classification":
        raise SpecError("search.final.augment", "augmentation is implemented for classification; set it to 0 for pairs")
    if spec.hpo is not None:
        from nas.hpo import load_hpo_space
        from nas.supernet import Shape, check_shape
        from transformers import BertConfig

        load_hpo_space(spec.hpo.space)
        base = BertConfig(**{k: tcfg[k] for k in ("num_hidden_layers", "hidden_size", "num_attention_heads",
                                                  "intermediate_size") if k in tcfg})
        for i, sh in enumerate(spec.hpo.shapes):
            try:
                check_shape(base, Shape.from_dict(sh.model_dump()))
            except ValueError as exc:
                raise SpecError(f"hpo.shapes[{i}]", str(exc)) from None
    ds = load_dataset(spec.dataset, spec.task, spec.seed)
    return Prepared(spec, tcfg, space, ds)


def reference_name(ref) -> str:
    return ref if isinstance(ref, str) else (ref.name or pathlib.Path(ref.model).name)


def check_reference_model(path: str, field: str) -> None:
    import json as _json

    p = pathlib.Path(path).expanduser()
    if not p.is_dir():
        raise SpecError(field, f"{path} is not a directory (a local Hugging Face model directory is expected)")
    cfg = p / "config.json"
    if not cfg.is_file():
        raise SpecError(field, f"{path} has no config.json")
    try:
        archs = _json.loads(cfg.read_text()).get("architectures") or []
    except ValueError as exc:
        raise SpecError(field, f"{cfg} is not valid JSON: {exc}") from None
    if not any(str(a).endswith("ForSequenceClassification") for a in archs):
        raise SpecError(field, f"{path} is not a sequence-classification model (architectures {archs})")
    if not any((p / t).is_file() for t in ("tokenizer.json", "vocab.txt", "tokenizer_config.json")):
        raise SpecError(field, f"{path} has no tokenizer files")


def _reference_stage(prep: Prepared, store: Store, job_id: int, ctx: dict, log: Callable[[str], None]) -> None:
    """The teacher, TF-IDF + logistic regression and the user's models as `reference` trials, timed end to end."""
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from nas.distill import predict_logits, scores
    from nas.latency.measure import settings_from_spec
    from nas.references import (fit_tfidf, hf_predictor, measure_text_latency, save_sklearn, sklearn_predictor,
                                tokenizer_only)
    from nas.teacher import load_teacher

    spec, ds = prep.spec, prep.dataset
    done = {t["config"].get("name") for t in store.trials(job_id, kind="reference", state="COMPLETE")}
    settings = settings_from_spec(spec.latency)
    texts = [t if isinstance(t, str) else f"{t[0]} [SEP] {t[1]}" for t in ds.texts]
    dev_texts = [texts[i] for i in ctx["dev_idx"]]
    splits = {"train": np.asarray(ctx["train_idx"]), "dev": np.asarray(ctx["dev_idx"]), "test": np.asarray(ctx["test_idx"])}
    labels = np.asarray(ds.labels)
    art = nas_home() / "artefacts" / f"job-{job_id}"
    store.set_job_stage(job_id, "references")

    def record(name: str, kind: str, info: dict, lat: dict, extra: dict | None = None, artefact=None) -> None:
        t = store.add_trial(job_id, "reference", {"name": name, "type": kind, **(extra or {})}, state="RUNNING")
        store.start_trial(t["id"])
        for split in ("dev", "test"):
            for metric, value in info[split].items():
                store.add_metric(t["id"], metric, value, split, "final")
        for metric, value in (info.get("metrics") or {}).items():
            store.add_metric(t["id"], metric, value, "dev", "final")
        store.add_latency(t["id"], f"reference:{name}", lat)
        if artefact:
            store.add_artefact(job_id, t["id"], artefact[0], str(artefact[1]))
        store.finish_trial(t["id"], "COMPLETE")
        log(f"reference {name}: dev {spec.objectives.metric} {info['dev'][spec.objectives.metric]:.4f}, test "
            f"{info['test'][spec.objectives.metric]:.4f}, p50 {lat['p50_ms']:.3f} ms end to end")

    if "teacher" not in done:
        tok = AutoTokenizer.from_pretrained(ctx["teacher"]["dir"])
        teacher = load_teacher(ctx["teacher"])
        tok_lat = measure_text_latency(tokenizer_only(tok, spec.latency.seq_len), dev_texts, settings)
        lat = measure_text_latency(hf_predictor(teacher, tok, spec.latency.seq_len), dev_texts, settings)
        info = {"dev": ctx["teacher"]["dev"], "test": ctx["teacher"]["test"],
                "metrics": {"tokenizer_p50_ms": tok_lat["p50_ms"], "tokenizer_p90_ms": tok_lat["p90_ms"]}}
        record("teacher", "teacher", info, lat, artefact=("teacher", ctx["teacher"]["dir"]))
    for ref in spec.references:
        name = reference_name(ref)
        if name in done:
            continue
        if ref == "tfidf-linear":
            pipe, info = fit_tfidf(texts, labels, splits, spec.seed)
            path = save_sklearn(pipe, art / f"reference-{name}" / "model.joblib")
            lat = measure_text_latency(sklearn_predictor(pipe), dev_texts, settings)
            record(name, "tfidf-linear", info, lat, {"C": info["C"]}, artefact=("sklearn", path))
        else:
            path = str(pathlib.Path(ref.model).expanduser().resolve())
            tok = AutoTokenizer.from_pretrained(path)
            model = AutoModelForSequenceClassification.from_pretrained(path).eval()
            if model.config.num_labels != ds.num_labels:
                raise SpecError("references", f"{path} has {model.config.num_labels} labels, the dataset {ds.num_labels}")
            if ds.task == "pair":
                enc = tok([q for q, _ in ds.texts], [d for _, d in ds.texts], truncation="only_second",
                          max_length=spec.budgets.max_seq_len, padding="max_length", return_tensors="pt")
            else:
                enc = tok(list(ds.texts), truncation=True, max_length=spec.budgets.max_seq_len, padding="max_length",
                          return_tensors="pt")
            tensors = {k: enc[k] for k in ("input_ids", "attention_mask", "token_type_ids") if k in enc}
            info = {}
            for split in ("dev", "test"):
                idx = torch.as_tensor(splits[split])
                info[split] = scores(predict_logits(model, {k: v[idx] for k, v in tensors.items()}),
                                     torch.as_tensor(labels)[idx])
            lat = measure_text_latency(hf_predictor(model, tok, spec.latency.seq_len), dev_texts, settings)
            record(name, "model", info, lat, {"path": path}, artefact=("model", path))


def run_job(spec: JobSpec, store: Store, job_id: int | None = None, log: Callable[[str], None] = print,
            progress: bool = True, ray_address: str | None = None) -> int:
    """Validate, create the job (unless resuming `job_id`), run every stage. Returns the job id."""
    prep = prepare(spec)
    if job_id is None:
        job_id = store.create_job(spec.name, spec.model_dump(mode="json"), status="RUNNING")
        store.set_job_status(job_id, "RUNNING", stage="teacher")
    else:
        reset = store.reset_unfinished_trials(job_id)
        if reset:
            log(f"job {job_id}: {reset} interrupted trial(s) go back to the queue")
        store.set_job_status(job_id, "RUNNING")
    try:
        ctx = _teacher_stage(prep, store, job_id, log)
        _search_stage(prep, store, job_id, ctx, log, progress, ray_address)
        if spec.hpo is not None:
            from nas.hpo import run_hpo_stage

            run_hpo_stage(prep, store, job_id, ctx, log, progress)
        _reference_stage(prep, store, job_id, ctx, log)
        store.set_job_status(job_id, "COMPLETE", stage="done")
    except KeyboardInterrupt:
        store.set_job_status(job_id, "FAILED", error="interrupted by the user; `nas resume` continues it")
        raise
    except Exception as exc:
        store.set_job_status(job_id, "FAILED", error=f"{type(exc).__name__}: {exc}")
        raise
    return job_id


def resume_job(store: Store, job_id: int, log=print, progress: bool = True, ray_address: str | None = None) -> int:
    job = store.get_job(job_id)
    if job is None:
        raise SpecError("JOB", f"no job {job_id} in {store.url}")
    spec = parse_spec(job["spec"])
    return run_job(spec, store, job_id=job_id, log=log, progress=progress, ray_address=ray_address)


# -- stages -------------------------------------------------------------------------------------------------------------
def _teacher_stage(prep: Prepared, store: Store, job_id: int, log) -> dict:
    import torch
    from transformers import AutoTokenizer
    from transformers.utils import logging as hf_logging

    from nas.latency.measure import measure_models, settings_from_spec
    from nas.supernet import Shape, count_parameters
    from nas.teacher import load_teacher, prepare_teacher, teacher_path

    hf_logging.set_verbosity_error()
    spec, ds = prep.spec, prep.dataset
    store.set_job_stage(job_id, "teacher")
    tok = AutoTokenizer.from_pretrained(teacher_path(spec.teacher))
    tensors = tokenize(tok, ds, spec.budgets.max_seq_len)
    splits = split_indices(ds.labels, spec.seed)
    torch.set_num_threads(max(1, os.cpu_count() or 1))
    info = prepare_teacher(spec.teacher, ds, tensors, splits, spec.seed, spec.budgets.teacher_epochs,
                           spec.budgets.max_seq_len, log=log)
    existing = store.trials(job_id, kind="teacher", state="COMPLETE")
    if not existing:
        teacher = load_teacher(info)
        shape = Shape.of_config(teacher.config)
        t = store.add_trial(job_id, "teacher", {"shape": shape.as_dict(), "source": info["source"], "dir": info["dir"],
                                               "fine_tuned": info["fine_tuned"]}, state="RUNNING")
        store.start_trial(t["id"])
        for split in ("dev", "test"):
            for name, value in info[split].items():
                store.add_metric(t["id"], name, value, split, "final")
        store.add_metric(t["id"], "params", count_parameters(teacher), "dev", "final")
        key = "teacher:" + shape.key
        rows = measure_models(None, {key: teacher}, settings_from_spec(spec.latency), spec.latency.extra_runtimes)[key]
        for row in rows:
            store.add_latency(t["id"], key, row)
        lat = rows[-1]
        store.add_artefact(job_id, t["id"], "teacher", info["dir"])
        store.finish_trial(t["id"], "COMPLETE")
        log(f"teacher: dev accuracy {info['dev']['accuracy']:.4f}, test {info['test']['accuracy']:.4f}, "
            f"p50 {lat['p50_ms']:.2f} ms ({lat['device']}, batch {lat['batch']}, seq {lat['seq_len']})")
    train_idx = splits["train"]
    if spec.budgets.data_fraction < 1:
        sub = stratified_sample(ds.labels[train_idx], spec.budgets.data_fraction, spec.seed)
        train_idx = train_idx[sub]
    tokens_path = token_cache_path(tok, ds, spec.budgets.max_seq_len)
    return {"teacher": info, "tokens_path": str(tokens_path), "train_idx": train_idx.tolist(),
            "dev_idx": splits["dev"].tolist(), "test_idx": splits["test"].tolist(), "labels": ds.labels.tolist()}


def _search_stage(prep: Prepared, store: Store, job_id: int, ctx: dict, log, progress: bool, ray_address,
                  deadline: float | None = None) -> None:
    from nas.runtime import init_ray

    spec = prep.spec
    init_ray(ray_address)
    if deadline is None and spec.budgets.time_s:
        deadline = time.time() + spec.budgets.time_s
    if spec.search.supernet is not None:
        from nas.supernet_stages import run_supernet_schedule

        run_supernet_schedule(prep, store, job_id, ctx, log, progress, deadline)
        return
    _per_trial_search(prep, store, job_id, ctx, log, progress, deadline)


def _per_trial_search(prep: Prepared, store: Store, job_id: int, ctx: dict, log, progress: bool,
                      deadline: float | None = None) -> None:
    """Every candidate distilled from scratch (initialised from the teacher's slices), one Ray Tune trial each. Random
    search asks for the whole budget at once; evolution asks one population per generation. With a `deadline`
    (time.time()), candidates are asked `max_concurrent` at a time and none is started after it (wall-clock budget)."""
    from tqdm import tqdm

    from nas.distill import steps_for
    from nas.runtime import run_trials
    from nas.search.strategies import make_strategy
    from nas.supernet import Shape
    from nas.trials import run_student_trial

    spec = prep.spec
    store.set_job_stage(job_id, "search")
    options = {"population": spec.search.population, "use_size": spec.objectives.size} if spec.search.strategy != "random" else {}
    strategy = make_strategy(spec.search.strategy, prep.space.student, spec.seed, **options)
    for t in store.trials(job_id, kind="student"):
        strategy.tell(Shape.from_dict(t["config"]["shape"]), _completed_objectives(t, spec))
    distill_cfg = prep.space.distill.model_dump()
    steps = steps_for(len(ctx["train_idx"]), distill_cfg["batch_size"], spec.budgets.epochs, spec.budgets.steps)
    cpus = max(1, (os.cpu_count() or 1) // spec.budgets.max_concurrent)
    context = {
        **ctx, "storage": store.url, "seed": spec.seed, "train_threads": cpus,
        "latency": spec.latency.model_dump(), "artefact_dir": str(nas_home() / "artefacts" / f"job-{job_id}"),
        "nan_trial_numbers": [int(x) for x in os.environ.get("NAS_INJECT_NAN_TRIALS", "").split(",") if x.strip()],
    }
    n_students = len(store.trials(job_id, kind="student"))
    bar = tqdm(total=spec.budgets.trials, initial=n_students, desc=f"job {job_id} trials", unit="trial",
               disable=not progress)

    def on_result(result: dict) -> None:
        bar.update(1)
        if result.get("state") == "COMPLETE":
            bar.set_postfix(last=f"#{result['trial_number']} acc {result.get('accuracy', float('nan')):.3f} "
                                 f"{result.get('p50_ms', float('nan')):.2f}ms")
        else:
            bar.write(f"trial {result.get('trial_number')} failed: {result.get('error')}")

    generation = 0
    while True:
        students = store.trials(job_id, kind="student")
        waiting = [t for t in students if t["state"] == "WAITING"]
        if not waiting:
            missing = spec.budgets.trials - len(students)
            if missing <= 0:
                break
            n = missing if spec.search.strategy == "random" else min(missing, spec.search.population)
            if deadline is not None:
                if time.time() >= deadline:
                    log(f"search: the wall-clock budget is spent after {len(students)} trials")
                    break
                n = min(n, spec.budgets.max_concurrent)
            shapes = strategy.ask(n)
            if not shapes:
                log("search: the space is exhausted")
                break
            for shape in shapes:
                store.add_trial(job_id, "student", {"shape": shape.as_dict(), "distill": distill_cfg, "steps": steps,
                                                    "strategy": spec.search.strategy, "generation": generation})
            generation += 1
            continue
        rerun = sum(t["attempts"] > 0 for t in waiting)
        run_trials(run_student_trial, [t["id"] for t in waiting], context, nas_home() / "ray_results", cpus,
                   spec.budgets.max_concurrent, f"job-{job_id}-gen-{generation}" + (f"-retry-{rerun}" if rerun else ""),
                   on_result)
        # a trial whose worker (or node) died past Tune's own retry is still RUNNING: run it again, at most 3 starts
        requeued, lost = store.requeue_lost_trials(job_id, "student", max_attempts=3)
        if requeued or lost:
            log(f"search: {requeued} trial(s) lost with their Ray worker run again, {lost} failed for good")
        for t in waiting:
            done = store.get_trial(t["id"])
            if done["state"] == "WAITING":
                continue  # told when it ends
            strategy.tell(Shape.from_dict(done["config"]["shape"]), _completed_objectives(done, spec))
    bar.close()


def _completed_objectives(t: dict, spec: JobSpec) -> dict:
    if t["state"] != "COMPLETE":
        return {}
    return trial_objectives(t, spec.objectives.metric, spec.objectives.latency)


# -- reading results ----------------------------------------------------------------------------------------------------
def front_rows(store: Store, job_id: int, trials: list[dict] | None = None) -> dict:
    """Teacher, students and the Pareto front of a job, comparable rows only (same fingerprint and settings as the
    teacher's measurement). `trials`: the job's trials already loaded (`store.trials(job_id)`), to read them once."""
    from nas.search.pareto import hypervolume, pareto_front

    job = store.get_job(job_id)
    if job is None:
        raise SpecError("JOB", f"no job {job_id} in {store.url}")
    spec = job["spec"]
    metric = spec["objectives"]["metric"]
    pct = spec["objectives"]["latency"]
    use_size = spec["objectives"].get("size", False)
    every = trials if trials is not None else store.trials(job_id)

    def of(kind: str) -> list[dict]:
        return [t for t in every if t["kind"] == kind and t["state"] == "COMPLETE"]

    teacher = next(iter(of("teacher")), None)
    rows = []
    t_lat = teacher["latency"][-1] if teacher and teacher["latency"] else None
    for t in of("student"):
        if not t["latency"]:
            continue
        lat = t["latency"][-1]
        if t_lat and (lat["fingerprint_id"], lat["batch"], lat["seq_len"], lat["dtype"], lat["runtime"]) != (
                t_lat["fingerprint_id"], t_lat["batch"], t_lat["seq_len"], t_lat["dtype"], t_lat["runtime"]):
            continue  # never mix measurements taken elsewhere or otherwise
        rows.append(_row(t, metric, pct, lat, t_lat))
    cons = spec.get("constraints") or {}
    limits = {f: cons.get(f"latency_{f}_ms") for f in ("p50", "p90") if cons.get(f"latency_{f}_ms") is not None}
    for r in rows:  # a point over a latency limit is shown but never on the front
        r["meets_constraints"] = all(r[f"{f}_ms"] <= ms for f, ms in limits.items())
    feasible = [i for i, r in enumerate(rows) if r["meets_constraints"]]
    objs = [[r["metric"], r["latency_ms"]] + ([r["params"]] if use_size else []) for r in rows]
    maximize = [True, False] + ([False] if use_size else [])
    front = [feasible[j] for j in pareto_front([objs[i] for i in feasible], maximize)] if feasible else []
    for i, r in enumerate(rows):
        r["on_front"] = i in front
    t_row = _row(teacher, metric, pct, t_lat, t_lat) if teacher and t_lat else None
    assistants = [t for t in of("assistant") if t["latency"]]
    a_row = None
    if assistants:
        best = max(assistants, key=lambda t: metric_value(t, "tau", "dev", "proxy") or float("-inf"))
        a_row = _row(best, metric, pct, best["latency"][-1], t_lat)
        a_row["tau"] = metric_value(best, "tau", "dev", "proxy")
    hv = None
    if t_row and rows:
        ref = [0.0, t_row["latency_ms"]] + ([t_row["params"]] if use_size else [])
        hv = hypervolume([objs[i] for i in front], ref, maximize)
    references, overhead = [], 0.0
    ref_trials = of("reference")
    for t in ref_trials:
        if t["config"].get("name") == "teacher":
            overhead = metric_value(t, "tokenizer_p50_ms" if pct == "p50" else "tokenizer_p90_ms", "dev") or 0.0
    if t_lat:
        from nas.references import dominance

        for t in ref_trials:
            lat = t["latency"][-1] if t["latency"] else None
            if lat is None or (lat["fingerprint_id"], lat["batch"], lat["seq_len"]) != (
                    t_lat["fingerprint_id"], t_lat["batch"], t_lat["seq_len"]):
                continue
            r = _row(t, metric, pct, lat, t_lat)
            r.update({"name": t["config"].get("name"), "type": t["config"].get("type"), "speedup": None})
            front_pts = [rows[i] for i in front]
            r["dominated_front_points"] = dominance(front_pts, r, overhead)
            r["front_points"] = len(front_pts)
            references.append(r)
    return {"job": job, "metric": metric, "latency": pct, "teacher": t_row, "assistant": a_row, "rows": rows,
            "references": references, "student_tokenizer_ms": overhead,
            "front": sorted((rows[i] for i in front), key=lambda r: r["latency_ms"]), "hypervolume": hv,
            "fingerprint": t_lat["fingerprint"] if t_lat else None}


def _row(t: dict, metric: str, pct: str, lat: dict, t_lat: dict | None) -> dict:
    lat_ms = lat["p50_ms"] if pct == "p50" else lat["p90_ms"]
    t_ms = (t_lat["p50_ms"] if pct == "p50" else t_lat["p90_ms"]) if t_lat else None
    return {
        "trial": t["number"], "kind": t["kind"], "shape": t["config"].get("shape"), "metric": metric_value(t, metric, "dev"),
        "source": "final" if metric_value(t, metric, "dev", "final") is not None else "proxy",
        "proxy_metric": metric_value(t, metric, "dev", "proxy"), "final_metric": metric_value(t, metric, "dev", "final"),
        "test_metric": metric_value(t, metric, "test"), "latency_ms": lat_ms, "p50_ms": lat["p50_ms"],
        "p90_ms": lat["p90_ms"], "cv": lat["cv"], "params": metric_value(t, "params", "dev") or 0,
        "speedup": (metric_value(t, "speedup", "dev") if pct == "p50" else None) or ((t_ms / lat_ms) if t_ms and lat_ms else None),
        "runtime": lat.get("runtime"), "dtype": lat.get("dtype"),
    }


