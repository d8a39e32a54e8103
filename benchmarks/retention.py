"""Retention figures of a distillation benchmark: the best student's test accuracy as a share of the teacher's at a
speedup, and how far a 1,280-row split lets that share move (a paired bootstrap over the rows)."""

from __future__ import annotations


def retention(rows: list[dict], key: str, teacher_test: float, at: float) -> dict | None:
    """The best test accuracy among rows at >= `at` speedup, as a share of the teacher's."""
    fast = [r for r in rows if r["speedup"] >= at and r.get(key) is not None]
    if not fast:
        return None
    best = max(fast, key=lambda r: r[key])
    return {"shape": best["shape"], "speedup": round(best["speedup"], 2), "test": round(best[key], 4),
            "retention": round(best[key] / teacher_test, 4)}


def retention_spread(sources: tuple, store, job_id: int, best: dict | None, bar: float = 0.97,
                     resamples: int = 2000) -> dict | None:
    """How far the 1,280-row splits let a retention figure move: a paired bootstrap over the rows (teacher and student
    scored on the same resampled rows) of student accuracy / teacher accuracy, for `best` (a retention row: the best
    final at some speedup) and for the student initialiser, on dev and on test. Each: the point value, the 95%
    interval and the share of resamples at or above `bar`. Cheap: one forward of the final and of the initialiser."""
    import numpy as np
    import torch
    from transformers import AutoTokenizer

    from nas.data import split_indices, tokenize
    from nas.distill.evaluate import predict_logits
    from nas.students import load_student
    from nas.students.shape import Shape

    if best is None:
        return None
    spec, ds, info, src = sources
    trial = next(t for t in store.trials(job_id, kind="student")
                 if Shape.from_dict(t["config"]["shape"]).key == best["shape"]
                 and any(a["kind"] == "model" for a in t["artefacts"]))
    model = load_student(next(a["path"] for a in trial["artefacts"] if a["kind"] == "model"))
    tensors = tokenize(AutoTokenizer.from_pretrained(src["dir"]), ds, spec.budgets.max_seq_len)
    splits = split_indices(ds.labels, spec.seed)
    labels = np.asarray(ds.labels)
    teacher_right = torch.load(info["logits_path"]).argmax(-1).numpy() == labels
    init_right = torch.load(src["logits_path"]).argmax(-1).numpy() == labels if spec.student_init else None
    rng = np.random.default_rng(0)
    out = {"bar": bar, "resamples": resamples}
    for split in ("dev", "test"):
        idx = np.asarray(splits[split])
        final_right = predict_logits(model, {k: v[torch.as_tensor(idx)] for k, v in tensors.items()}).argmax(-1).numpy() \
            == labels[idx]
        draws = rng.integers(0, len(idx), size=(resamples, len(idx)))
        t = teacher_right[idx]
        for name, right in (("final", final_right), ("initialiser", None if init_right is None else init_right[idx])):
            if right is None:
                continue
            ratio = right[draws].mean(1) / t[draws].mean(1)
            out[f"{name}_{split}"] = {"point": round(float(right.mean() / t.mean()), 4),
                                      "ci95": [round(float(q), 4) for q in np.quantile(ratio, [0.025, 0.975])],
                                      "share_at_bar": round(float((ratio >= bar).mean()), 4)}
    out["final"] = best["shape"]
    return out
