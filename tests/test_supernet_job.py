"""The supernet schedule end to end on a tiny real job: rewired teacher -> supernet (checkpointed) -> AutoDisc assistant
trials with P, scale and τ -> NSGA-II search on inherited weights (proxy metrics, measured latency) -> standalone
teacher -> assistant -> student distillation (final metrics); an export of a proxy-only point reproduces its proxy."""

from __future__ import annotations

import pathlib

import pytest
from conftest import TINY_SUPERNET_SPEC, job_environment, real_job

from nas.store.records import metric_value

ROOT = pathlib.Path(__file__).resolve().parent.parent
SPEC = TINY_SUPERNET_SPEC


@pytest.fixture(scope="module")
def job(tmp_path_factory):
    with real_job(tmp_path_factory.mktemp("home"), SPEC) as j:
        yield j


def test_stages_leave_their_trials_in_the_store(job):
    store, job_id = job["store"], job["job_id"]
    assert store.get_job(job_id)["status"] == "COMPLETE"
    kinds = [t["kind"] for t in store.trials(job_id)]
    assert kinds[0] == "teacher" and kinds[1] == "supernet"
    sup = store.trials(job_id, kind="supernet")[0]
    assert sup["state"] == "COMPLETE"
    assert {a["kind"] for a in sup["artefacts"]} == {"supernet"}
    model_dir = pathlib.Path(next(a["path"] for a in sup["artefacts"] if a["kind"] == "supernet"))
    assert (model_dir / "config.json").is_file()
    assert not (model_dir.parent / "checkpoint.pt").exists()  # the resume state goes once the round is complete
    assert len(store.trials(job_id, kind="student")) == 6


def test_assistant_candidates_carry_p_scale_and_tau(job):
    store, job_id = job["store"], job["job_id"]
    assistants = store.trials(job_id, kind="assistant", state="COMPLETE")
    assert len(assistants) >= 2
    for t in assistants:
        p = metric_value(t, "accuracy", "dev", "proxy")
        scale = metric_value(t, "scale", "dev", "proxy")
        tau = metric_value(t, "tau", "dev", "proxy")
        assert 0 < scale < 1 and tau == pytest.approx(p + 0.2 * (1 - scale))
    best = max(assistants, key=lambda t: metric_value(t, "tau", "dev", "proxy"))
    # the chosen assistant was distilled standalone, and its logits taught the students
    assert metric_value(best, "accuracy", "dev", "final") is not None
    assert any(a["kind"] == "logits" for a in best["artefacts"])


def test_students_have_proxy_everywhere_and_final_on_the_chosen_points(job):
    store, job_id = job["store"], job["job_id"]
    students = store.trials(job_id, kind="student", state="COMPLETE")
    assert len(students) == 6
    assert all(metric_value(t, "accuracy", "dev", "proxy") is not None and t["latency"] for t in students)
    finals = [t for t in students if metric_value(t, "accuracy", "dev", "final") is not None]
    assert len(finals) == 2
    for t in finals:
        assert metric_value(t, "accuracy", "test", "final") is not None
        assert metric_value(t, "one_step_accuracy", "dev", "final") is not None  # the teacher -> student baseline
    assert {t["config"]["generation"] for t in students} == {0, 1}


