"""Per-trial-KD baselines (nas/baselines.py): each searcher runs a tiny real job (MiniLM teacher on a BBC News slice,
students distilled as Ray Tune trials, every row in SQLite); the wall-clock budget stops a search; hypervolume over
time and time-to-95% on a hand-made case."""

from __future__ import annotations

import pytest
from conftest import job_environment, tiny_job_spec

METHODS = ("random", "optuna-nsga2", "nni-evolution")


def _spec(method: str, trials: int = 2):
    import yaml

    from nas.spec.job import parse_spec

    raw = yaml.safe_load(tiny_job_spec(f"tiny-{method}"))
    raw["references"] = []
    raw["budgets"]["trials"] = trials
    raw["search"] = {"strategy": method, "population": 2}
    return parse_spec(raw)


@pytest.fixture(scope="module")
def jobs(tmp_path_factory):
    home = tmp_path_factory.mktemp("home")
    with job_environment(home):
        from nas.pipeline import run_timed_job
        from nas.store import Store

        # a store per job: a latency row cached by an earlier job's same shape would be reused without a speedup
        stores = {m: Store(f"sqlite:///{home / (m + '.db')}") for m in (*METHODS, "budget")}
        runs = {m: run_timed_job(_spec(m), stores[m], budget_s=600, log=lambda _: None) for m in METHODS}
        # a budget shorter than one trial: the first trial runs, no second one starts
        runs["budget"] = run_timed_job(_spec("nni-evolution", trials=3), stores["budget"], budget_s=0.5,
                                       log=lambda _: None)
        yield stores, runs


@pytest.mark.parametrize("method", METHODS)
def test_each_baseline_distils_and_measures_every_candidate(jobs, method):
    from nas.results.curves import hv_curve, trial_events

    stores, runs = jobs
    store, run = stores[method], runs[method]
    job = store.get_job(run["job_id"])
    assert job["status"] == "COMPLETE" and job["spec"]["search"]["strategy"] == method
    trials = store.trials(run["job_id"])
    students = [t for t in trials if t["kind"] == "student"]
    assert len(students) == 2 and all(t["state"] == "COMPLETE" for t in students), [t["error"] for t in students]
    assert len({tuple(t["config"]["shape"].values()) for t in students}) == 2
    for t in students:
        assert t["config"]["strategy"] == method
        names = {(m["name"], m["split"], m["source"]) for m in t["metrics"]}
        assert {("accuracy", "dev", "final"), ("speedup", "dev", "final"), ("params", "dev", "final")} <= names
        assert t["latency"][-1]["p50_ms"] > 0 and t["artefacts"]
    teacher = next(t for t in trials if t["kind"] == "teacher")
    events = trial_events(trials, "accuracy", run["search_start"], run["search_end"], teacher["latency"][-1]["p50_ms"])
    assert len(events) == 2
    assert all(0 <= e[0] <= run["search_end"] - run["search_start"] + 1 for e in events)
    for (_, key, acc, rel), t in zip(events, sorted(students, key=lambda t: t["finished_at"])):
        speedup = next(m["value"] for m in t["metrics"] if m["name"] == "speedup")
        assert rel == pytest.approx(1 / speedup) and 0 <= acc <= 1
    hv = [h for _, h in hv_curve(events, (0.0, 1.0))]
    assert hv == sorted(hv) and hv[-1] > 0  # per-trial points only ever add to the front


def test_the_wall_clock_budget_stops_the_search(jobs):
    stores, runs = jobs
    store, run = stores["budget"], runs["budget"]
    students = store.trials(run["job_id"], kind="student")
    assert store.get_job(run["job_id"])["status"] == "COMPLETE"
    assert len(students) == 1 and students[0]["state"] == "COMPLETE"  # started before the deadline, then none


@pytest.mark.parametrize("method", ["optuna-nsga2", "nni-evolution"])
def test_searchers_propose_valid_new_shapes_reproducibly_and_survive_failures(method):
    from nas.search.strategies import make_strategy
    from nas.spec.space import load_search_space
    from nas.teachers.load import teacher_config

    space = load_search_space("bert_small", teacher_config("minilm-l6")).student

    def run() -> list[str]:
        st = make_strategy(method, space, 7, population=4)
        keys: list[str] = []
        for g in range(8):
            for i, s in enumerate(st.ask(3 if g % 2 else 1)):
                assert s.is_valid() and s.key not in keys
                assert s.layers in space.layers and s.hidden in space.hidden and s.ffn in space.ffn
                keys.append(s.key)
                # every fourth trial fails (no objectives); the rest: a smooth synthetic front
                st.tell(s, {} if len(keys) % 4 == 0 else {"metric": 1 - 1 / (s.layers * s.hidden), "latency_ms":
                                                           s.layers * s.hidden * (1 + s.ffn / 1536) / 100})
        return keys

    first = run()
    assert len(first) == 16 and first == run()


def test_hypervolume_over_time_and_time_to_95_percent_on_a_hand_made_case():
    from nas.results.curves import hv_at, hv_curve, time_to_reach

    ref = (0.5, 1.0)  # majority-class accuracy, the teacher's latency
    events = [(10.0, "a", 0.7, 0.5),   # HV (0.7-0.5)*(1-0.5) = 0.10
              (20.0, "b", 0.6, 0.2),   # + b below a: 0.10*0.8 + 0.10*0.5 = 0.13
              (25.0, "c", 0.65, 0.9),  # dominated by a: unchanged
              (30.0, "a", 0.55, 0.5)]  # a's final replaces its proxy: b 0.08 + c, no longer dominated, 0.05*0.1
    curve = hv_curve(events, ref)
    assert [t for t, _ in curve] == [10.0, 20.0, 25.0, 30.0]
    assert [h for _, h in curve] == pytest.approx([0.10, 0.13, 0.13, 0.085])
    assert hv_at(curve, 5.0) == 0.0 and hv_at(curve, 29.9) == pytest.approx(0.13) and hv_at(curve, 60) == pytest.approx(0.085)
    best = 0.13
    assert time_to_reach(curve, 0.95 * best) == 20.0
    assert time_to_reach(curve, 0.95 * best, budget_s=19.0) is None
    assert time_to_reach(curve, 0.10) == 10.0
    assert time_to_reach(curve, 0.2) is None
    assert hv_curve([(1.0, "x", 0.4, 0.1)], ref) == [(1.0, 0.0)]  # below the reference accuracy: no volume
