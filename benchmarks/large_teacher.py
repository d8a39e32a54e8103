"""Issue 25's figures: a 110M teacher (all-mpnet-base-v2, MPNet 12 x 768) distilled ~10x on Rotten Tomatoes fresh/rotten,
the service's own schedule against the plain recipe at the same shapes. Last line of output: one JSON object.

    python benchmarks/large_teacher.py                    # CPU: every dev and test row, a stratified train slice
    python benchmarks/large_teacher.py --train-rows 0     # all train rows (what a GPU run uses)
    python benchmarks/large_teacher.py --quick            # a tiny smoke run (minutes; not a figure)
    python benchmarks/large_teacher.py --student-init minilm-l6 --train-rows 0 --one-step-finals
                                                          # students slice MiniLM-L6 distilled from the teacher
    python benchmarks/large_teacher.py --student-init minilm-l6 --train-rows 0 --one-step-finals --top-k 3 \
        --min-speedup 10 --workdir .nas/bench-large-budget  # the same, with a latency budget: the finals go to >= 10x

It runs a real job of the service (teacher `mpnet-base` fine-tuned once and cached; rewiring, the supernet, the AutoDisc
assistant, evolution on inherited weights, finals with the teacher-labelled transfer set, the TF-IDF reference) into a
SQLite store in --workdir, so a stopped run resumes where it stopped (`python benchmarks/large_teacher.py` again: the
store's resume contract, the teacher cache, the training checkpoints of the teacher, the initialiser, the supernet and
each final). Then the plain recipe (each final's shape sliced from the fine-tuned teacher, 0.5 KL(T=2) + 0.5 CE, the lr
the final trained at, no transfer set) trains for as many steps on the same train rows; its results are kept in
--workdir too. Every speedup is the job's: measured in the same rounds as the teacher (a plain student has the same
shape, hence the same latency, as ours).

With --student-init NAME the job's `student_init` is NAME (search space `large_init`): the students slice that small
pretrained encoder, distilled from the teacher's logits first, instead of the teacher; each candidate then costs about
an eighth as much to train on the CPU, so every train row fits. Its plain recipe slices the same initialiser.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import sys
import time

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def job_spec(args) -> dict:
    """The service's schedule on mpnet-base, sized for --train-rows on this machine's device."""
    from nas.data import load_dataset, split_indices
    from nas.spec.job import DatasetRef

    fraction = 1.0
    if args.train_rows:
        ds = load_dataset(DatasetRef(name="rotten-tomatoes"), "classification", 0)
        fraction = min(1.0, args.train_rows / len(split_indices(ds.labels, 0)["train"]))
    quick = args.quick
    init = {"student_init": args.student_init} if args.student_init else {}
    corpus = {"transfer": {"path": str(args.corpus), "augment": args.augment}} if args.corpus else {}
    return {
        "name": "large-teacher" + (f"-init-{args.student_init}" if init else "")
                + (f"-budget-{args.min_speedup:g}x" if args.min_speedup else "")
                + (f"-{args.precision}" if args.precision != "fp32" else "") + ("-quick" if quick else "")
                + (f"-imdb{args.corpus_rows}" if corpus else "")
                + (f"-emb{args.init_embedding:g}" if init and args.init_embedding else "")
                + (f"-att{args.init_attention:g}" if init and args.init_attention else "")
                + (f"-hid{args.init_hidden:g}" if init and args.init_hidden else "")
                + (f"-lr{args.init_lr:g}" if init and args.init_lr is not None else "")
                + ("-mse" if init and args.init_soft_loss == "soft_mse" else "")
                + (f"-lg{args.length_groups}" if args.length_groups else ""),
        "teacher": "mpnet-base", **init,
        "dataset": {"name": "rotten-tomatoes", **({"max_rows": 400} if quick else {})}, "task": "classification",
        "search_space": search_space(args, "large_init.yaml" if init else "base_large.yaml"),
        "compute": {"device": args.device, "precision": args.precision},
        "latency": {"device": "cpu", "batch": 1, "seq_len": args.seq, "threads": 2, "rounds": 3 if quick else 5},
        "budgets": {"trials": 4 if quick else args.trials, "max_seq_len": args.seq, "data_fraction": fraction,
                    "teacher_epochs": 0.2 if quick else args.teacher_epochs,
                    **({"student_init_epochs": 0.2 if quick else args.init_epochs} if init else {}),
                    **({"student_init_embedding": args.init_embedding} if init and args.init_embedding else {}),
                    **({"student_init_attention": args.init_attention} if init and args.init_attention else {}),
                    **({"student_init_hidden": args.init_hidden} if init and args.init_hidden else {}),
                    **({"student_init_lr": args.init_lr} if init and args.init_lr is not None else {}),
                    **({"student_init_soft_loss": args.init_soft_loss} if init and args.init_soft_loss else {}),
                    **({"student_init_length_groups": args.length_groups} if init and args.length_groups else {})},
        "search": {"strategy": "evolution", "population": 2 if quick else 8,
                   "supernet": {"steps": 4 if quick else args.supernet_steps, "n_random": 2,
                                "rewire_rows": 32 if quick else 256, "checkpoint_every": 2 if quick else 25},
                   "autodisc": {"lambda": 0.2},
                   "final": {"top_k": 1 if quick else args.top_k, "epochs": 0.5 if quick else args.final_epochs,
                             "one_step_baseline": True, "seeds": args.final_seeds,
                             "augment": 0 if corpus else 1 if quick else args.augment}},
        "references": ["tfidf-linear"], "seed": 0, **corpus,
        **({"constraints": {"min_speedup": args.min_speedup}} if args.min_speedup else {}),
    }


def search_space(args, name: str) -> str:
    """The space file: search_spaces/NAME, or with --length-groups a copy of it whose distill.length_groups is set
    (written under .nas/spaces/, the same content every time)."""
    import yaml

    path = ROOT / "search_spaces" / name
    if not args.length_groups:
        return str(path)
    data = yaml.safe_load(path.read_text())
    data.setdefault("distill", {})["length_groups"] = args.length_groups
    out = ROOT / ".nas" / "spaces" / f"{path.stem}-lg{args.length_groups}.yaml"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(yaml.safe_dump(data, sort_keys=False))
    return str(out)


def stage_walls(trials: list[dict]) -> dict[str, float]:
    """Wall seconds per kind of trial: first start to last finish (the stages run one after the other). A final is
    written onto its proposal's trial (kind student), whose times are the proposal's; so `transfer_and_finals` is
    from the last proposal's finish to the last final metric (the transfer set's labelling, then the finals)."""
    out: dict[str, float] = {}
    for kind in sorted({t["kind"] for t in trials}):
        ts = [t for t in trials if t["kind"] == kind and t["started_at"] and t["finished_at"]]
        if ts:
            out[kind] = round((max(t["finished_at"] for t in ts) - min(t["started_at"] for t in ts)).total_seconds(), 1)
    students = [t for t in trials if t["kind"] == "student" and t["finished_at"]]
    finals = [m["created_at"] for t in students for m in t["metrics"] if m["source"] == "final" and m.get("created_at")]
    if students and finals:
        out["transfer_and_finals"] = round((max(finals) - max(t["finished_at"] for t in students)).total_seconds(), 1)
    return out


def job_sources(store, job_id: int):
    """(spec, dataset, the teacher's info, the info of what students slice: the teacher's, or the job's student
    initialiser distilled from the teacher's logits, the teacher stage's artefact)."""
    from nas.data import load_dataset
    from nas.spec.job import parse_spec

    spec = parse_spec(store.get_job(job_id)["spec"])
    teacher = store.trials(job_id, kind="teacher")[0]
    teacher_dir = pathlib.Path(teacher["config"]["dir"])
    info = json.loads((teacher_dir.parent / "teacher.json").read_text())  # prepare_teacher's, beside the model
    ds = load_dataset(spec.dataset, spec.task, spec.seed)
    src = info
    init = [a["path"] for a in teacher["artefacts"] if a["kind"] == "student_init"]  # the teacher stage's
    if init:
        src = json.loads((pathlib.Path(init[0]).parent / "teacher.json").read_text())
    return spec, ds, info, src


def initialiser(sources: tuple, workdir: pathlib.Path) -> dict | None:
    """The student initialiser itself at full size (what every student is sliced from, distilled from the teacher on
    train): its dev and test accuracy and its speedup, timed with the teacher in the same rounds on the job's latency
    target; kept in workdir/initialiser.json (a rerun reports the same measurement; delete it to time again). None
    where the students slice the teacher."""
    from nas.latency.measure import measure_targets
    from nas.students.shape import Shape
    from nas.teachers.load import load_teacher

    spec, _, info, src = sources
    if not spec.student_init:
        return None
    path = workdir / "initialiser.json"
    if path.is_file():
        return json.loads(path.read_text())
    init = load_teacher(src)
    rows = measure_targets(None, {"teacher": load_teacher(info), "init": init}, spec.latency)
    t_ms, i_ms = rows["teacher"][-1]["p50_ms"], rows["init"][-1]["p50_ms"]
    row = {"name": spec.student_init, "shape": Shape.of_config(init.config).key,
           "dev": round(src["dev"]["accuracy"], 4), "test": round(src["test"]["accuracy"], 4), "p50_ms": round(i_ms, 3), "teacher_p50_ms": round(t_ms, 3),
           "speedup": round(t_ms / i_ms, 2), "retention": round(src["test"]["accuracy"] / info["test"]["accuracy"], 4),
           "epochs": spec.budgets.init_epochs(), "early_stopping": src.get("early_stopping"),
           "transfer_rows": src.get("transfer_rows", 0), "embedding": src.get("embedding", 0.0),
           "attention": src.get("attention", 0.0), "hidden": src.get("hidden", 0.0), "lr": spec.budgets.student_init_lr,
           "soft_loss": spec.budgets.student_init_soft_loss,
           **({"length_groups": src["length_groups"]} if src.get("length_groups") else {}),
           "measured_at": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}
    path.write_text(json.dumps(row, indent=1))
    return row


def plain_recipe(sources: tuple, finals: list[dict], workdir: pathlib.Path) -> dict[str, dict]:
    """Each final's shape, sliced from what the job's students slice (`job_sources`) and distilled the plain way for
    as many steps as ours; {shape key: {"dev", "test", "steps", "lr", "train_s"}}, kept in workdir/plain.json (a rerun
    skips what is there)."""
    import torch
    from transformers import AutoTokenizer

    from nas.compute import resolve
    from nas.data import split_indices, stratified_sample, tokenize
    from nas.distill.evaluate import predict_logits, scores
    from nas.distill.loop import DistillSettings, distill
    from nas.spec.space import load_search_space
    from nas.store.records import metric_value
    from nas.students.bert_slice import extract_subnet
    from nas.students.shape import Shape
    from nas.teachers.load import load_teacher

    path = workdir / "plain.json"
    done = json.loads(path.read_text()) if path.is_file() else {}
    spec, ds, info, src = sources
    compute = resolve(spec.compute)  # ours trained in this precision: so does the plain recipe
    source = load_teacher(src)
    tensors = tokenize(AutoTokenizer.from_pretrained(src["dir"]), ds, spec.budgets.max_seq_len)
    splits = split_indices(ds.labels, spec.seed)
    train = splits["train"]
    if spec.budgets.data_fraction < 1:
        train = train[stratified_sample(ds.labels[train], spec.budgets.data_fraction, spec.seed)]
    labels, soft = torch.as_tensor(ds.labels, device="cpu"), torch.load(info["logits_path"])
    tr = torch.as_tensor(train, device="cpu")
    settings = load_search_space(spec.search_space).distill.model_dump()
    # the best on dev first: it decides the retention figures
    for t in sorted(finals, key=lambda t: metric_value(t, "accuracy", "dev", "final") or 0.0, reverse=True):
        shape = Shape.from_dict(t["config"]["shape"])
        if shape.key in done:
            continue
        steps = max(m["step"] or 0 for m in t["metrics"] if m["name"] == "accuracy" and m["source"] == "final")
        model = extract_subnet(source, shape)
        t0 = time.perf_counter()
        # the lr ours trained at (the finals scale the space's lr by the shape's size), so the recipes differ only in
        # the transfer set and the supernet's weights
        lr = next((m["value"] for m in t["metrics"] if m["name"] == "lr" and m["source"] == "final"), settings["lr"])
        distill(model, {k: v[tr] for k, v in tensors.items()}, labels[tr], soft[tr],
                DistillSettings(**{**settings, "lr": lr}), int(steps), seed=spec.seed, compute=compute)
        row = {"steps": int(steps), "lr": lr, "train_s": round(time.perf_counter() - t0, 1)}
        for split in ("dev", "test"):
            idx = torch.as_tensor(splits[split], device="cpu")
            row[split] = scores(predict_logits(model, {k: v[idx] for k, v in tensors.items()}), labels[idx])["accuracy"]
        done[shape.key] = row
        path.write_text(json.dumps(done, indent=1))
        print(f"plain {shape.key}: dev {row['dev']:.4f} test {row['test']:.4f} ({row['steps']} steps)", flush=True)
    return done


def runtime_speedups(sources: tuple, finals: list[dict], runtimes: list[str], workdir: pathlib.Path) -> dict:
    """The teacher, the student initialiser (where there is one) and every final's shape timed again in each of
    `runtimes` (onnx: ONNX Runtime fp32, as `nas export`'s onnx format deploys), in interleaved rounds with the teacher
    in the same runtime as the reference, on the job's latency settings (batch, length, threads, rounds): {runtime:
    {"teacher_p50_ms", "speedup": {name or shape key: speedup}}}, kept in workdir/runtimes.json (a rerun reports it;
    delete it to time again). ONNX Runtime computes the same logits as eager fp32 (`nas check-export`), so a final's
    accuracy stands; only the speedup is the runtime's."""
    from nas.latency.measure import all_runtime_settings, measure_interleaved, settings_from_spec
    from nas.students.bert_slice import extract_subnet
    from nas.students.shape import Shape
    from nas.teachers.load import load_teacher

    path = workdir / "runtimes.json"
    done = json.loads(path.read_text()) if path.is_file() else {}
    todo = [rt for rt in runtimes if rt not in done]
    if not todo:
        return {rt: done[rt] for rt in runtimes}
    spec, _, info, src = sources
    source = load_teacher(src)
    models = {"teacher": load_teacher(info), **({"initialiser": source} if spec.student_init else {})}
    for t in finals:
        shape = Shape.from_dict(t["config"]["shape"])
        models[shape.key] = extract_subnet(source, shape)
    base = settings_from_spec(spec.latency)
    for rt in todo:
        settings = all_runtime_settings(base, [rt])[0]  # the job's protocol in `rt` (int8's dtype with int8)
        rows = measure_interleaved(models, settings, reference="teacher")
        done[rt] = {"teacher_p50_ms": round(rows["teacher"]["p50_ms"], 3),
                    "speedup": {k: round(r["speedup"], 2) for k, r in rows.items() if k != "teacher"}}
        path.write_text(json.dumps(done, indent=1))
        print(f"{rt}: teacher p50 {done[rt]['teacher_p50_ms']} ms; speedups {done[rt]['speedup']}", flush=True)
    return {rt: done[rt] for rt in runtimes}