def test_each_final_is_distilled_at_the_lr_its_size_calls_for(job):
    """search.final.lr_teacher_size (default 5e-5): a final's lr runs geometrically from distill.lr (1e-3 in the tiny
    space) towards 5e-5 by the shape's share of the teacher's encoder weights, and the lr used is stored with it."""
    from nas.distill.loop import lr_by_size
    from nas.spec.job import FinalSettings
    from nas.spec.space import load_search_space
    from nas.students.shape import Shape
    from nas.teachers.load import teacher_config

    store, job_id = job["store"], job["job_id"]
    cfg = teacher_config("minilm-l6")
    teacher = Shape(cfg["num_hidden_layers"], cfg["hidden_size"], cfg["num_attention_heads"], cfg["intermediate_size"])
    lr_small = load_search_space("tiny", cfg).distill.lr  # the spec sets neither final.lr nor lr_teacher_size
    lr_teacher = FinalSettings().lr_teacher_size
    finals = [t for t in store.trials(job_id, kind=("student", "assistant"))
              if metric_value(t, "accuracy", "dev", "final") is not None]
    assert len(finals) >= 3  # two students and the assistant
    for t in finals:
        shape = Shape.from_dict(t["config"]["shape"])
        used = next(m["value"] for m in t["metrics"] if m["name"] == "lr" and m["source"] == "final")
        assert used == pytest.approx(lr_by_size(lr_small, lr_teacher, shape.share_of(teacher)), rel=1e-9)
        assert lr_teacher < used < lr_small
    # the larger a shape, the gentler its lr
    by_weights = sorted(finals, key=lambda t: Shape.from_dict(t["config"]["shape"]).encoder_weights())
    lrs = [next(m["value"] for m in t["metrics"] if m["name"] == "lr" and m["source"] == "final") for t in by_weights]
    assert lrs == sorted(lrs, reverse=True) and lrs[0] > lrs[-1]


def test_two_step_students_are_sliced_from_the_distilled_assistant_and_one_step_from_the_supernet(job):
    """`final.student_init: assistant`: each two-step final starts from its slice of the distilled assistant's saved
    model (teacher -> assistant -> student in weights too); the one-step baseline beside it from the supernet."""
    from nas.students.shape import Shape

    store, job_id = job["store"], job["job_id"]
    assistant = next(t for t in store.trials(job_id, kind="assistant")
                     if metric_value(t, "accuracy", "dev", "final") is not None)
    a_model = next(a["path"] for a in assistant["artefacts"] if a["kind"] == "model")
    supernet = next(a["path"] for a in store.job_artefacts(job_id, "supernet"))
    finals = [t for t in store.trials(job_id, kind="student") if metric_value(t, "accuracy", "dev", "final") is not None]
    assert len(finals) == 2
    for t in finals:
        arts = {a["kind"]: a["path"] for a in t["artefacts"]}
        assert Shape.from_dict(t["config"]["shape"]).fits_in(Shape.from_dict(assistant["config"]["shape"]))
        assert arts["init"] == a_model and arts["one_step_init"] == supernet
        assert metric_value(t, "one_step_accuracy", "dev", "final") is not None
    # the assistant itself was sliced from the supernet
    assert {a["kind"]: a["path"] for a in assistant["artefacts"]}["init"] == supernet


def test_final_stage_used_the_teacher_labelled_transfer_set(job):
    import torch

    store, job_id = job["store"], job["job_id"]
    teacher = store.trials(job_id, kind="teacher")[0]
    cache = pathlib.Path(next(a["path"] for a in teacher["artefacts"] if a["kind"] == "teacher")).parent
    sets = list(cache.glob("augment-*.pt"))
    assert sets, "no transfer set was cached beside the teacher"
    tr = torch.load(sets[0])
    assert len(tr["source"]) == len(tr["logits"]) > 0
    assistant = max(store.trials(job_id, kind="assistant", state="COMPLETE"),
                    key=lambda t: metric_value(t, "tau", "dev", "proxy"))
    assert {"logits", "transfer_logits"} <= {a["kind"] for a in assistant["artefacts"]}
    # the per-trial speedup against the same-round teacher is stored with every measured student
    students = store.trials(job_id, kind="student", state="COMPLETE")
    assert all(metric_value(t, "speedup", "dev", "proxy") for t in students)


def test_export_of_a_proxy_only_point_reproduces_its_proxy_accuracy(job, tmp_path):
    from nas.results.export import evaluate_export, export_trial

    store, job_id = job["store"], job["job_id"]
    proxy_only = next(t for t in store.trials(job_id, kind="student", state="COMPLETE")
                      if metric_value(t, "accuracy", "dev", "final") is None)
    out = export_trial(store, job_id, proxy_only["number"], tmp_path / "exp")
    res = evaluate_export(out)
    assert res["abs_diff"] <= 1e-6, res


