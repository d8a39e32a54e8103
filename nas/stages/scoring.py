"""The scoring stage (after the search and the hyperparameter stage, before the references): every front point without
a test score is scored once on the test split from its saved model, so a front reports what its students keep on test
(per-trial students are scored on dev only while the search runs; every search decision stays on dev). Resumes by
skipping points already scored."""

from __future__ import annotations

import pathlib

from nas.context import JobContext
from nas.spec.job import JobSpec
from nas.store.store import Store


def check(spec: JobSpec, teacher_config: dict) -> None:
    """Nothing to check: it reads what the search stored."""


def run(ctx: JobContext, store: Store) -> None:
    import torch

    from nas.distill.evaluate import predict_logits, scores
    from nas.results.front import all_fronts
    from nas.store.records import metric_value
    from nas.students import load_student

    metric = ctx.spec.objectives.metric
    trials = store.trials(ctx.job_id)
    points = {r["trial"] for f in all_fronts(store, ctx.job_id, trials) for r in f["front"]}
    todo = [t for t in trials if t["number"] in points and metric_value(t, metric, "test") is None]
    models = {t["id"]: [a["path"] for a in t["artefacts"] if a["kind"] == "model"] for t in todo}
    todo = [t for t in todo if models[t["id"]] and pathlib.Path(models[t["id"]][-1]).is_dir()]
    if not todo:
        return
    store.set_job_stage(ctx.job_id, "scoring")
    tensors = torch.load(ctx.tokens_path, map_location="cpu")
    idx = torch.as_tensor(ctx.test_idx, device="cpu")
    labels = torch.as_tensor(ctx.labels, device="cpu")[idx]
    x = {k: v[idx] for k, v in tensors.items()}
    for t in todo:
        model = load_student(models[t["id"]][-1])
        for name, value in scores(predict_logits(model, x, compute=ctx.compute.exact()), labels).items():
            store.add_metric(t["id"], name, value, "test", "final")
    ctx.say(f"scoring: {len(todo)} front point(s) scored on the test split (search decisions used dev only)")