def one_step_finals(store, name: str) -> None:
    """An existing job of `name` whose finals have not finished: its stored spec gets final.two_step false (the
    assistant stays chosen and reported; the finals learn from the teacher's logits and the transfer set)."""
    job = next((j for j in store.list_jobs() if j["name"] == name), None)
    if job is None or job["status"] == "COMPLETE" or not job["spec"]["search"]["final"].get("two_step", True):
        return
    stored = json.loads(json.dumps(job["spec"]))
    stored["search"]["final"]["two_step"] = False
    store.set_job_spec(job["id"], stored)
    print(f"job {job['id']}: finals switched to one step (final.two_step false) before resuming", flush=True)


def parse_args() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--workdir", default="", help="NAS_HOME of the run (resumable; default .nas/bench-large, or "
                                                  ".nas/bench-large-init with --student-init)")
    ap.add_argument("--train-rows", type=int, default=3000, help="stratified train slice (0: all train rows)")
    ap.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    ap.add_argument("--precision", default="fp32", choices=["fp32", "bf16"],
                    help="training precision (spec compute.precision): bf16 trains the teacher, the initialiser, the "
                         "supernet, the finals and the plain recipe under torch.autocast (1.8x faster a step for "
                         "the 110M teacher on a 2-core AMD EPYC with avx512_bf16, 2.5x on an Intel Xeon with AMX: "
                         "benchmarks/precision.py); every stored score is "
                         "the fp32 model's and latency is measured in fp32 either way")
    ap.add_argument("--seq", type=int, default=48, help="tokens per text (Rotten Tomatoes reviews: ~30 on average)")
    ap.add_argument("--teacher-epochs", type=float, default=1.0)
    ap.add_argument("--init-epochs", type=float, default=3.0,
                    help="with --student-init: the initialiser's distillation, up to this many epochs, keeping its best "
                         "epoch on dev (budgets.student_init_epochs)")
    ap.add_argument("--init-embedding", type=float, default=0.0,
                    help="with --student-init: the initialiser also learns the teacher's mean-pooled final hidden state "
                         "through a learned projection, 1 - cosine at this weight (budgets.student_init_embedding)")
    ap.add_argument("--init-attention", type=float, default=0.0,
                    help="with --student-init: the initialiser also learns the teacher's attention maps (the teacher "
                         "run on each batch), KL at this weight (budgets.student_init_attention)")
    ap.add_argument("--init-hidden", type=float, default=0.0,
                    help="with --student-init: the initialiser also learns the teacher's hidden states layer by layer "
                         "through a learned projection (the teacher run on each batch), MSE at this weight "
                         "(budgets.student_init_hidden)")
    ap.add_argument("--init-lr", type=float, default=None,
                    help="with --student-init: the initialiser's peak learning rate (budgets.student_init_lr; default: "
                         "the service's)")
    ap.add_argument("--init-soft-loss", default=None, choices=["soft_kl", "soft_mse"],
                    help="with --student-init: the initialiser's loss on the teacher's logits, KL at T=2 or MSE on the "
                         "raw logits (budgets.student_init_soft_loss; default: the service's)")
    ap.add_argument("--length-groups", type=int, default=0,
                    help="batches of rows of similar length, from pools of N batches, for every student's training: "
                         "the initialiser (budgets.student_init_length_groups), the supernet, the finals and the plain "
                         "recipe (the space's distill.length_groups); 0: random batches, as before")
    ap.add_argument("--supernet-steps", type=int, default=150)
    ap.add_argument("--trials", type=int, default=24)
    ap.add_argument("--top-k", type=int, default=4)
    ap.add_argument("--final-epochs", type=float, default=2.0)
    ap.add_argument("--final-seeds", type=int, default=1,
                    help="each final trained this many times from its slice, keeping the average of their weights "
                         "(search.final.seeds; N x the finals' cost; the plain recipe trains once)")
    ap.add_argument("--augment", type=int, default=2,
                    help="teacher-labelled augmented copies of every train text (search.final.augment): the transfer "
                         "set the finals and, with --student-init, the initialiser learn from beside the train rows")
    ap.add_argument("--corpus-rows", type=int, default=0,
                    help="also N IMDB review sentences, unlabelled, in the transfer set (spec transfer.path; "
                         "benchmarks/imdb_corpus.py); 0: none")
    ap.add_argument("--student-init", default="", help="students slice this small pretrained encoder (e.g. minilm-l6), "
                                                        "distilled from the teacher first, instead of the teacher")
    ap.add_argument("--min-speedup", type=float, default=0.0,
                    help="a latency budget (spec constraints.min_speedup): the search ranks and the finals spend inside "
                         "it (0: none)")
    ap.add_argument("--one-step-finals", action="store_true",
                    help="finals distilled from the teacher's logits directly (final.two_step false): on 2 CPU cores the "
                         "assistant's own distillation (a 8-layer x 768 model, ~10 s a step) costs ~1.5 hours; an existing "
                         "job's stored spec is changed before it resumes, and the result says so")
    ap.add_argument("--runtimes", default="",
                    help="comma-separated runtimes (onnx, int8) to time the teacher, the initialiser and the finals in "
                         "again after the job, side by side, each against the teacher in the same runtime (the job "
                         "itself times in eager PyTorch); int8 speedups come without int8 accuracies")
    return ap.parse_args()