def test_resume_of_a_complete_job_changes_nothing(job):
    from nas.pipeline import resume_job

    store, job_id = job["store"], job["job_id"]
    before = store.count_rows()
    resume_job(store, job_id, progress=False)
    after = store.count_rows()
    assert after["trials"] == before["trials"] and after["latency_measurements"] == before["latency_measurements"]


def test_a_wall_clock_budget_stops_the_schedule_and_skips_the_assistant_distillation(job):
    """`budgets.time_s` spent by the supernet itself: no proxy generation and no final starts after the deadline, the
    assistant is scored (τ) but not distilled, and the job still completes."""
    import yaml

    from nas.pipeline import run_job
    from nas.spec.job import parse_spec

    store = job["store"]
    raw = yaml.safe_load(SPEC)
    raw["name"] = "tiny-supernet-deadline"
    raw["budgets"]["time_s"] = 0.01
    lines: list[str] = []
    with job_environment(job["home"]):
        job_id = run_job(parse_spec({**raw, "storage": store.url}), store, log=lines.append, progress=False)
    assert store.get_job(job_id)["status"] == "COMPLETE"
    assert store.trials(job_id, kind="supernet", state="COMPLETE")
    assert store.trials(job_id, kind="student") == []
    assert any("wall-clock budget is spent after 0 proxy evaluations" in m for m in lines), lines
    assistants = store.trials(job_id, kind="assistant", state="COMPLETE")
    assert assistants and all(metric_value(t, "tau", "dev", "proxy") is not None for t in assistants)
    assert all(metric_value(t, "accuracy", "dev", "final") is None for t in assistants)


def test_probe_proxy_ranks_students_by_their_own_features_and_keeps_the_heads_score(job, tmp_path):
    """`supernet.proxy: probe`: every shape's proxy accuracy comes from a logistic regression on its own inherited
    features (fitted on train rows), and the inherited head's accuracy is stored beside it as `head_accuracy`."""
    import yaml

    from nas.pipeline import run_job
    from nas.spec.job import parse_spec

    store = job["store"]
    raw = yaml.safe_load(SPEC)
    raw["name"] = "tiny-supernet-probe"
    raw["budgets"]["trials"] = 2
    raw["search"] = {"strategy": "random",
                     "supernet": {"steps": 2, "n_random": 1, "rewire_rows": 16, "proxy": "probe", "probe_rows": 48},
                     "autodisc": {"enabled": False}, "final": {"top_k": 0}}
    with job_environment(job["home"]):
        job_id = run_job(parse_spec({**raw, "storage": store.url}), store, progress=False)
    assert store.get_job(job_id)["status"] == "COMPLETE"
    students = store.trials(job_id, kind="student", state="COMPLETE")
    assert len(students) == 2
    for t in students:
        acc, head = metric_value(t, "accuracy", "dev", "proxy"), metric_value(t, "head_accuracy", "dev", "proxy")
        assert acc is not None and head is not None and 0 <= acc <= 1 and 0 <= head <= 1
    # `head_accuracy` is what the shape's own weights score: an export of the point reproduces it
    from nas.results.export import evaluate_export, export_trial

    res = evaluate_export(export_trial(store, job_id, students[0]["number"], tmp_path / "exp"))
    assert res["stored_dev_accuracy"] == metric_value(students[0], "head_accuracy", "dev", "proxy")
    assert res["abs_diff"] <= 1e-6, res
    # the inherited-head job above never wrote a probe's companion metric
    assert all(metric_value(t, "head_accuracy", "dev", "proxy") is None
               for t in store.trials(job["job_id"], kind="student", state="COMPLETE"))


