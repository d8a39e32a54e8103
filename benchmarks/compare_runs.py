"""Two runs of a distillation benchmark (e.g. large_teacher.py with different transfer sets), student against student
on the same rows: for every final shape both runs trained, and for their student initialisers, the accuracy
difference (the second run minus the first) on test and on dev and test together, with a paired bootstrap 95%
interval over the rows; for the initialisers also how far their errors coincide (`agreement`). One forward pass per
final; minutes on 2 cores. The last stdout line is one JSON object.

    python benchmarks/compare_runs.py .nas/bench-large-imdb .nas/bench-large-imdb120
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import sys

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))


def open_run(workdir: str):
    """(store, job id, sources, {shape: trial}) of the last complete job in a benchmark's workdir."""
    from large_teacher import job_sources

    from nas.store import Store
    from nas.store.records import metric_value
    from nas.students.shape import Shape

    db = pathlib.Path(workdir) / "nas.db"
    if not db.is_file():
        raise SystemExit(f"{workdir}: no nas.db (not a benchmark workdir)")
    store = Store(f"sqlite:///{db}")
    done = [j for j in store.list_jobs() if j["status"] == "COMPLETE"]
    if not done:
        raise SystemExit(f"{workdir}: no complete job")
    job_id = max(j["id"] for j in done)
    finals = {Shape.from_dict(t["config"]["shape"]).key: t for t in store.trials(job_id, kind="student", state="COMPLETE")
              if metric_value(t, "accuracy", "test", "final") is not None}
    return store, job_id, job_sources(store, job_id), finals


def paired(a, b, resamples: int, seed: int = 0) -> dict:
    """b - a in accuracy points, with the 95% interval of a paired bootstrap over the rows."""
    import numpy as np

    draws = np.random.default_rng(seed).integers(0, len(a), size=(resamples, len(a)))
    diff = (b[draws].mean(1) - a[draws].mean(1)) * 100
    lo, hi = np.quantile(diff, [0.025, 0.975])
    return {"diff": round(float((b.mean() - a.mean()) * 100), 2), "ci95": [round(float(lo), 2), round(float(hi), 2)],
            "first": round(float(a.mean()), 4), "second": round(float(b.mean()), 4)}


def agreement(init_logits: list[str], teacher_logits: str, labels, splits: dict) -> dict:
    """Whether two student initialisers fail on the same rows (dev and test together): how often they predict the
    same label, how often each predicts the teacher's, the share of each one's errors on rows the teacher gets right,
    and the accuracy of their ensemble (mean of the two softmaxes); an ensemble no better than either says their
    errors are shared, not training noise."""
    import numpy as np
    import torch

    rows = np.concatenate([splits["dev"], splits["test"]])
    probs = [torch.load(p)[rows].float().softmax(-1) for p in init_logits]
    pred = [p.argmax(-1).numpy() for p in probs]
    teacher = torch.load(teacher_logits)[rows].argmax(-1).numpy()
    y, n_dev = labels[rows], len(splits["dev"])
    ens = ((probs[0] + probs[1]).argmax(-1).numpy() == y)

    def share(a) -> float:
        return round(float(np.mean(a)), 4)

    return {"same_prediction": share(pred[0] == pred[1]),
            "with_teacher": [share(p == teacher) for p in pred],
            "errors_where_teacher_right": [share((teacher == y)[p != y]) for p in pred],
            "ensemble": {"dev": share(ens[:n_dev]), "test": share(ens[n_dev:]), "dev_and_test": share(ens)}}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("first", help="workdir of the first run (the baseline)")
    ap.add_argument("second", help="workdir of the second run")
    ap.add_argument("--resamples", type=int, default=2000)
    args = ap.parse_args()
    os.environ.setdefault("NAS_CACHE", str(ROOT / ".nas" / "cache"))
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import numpy as np

    from nas.data import split_indices
    from retention import final_right, logits_right

    runs = [open_run(w) for w in (args.first, args.second)]
    spec, ds = runs[0][2][0], runs[0][2][1]
    if [r[2][0].dataset for r in runs] != [spec.dataset] * 2 or runs[1][2][0].seed != spec.seed:
        raise SystemExit("the two runs use different datasets or seeds: their rows do not pair")
    splits = split_indices(ds.labels, spec.seed)
    test, both = np.asarray(splits["test"]), np.concatenate([splits["dev"], splits["test"]])
    out = {"first": args.first, "second": args.second, "resamples": args.resamples,
           "same_teacher": runs[0][2][2]["logits_path"] == runs[1][2][2]["logits_path"], "finals": {}}
    for shape in sorted(set(runs[0][3]) & set(runs[1][3])):
        right = [final_right(r[2], r[0], r[1], shape, both) for r in runs]
        n_dev = len(splits["dev"])
        out["finals"][shape] = {"test": paired(right[0][n_dev:], right[1][n_dev:], args.resamples),
                                "dev_and_test": paired(right[0], right[1], args.resamples)}
        print(f"{shape}: test {out['finals'][shape]['test']}", flush=True)
    if all(r[2][0].student_init for r in runs):
        right = [logits_right(r[2][3]["logits_path"], ds.labels) for r in runs]
        out["initialiser"] = {"test": paired(right[0][test], right[1][test], args.resamples),
                              "dev_and_test": paired(right[0][both], right[1][both], args.resamples),
                              **agreement([r[2][3]["logits_path"] for r in runs], runs[0][2][2]["logits_path"],
                                          np.asarray(ds.labels), splits)}
    out["only_first"] = sorted(set(runs[0][3]) - set(runs[1][3]))
    out["only_second"] = sorted(set(runs[1][3]) - set(runs[0][3]))
    print(json.dumps(out))


if __name__ == "__main__":
    main()
