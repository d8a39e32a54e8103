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


def final_right(sources: tuple, store, job_id: int, shape: str, rows) -> "numpy.ndarray":
    """Whether the job's final student of `shape` (e.g. "L5-H384-A8-F384") gets each of `rows` (dataset indices)
    right: one forward pass of its stored model."""
    import numpy as np
    import torch
    from transformers import AutoTokenizer

    from nas.data import tokenize
    from nas.distill.evaluate import predict_logits
    from nas.students import load_student
    from nas.students.shape import Shape

    spec, ds, _, src = sources
    trial = next(t for t in store.trials(job_id, kind="student")
                 if Shape.from_dict(t["config"]["shape"]).key == shape
                 and any(a["kind"] == "model" for a in t["artefacts"]))
    model = load_student(next(a["path"] for a in trial["artefacts"] if a["kind"] == "model"))
    tensors = tokenize(AutoTokenizer.from_pretrained(src["dir"]), ds, spec.budgets.max_seq_len)
    idx = torch.as_tensor(np.asarray(rows))
    logits = predict_logits(model, {k: v[idx] for k, v in tensors.items()})
    return logits.argmax(-1).numpy() == np.asarray(ds.labels)[np.asarray(rows)]


def logits_right(logits_path: str, labels) -> "numpy.ndarray":
    """Whether the stored logits (a teacher's or an initialiser's, over every dataset row) get each row right."""
    import numpy as np
    import torch

    return torch.load(logits_path).argmax(-1).numpy() == np.asarray(labels)


def retention_spread(sources: tuple, store, job_id: int, best: dict | None, bar: float = 0.97,
                     resamples: int = 2000) -> dict | None:
    """How far the 1,280-row splits let a retention figure move: a paired bootstrap over the rows (teacher and student
    scored on the same resampled rows) of student accuracy / teacher accuracy, for `best` (a retention row: the best
    final at some speedup) and for the student initialiser, on dev and on test. Each: the point value, the 95%
    interval and the share of resamples at or above `bar`. Cheap: one forward of the final and of the initialiser."""
    import numpy as np

    from nas.data import split_indices

    if best is None:
        return None
    spec, ds, info, src = sources
    splits = split_indices(ds.labels, spec.seed)
    teacher_right = logits_right(info["logits_path"], ds.labels)
    init_right = logits_right(src["logits_path"], ds.labels) if spec.student_init else None
    rng = np.random.default_rng(0)
    out = {"bar": bar, "resamples": resamples}
    n_dev = len(splits["dev"])
    both = final_right(sources, store, job_id, best["shape"], np.concatenate([splits["dev"], splits["test"]]))
    for split in ("dev", "test"):
        idx = np.asarray(splits[split])
        right_final = both[:n_dev] if split == "dev" else both[n_dev:]
        draws = rng.integers(0, len(idx), size=(resamples, len(idx)))
        t = teacher_right[idx]
        for name, right in (("final", right_final), ("initialiser", None if init_right is None else init_right[idx])):
            if right is None:
                continue
            ratio = right[draws].mean(1) / t[draws].mean(1)
            out[f"{name}_{split}"] = {"point": round(float(right.mean() / t.mean()), 4),
                                      "ci95": [round(float(q), 4) for q in np.quantile(ratio, [0.025, 0.975])],
                                      "share_at_bar": round(float((ratio >= bar).mean()), 4)}
    out["final"] = best["shape"]
    return out