def test_second_round_supernet_starts_from_the_distilled_assistant_and_the_students_are_searched_on_it(job, tmp_path):
    """`autodisc.second_round`: after the assistant is picked on the first supernet, it is distilled from the teacher,
    a second supernet of the assistant's shape is trained from it over the student shapes, and the student search,
    the finals and an export of a proxy-only point all slice that one; the assistants and the one-step baseline keep
    the first (teacher-initialised) supernet."""
    import yaml
    from transformers import BertConfig

    from nas.pipeline import run_job
    from nas.results.export import evaluate_export, export_trial
    from nas.spec.job import parse_spec
    from nas.students.shape import Shape

    store = job["store"]
    raw = yaml.safe_load(SPEC)
    raw["name"] = "tiny-supernet-round2"
    raw["budgets"]["trials"] = 3
    raw["search"]["autodisc"]["second_round"] = True
    raw["search"]["final"] = {"top_k": 1, "epochs": 1, "one_step_baseline": True, "augment": 0}
    lines: list[str] = []
    with job_environment(job["home"]):
        job_id = run_job(parse_spec({**raw, "storage": store.url}), store, log=lines.append, progress=False)
    assert store.get_job(job_id)["status"] == "COMPLETE"
    sups = store.trials(job_id, kind="supernet", state="COMPLETE")
    assert [t["config"].get("round", 1) for t in sups] == [1, 2]
    first, second = (next(a["path"] for a in t["artefacts"] if a["kind"] == "supernet") for t in sups)
    assistant = next(t for t in store.trials(job_id, kind="assistant")
                     if metric_value(t, "accuracy", "dev", "final") is not None)
    a_shape = Shape.from_dict(assistant["config"]["shape"])
    assert sups[1]["config"]["from_assistant"] == a_shape.key and sups[1]["config"]["from_trial"] == assistant["number"]
    assert Shape.of_config(BertConfig.from_pretrained(second)) == a_shape  # the assistant is the round-2 supernet
    assert any(m.startswith(f"supernet (round 2): rewired distilled assistant {a_shape.key}") for m in lines), lines
    # assistants were scored on the first supernet, students on the second
    src = lambda t: [a["path"] for a in t["artefacts"] if a["kind"] == "proxy_source"]  # noqa: E731
    assert all(src(t) == [first] for t in store.trials(job_id, kind="assistant", state="COMPLETE"))
    students = store.trials(job_id, kind="student", state="COMPLETE")
    assert len(students) == 3 and all(src(t) == [second] for t in students)
    assert all(Shape.from_dict(t["config"]["shape"]).fits_in(a_shape) for t in students)
    final = next(t for t in students if metric_value(t, "accuracy", "dev", "final") is not None)
    arts = {a["kind"]: a["path"] for a in final["artefacts"]}
    assert arts["init"] == second and arts["one_step_init"] == first
    proxy_only = next(t for t in students if metric_value(t, "accuracy", "dev", "final") is None)
    res = evaluate_export(export_trial(store, job_id, proxy_only["number"], tmp_path / "exp"))
    assert res["abs_diff"] <= 1e-6, res


def test_students_sliced_from_the_teacher_start_where_the_plain_recipe_does(job):
    """`final.student_init: teacher`: every final student, two-step and the one-step baseline, starts from its slice of
    the task-fine-tuned teacher (the plain recipe's start), not from a supernet; the assistant is still sliced from the
    supernet. The finals also take the hidden-state and attention losses (they need the teacher's forward)."""
    import yaml

    from nas.pipeline import run_job
    from nas.spec.job import parse_spec

    store = job["store"]
    raw = yaml.safe_load(SPEC)
    raw["name"] = "tiny-supernet-teacher-init"
    raw["budgets"]["trials"] = 2
    raw["search"].update(strategy="random", supernet={"steps": 2, "n_random": 1, "rewire_rows": 16},
                         final={"top_k": 1, "epochs": 1, "one_step_baseline": True, "student_init": "teacher",
                                # TinyBERT-style intermediate losses against the teacher's forward, in every final
                                "hidden_weight": 1.0, "attention_weight": 1.0, "layer_map": "uniform"})
    with job_environment(job["home"]):
        job_id = run_job(parse_spec({**raw, "storage": store.url}), store, progress=False)
    assert store.get_job(job_id)["status"] == "COMPLETE"
    teacher_dir = next(a["path"] for a in store.job_artefacts(job_id, "teacher"))
    supernet = next(a["path"] for a in store.job_artefacts(job_id, "supernet"))
    finals = [t for t in store.trials(job_id, kind="student") if metric_value(t, "accuracy", "dev", "final") is not None]
    assert len(finals) == 1
    arts = {a["kind"]: a["path"] for a in finals[0]["artefacts"]}
    assert arts["init"] == teacher_dir and arts["one_step_init"] == teacher_dir
    assert metric_value(finals[0], "one_step_accuracy", "test", "final") is not None
    for name in ("hidden_weight", "attention_weight", "one_step_hidden_weight", "one_step_attention_weight"):
        assert metric_value(finals[0], name, "train", "final") == 1.0  # both finals trained with the losses
    assistant = next(t for t in store.trials(job_id, kind="assistant")
                     if metric_value(t, "accuracy", "dev", "final") is not None)
    assert {a["kind"]: a["path"] for a in assistant["artefacts"]}["init"] == supernet