def main() -> None:
    args = parse_args()
    from retention import retention, retention_spread
    from task_setup import bench_workdir

    default = ROOT / ".nas" / ("bench-large-init" if args.student_init else "bench-large")
    workdir = bench_workdir(args.workdir or str(default), args.quick, ROOT)
    from imdb_corpus import build

    args.corpus = args.corpus_rows and build(ROOT / ".nas" / "data" / f"imdb-sentences-{args.corpus_rows}.txt",
                                             args.corpus_rows)
    t0 = time.perf_counter()

    from nas.data import cache_dir
    from nas.latency.measure import device_fingerprint
    from nas.results.front import front_rows
    from nas.store import Store
    from nas.store.records import metric_value, seed_members
    from nas.students.shape import Shape
    from nas.teachers.assemble import assemble_mpnet

    assemble_mpnet(cache_dir() / "teachers-src")
    store = Store(f"sqlite:///{workdir / 'nas.db'}")
    spec = job_spec(args)
    from task_setup import run_or_resume

    if args.one_step_finals:
        spec["search"]["final"]["two_step"] = False
        one_step_finals(store, spec["name"])
    job_id = run_or_resume(spec, store)
    trials = store.trials(job_id)
    teacher = next(t for t in trials if t["kind"] == "teacher")
    teacher_test = metric_value(teacher, "accuracy", "test", "final")
    f = front_rows(store, job_id, trials)
    speed = {r["trial"]: r["speedup"] for r in f["rows"]}
    finals = [t for t in trials if t["kind"] == "student" and t["state"] == "COMPLETE"
              and metric_value(t, "accuracy", "test", "final") is not None]
    t_plain = time.perf_counter()
    sources = job_sources(store, job_id)
    plain = plain_recipe(sources, finals, workdir)
    plain_s = time.perf_counter() - t_plain
    rows = []
    for t in finals:
        shape = Shape.from_dict(t["config"]["shape"]).key
        rows.append({"trial": t["number"], "shape": shape, "speedup": speed.get(t["number"], 0.0),
                     "ours": metric_value(t, "accuracy", "test", "final"),
                     "one_step": metric_value(t, "one_step_accuracy", "test", "final"),
                     "plain": plain.get(shape, {}).get("test"),
                     **({"members": seed_members(t)} if args.final_seeds > 1 else {})})
    walls = stage_walls(trials)
    walls["plain_recipe"] = round(plain_s, 1)
    result = {
        "teacher": "mpnet-base", "dataset": "rotten-tomatoes", "train_rows": args.train_rows or "all",
        "students_slice": args.student_init or "the teacher", "min_speedup": args.min_speedup or None,
        "precision": args.precision, "corpus_rows": args.corpus_rows,
        "final_recipe": "one-step (teacher logits)" if args.one_step_finals else "two-step (teacher -> assistant -> student)",
        "teacher_test_acc": teacher_test, "teacher_dev_acc": metric_value(teacher, "accuracy", "dev", "final"),
        "teacher_p50_ms": f["teacher"]["p50_ms"] if f.get("teacher") else None,
        **{f"retention_at_{x}x_{k}": retention(rows, k, teacher_test, x) for x in (5, 10) for k in ("ours", "plain")},
        "finals": sorted(rows, key=lambda r: -r["speedup"]),
        "initialiser": initialiser(sources, workdir),
        "retention_spread_at_10x": retention_spread(sources, store, job_id, retention(rows, "ours", teacher_test, 10)),
        "speedup_by_runtime": runtime_speedups(sources, finals, [r for r in args.runtimes.split(",") if r.strip()],
                                               workdir) if args.runtimes else None,
        "front": [{"trial": r["trial"], "shape": Shape.from_dict(r["shape"]).key, "dev_acc": round(r["metric"], 4),
                   "speedup": round(r["speedup"], 2)} for r in f["front"]],
        "stage_wall_s": walls, "wall_s_this_invocation": round(time.perf_counter() - t0, 1),
        "fingerprint": {k: (f.get("fingerprint") or device_fingerprint()).get(k) for k in ("cpu", "cores", "threads")},
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