def test_final_seeds_keep_the_average_of_their_members_weights(job, tmp_path):
    """`final.seeds: 3`: the final student is trained three times from the same slice with consecutive seeds; each
    member's dev and test scores and weights are stored, the kept model is the element-wise mean of the members'
    weights, and its export reproduces the stored dev accuracy. Three GPUs declared to real Ray (the tensors stay on
    the CPU): the members are three Ray tasks of a GPU and a CPU each, training at once, and the final's own task
    averages their weights."""
    import ray
    import torch
    import yaml
    from transformers import AutoModelForSequenceClassification

    from nas.pipeline import run_job
    from nas.service.cluster import init_ray
    from nas.results.export import evaluate_export, export_trial
    from nas.results.front import front_rows
    from nas.spec.job import parse_spec
    from nas.ui.dashboard import data as dd
    from nas.ui.fronts import front_sentence

    store = job["store"]
    raw = yaml.safe_load(SPEC)
    raw["name"] = "tiny-supernet-seeds"
    raw["budgets"]["trials"] = 2
    raw["search"].update(strategy="random", supernet={"steps": 2, "n_random": 1, "rewire_rows": 16},
                         final={"top_k": 1, "epochs": 1, "two_step": False, "seeds": 3})
    raw["compute"] = {"device": "cuda"}
    ray.shutdown()  # the module's job left its Ray (no GPUs) up
    with job_environment(job["home"], NAS_GPU_AS_CPU="1"):  # before Ray starts: its workers inherit it
        init_ray(num_cpus=3, num_gpus=3)
        job_id = run_job(parse_spec({**raw, "storage": store.url}), store, progress=False)
    assert store.get_job(job_id)["status"] == "COMPLETE"
    finals = [t for t in store.trials(job_id, kind="student")
              if metric_value(t, "accuracy", "dev", "final") is not None]
    assert len(finals) == 1
    final = finals[0]
    assert metric_value(final, "seeds", "train", "final") == 3
    assert final["compute"]["assigned"] == {"CPU": 1.0, "GPU": 1.0}, final["compute"]  # a GPU and its node share
    spans = sorted((metric_value(final, f"seed{i}_task_started_at", "train", "final"),
                    metric_value(final, f"seed{i}_task_finished_at", "train", "final")) for i in range(3))
    assert spans[1][0] < spans[0][1] and spans[2][0] < spans[0][1], f"the members should train at once: {spans}"
    kept_span = (metric_value(final, "task_started_at", "train", "final"),
                 metric_value(final, "task_finished_at", "train", "final"))
    assert kept_span[0] >= max(end for _, end in spans), (kept_span, spans)  # the average waits for every member
    for i in range(3):
        for split in ("dev", "test"):
            assert 0.0 <= metric_value(final, f"seed{i}_accuracy", split, "final") <= 1.0
    arts = {a["kind"]: a["path"] for a in final["artefacts"]}
    members = [torch.load(arts[f"seed{i}_weights"])["state"] for i in range(3)]
    name = next(k for k, v in members[0].items() if k.endswith("query.weight"))
    # the seeds differ (batch order and dropout), so the members do
    assert (members[0][name] - members[1][name]).abs().max() > 1e-4
    kept = AutoModelForSequenceClassification.from_pretrained(arts["model"]).state_dict()
    for key, value in kept.items():
        if value.is_floating_point():
            mean = sum(m[key].float() for m in members) / 3
            assert torch.allclose(value.float(), mean, atol=1e-6), key
    res = evaluate_export(export_trial(store, job_id, final["number"], tmp_path / "exp"))
    assert res["abs_diff"] <= 0.005, res
    # the job's closing lines say what the kept model is, and how its members scored alone
    row = next(r for r in front_rows(store, job_id)["rows"] if r["trial"] == final["number"])
    low, high = sorted(metric_value(final, f"seed{i}_accuracy", "test", "final") for i in range(3))[::2]
    assert f"the weight average of 3 seeds' finals (each alone: test accuracy {low:.4f}-{high:.4f})" in \
        front_sentence(row, "accuracy")
    # and the dashboard's "What to deploy" panel, from its trial frame
    df = dd.with_retention(dd.trial_frame(store.trials(job_id)), front_rows(store, job_id)["teacher"])
    shown = df[df["trial"] == final["number"]].iloc[0]
    assert (shown["seeds"], shown["members_test_min"], shown["members_test_max"]) == (3, low, high)
    assert dd.deploy_sentence(shown, "accuracy").endswith(
        f"It is the weight average of 3 seeds' finals (each alone: test accuracy {low:.4f}-{high:.4f}).")
    others = df[(df["kind"] == "student") & (df["trial"] != final["number"])]
    assert (others["seeds"] == 1).all() and others["members_test_min"].isna().all()
    assert not any("weight average" in dd.deploy_sentence(r, "accuracy")
                   for _, r in dd.with_retention(others, front_rows(store, job_id)["teacher"]).iterrows()
                   if r["p50_ms"] == r["p50_ms"])


def test_with_a_latency_budget_the_last_trials_climb_from_the_best_student_within_it(job):
    """`constraints` + `search.climb`: the strategy gets budgets.trials minus the climb's share; the rest are larger
    neighbours of the most accurate student within the budget at the time, each predicted to fit, scored like the
    strategy's (proxy accuracy, measured latency) and marked `source: climb`."""
    import yaml

    from nas.pipeline import run_job
    from nas.search.climb import larger_neighbours
    from nas.search.constraints import violation
    from nas.spec.job import parse_spec
    from nas.spec.space import load_search_space
    from nas.store.records import trial_objectives
    from nas.students.shape import Shape

    store = job["store"]
    raw = yaml.safe_load(SPEC)
    raw["name"] = "tiny-supernet-climb"
    raw["budgets"]["trials"] = 8
    raw["constraints"] = {"min_speedup": 1.5}
    raw["search"] = {"strategy": "random", "population": 3, "climb": 6,
                     "supernet": {"steps": 2, "n_random": 1, "rewire_rows": 16},
                     "autodisc": {"enabled": False}, "final": {"top_k": 0}}
    lines: list[str] = []
    with job_environment(job["home"]):
        job_id = run_job(parse_spec({**raw, "storage": store.url}), store, log=lines.append, progress=False)
    assert store.get_job(job_id)["status"] == "COMPLETE"
    students = store.trials(job_id, kind="student")
    assert len(students) == 8 and all(t["state"] == "COMPLETE" for t in students)
    sources = [t["config"]["source"] for t in students]
    assert sources == ["proxy"] * 6 + ["climb"] * 2, sources  # a quarter of 8 trials, the last ones
    space = load_search_space("tiny").student
    cons = {"min_speedup": 1.5}
    for i, t in enumerate(students[6:], start=6):
        before = [(Shape.from_dict(s["config"]["shape"]), trial_objectives(s, "accuracy", "p50", "proxy"))
                  for s in students[:i]]
        within = [(s, o) for s, o in before if violation(o, cons) == 0.0]
        assert within, "nothing was within the budget to climb from"
        shape = Shape.from_dict(t["config"]["shape"])
        assert shape.key not in {s.key for s, _ in before}
        # a larger neighbour of a student that was within the budget before it
        parents = [s for s, _ in within if shape in larger_neighbours(space, s)]
        assert parents, (shape.key, [s.key for s, _ in within])
    assert any(m.startswith("search: climbing to the latency limit: ") for m in lines), lines
