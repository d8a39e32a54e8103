"""The HPO stage (issue 5): the seeds' losses on hand-computed cases, every search algorithm through a real Ray Tune run,
searcher state replayed on resume, the gradient-boosted-trees relevance teacher, and a tiny real job with an HPO stage
that is stopped half way and resumed."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from conftest import job_environment, tiny_job_spec

from nas.distill.loop import DistillSettings
from nas.distill.losses import attention_kl, hinge, relevance_kl, soft_kl, soft_mse
from nas.hpo import ALGORITHMS, make_searcher
from nas.hpo.searchers import make_scheduler, replay
from nas.spec.errors import SpecError

PARAMS = {
    "lr": {"type": "loguniform", "low": 1e-4, "high": 1e-2},
    "alpha_soft": {"type": "uniform", "low": 0.0, "high": 1.0},
    "batch_size": {"type": "choice", "values": [16, 32]},
}


# -- losses -------------------------------------------------------------------------------------------------------------
def test_hinge_by_hand():
    pos = torch.tensor([0.9, 0.2, 0.5])
    neg = torch.tensor([0.1, 0.4, 0.5])
    # max(0, .7 - .9 + .1) = 0; max(0, .7 - .2 + .4) = .9; max(0, .7 - .5 + .5) = .7
    assert hinge(pos, neg, 0.7).item() == pytest.approx((0.0 + 0.9 + 0.7) / 3)
    assert hinge(pos, neg, 0.0).item() == pytest.approx((0.0 + 0.2 + 0.0) / 3)


def test_relevance_kl_by_hand():
    logits = torch.tensor([[0.0, math.log(3.0)]])  # softmax = [.25, .75]
    aux = torch.tensor([[0.5, 0.5]])
    expected = 0.5 * math.log(0.5 / 0.25) + 0.5 * math.log(0.5 / 0.75)
    assert relevance_kl(logits, aux).item() == pytest.approx(expected, rel=1e-5)
    assert relevance_kl(logits, torch.tensor([[0.25, 0.75]])).item() == pytest.approx(0.0, abs=1e-6)


def test_soft_losses_by_hand():
    s = torch.tensor([[1.0, 3.0]])
    t = torch.tensor([[2.0, 0.0]])
    assert soft_mse(s, t).item() == pytest.approx(((1 - 2) ** 2 + 3 ** 2) / 2)
    p_t = torch.softmax(t / 2, -1)
    p_s = torch.softmax(s / 2, -1)
    assert soft_kl(s, t, 2.0).item() == pytest.approx(4 * (p_t * (p_t.log() - p_s.log())).sum().item(), rel=1e-5)


def test_attention_kl_by_hand():
    # one student layer <- the teacher layer it was sliced from (layer_indices(1, 2) = [0]); the 2nd token is padding
    s = torch.tensor([[[[0.5, 0.5], [0.5, 0.5]], [[0.9, 0.1], [0.5, 0.5]]]])  # (1, 2 heads, 2, 2): mean row0 [.7, .3]
    t_layer1 = torch.tensor([[[[0.7, 0.3], [0.1, 0.9]]]])  # 1 head
    t_layer0 = torch.full((1, 1, 2, 2), 0.5)
    mask = torch.tensor([[1, 0]])
    assert attention_kl([s], [t_layer1, t_layer0], 2, mask).item() == pytest.approx(0.0, abs=1e-6)
    expected = 0.5 * math.log(0.5 / 0.7) + 0.5 * math.log(0.5 / 0.3)  # KL(uniform || [.7, .3]) on the real token only
    assert attention_kl([s], [t_layer0, t_layer1], 2, mask).item() == pytest.approx(expected, rel=1e-5)
    # TinyBERT's uniform map sends a 1-layer student to the teacher's last layer: the pairs swap
    assert attention_kl([s], [t_layer0, t_layer1], 2, mask, "uniform").item() == pytest.approx(0.0, abs=1e-6)
    assert attention_kl([s], [t_layer1, t_layer0], 2, mask, "uniform").item() == pytest.approx(expected, rel=1e-5)


def test_layer_maps():
    from nas.students.shape import matched_layers

    assert matched_layers(1, 6) == [0] and matched_layers(1, 6, "uniform") == [5]
    assert matched_layers(2, 6, "uniform") == [2, 5] and matched_layers(3, 6, "uniform") == [1, 3, 5]
    assert matched_layers(6, 6, "uniform") == matched_layers(6, 6) == list(range(6))
    with pytest.raises(ValueError, match="layer_map"):
        matched_layers(2, 6, "top")


def test_hidden_and_attention_losses_train_a_real_student():
    from transformers import BertConfig, BertForSequenceClassification

    from nas.distill.loop import distill
    from nas.students.bert_slice import extract_subnet
    from nas.students.shape import Shape

    torch.manual_seed(0)
    teacher = BertForSequenceClassification(BertConfig(
        vocab_size=100, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
        num_labels=2, attn_implementation="eager")).eval()
    x = {"input_ids": torch.randint(1, 100, (24, 8)), "attention_mask": torch.ones(24, 8, dtype=torch.long)}
    y = torch.randint(0, 2, (24,))
    with torch.no_grad():
        t_logits = teacher(**x).logits
    losses = {}
    for name, kw in {"plain": {}, "inner": {"hidden_weight": 1.0, "attention_weight": 1.0}}.items():
        student = extract_subnet(teacher, Shape(1, 16, 2, 32))
        settings = DistillSettings(lr=1e-3, batch_size=8, **kw)
        losses[name] = distill(student, x, y, t_logits, settings, steps=6, teacher=teacher)["final_loss"]
    assert losses["inner"] > losses["plain"]  # the extra terms are in the loss
    with pytest.raises(ValueError, match="teacher"):
        distill(extract_subnet(teacher, Shape(1, 16, 2, 32)), x, y, t_logits,
                DistillSettings(hidden_weight=1.0), steps=1)


# -- the relevance teacher ----------------------------------------------------------------------------------------------
def test_gbdt_relevance_teacher_is_fitted_and_used():
    from nas.data import bbc_news_pairs
    from nas.distill.aux_teacher import fit_aux_probs, pair_features

    ds = bbc_news_pairs(0)
    n = 600
    texts, labels = ds.texts[:n], np.asarray(ds.labels[:n])
    train, dev = np.arange(0, 400), np.arange(400, n)
    probs = fit_aux_probs(texts, labels, train, "pair", seed=0)
    assert probs.shape == (n, 2) and np.allclose(probs.sum(1), 1.0)
    assert (probs[dev].argmax(1) == labels[dev]).mean() > 0.8  # lexical overlap finds a headline's own article
    f = pair_features([("rates rise", "the bank said rates will rise"), ("rates rise", "football results")])
    assert f[0, 0] == 2 and f[1, 0] == 0  # overlap counts


# -- search algorithms through Ray Tune --------------------------------------------------------------------------------
def _make_objective():
    def objective(config: dict) -> None:  # nested: shipped to Ray workers by value (the tests dir is not importable)
        import math

        from ray import tune

        for step in range(1, 4):  # peak at lr 1e-3, alpha 0.7; rises with steps so schedulers have rungs to compare
            score = 1.0 - (math.log10(config["lr"]) + 3) ** 2 / 4 - (config["alpha_soft"] - 0.7) ** 2 + 0.01 * step
            tune.report({"accuracy": score, "train_s": 0.01 * step * config["batch_size"]})

    return objective


@pytest.fixture(scope="module")
def ray_session():
    import ray

    from nas.service.cluster import init_ray

    init_ray(num_cpus=2)
    yield
    ray.shutdown()


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_each_algorithm_runs_a_real_tune_search(algorithm, ray_session, tmp_path):
    from ray import tune

    from nas.hpo.record import RecordTrials
    from nas.store import Store

    store = Store(f"sqlite:///{tmp_path / 'nas.db'}")
    job = store.create_job("tune-" + algorithm, {}, status="RUNNING")
    searcher = make_searcher(algorithm, PARAMS, "accuracy", seed=1, max_concurrent=2,
                             points_to_evaluate=[{"lr": 1e-3, "alpha_soft": 0.5, "batch_size": 32}], population=4)
    tuner = tune.Tuner(
        tune.with_resources(_make_objective(), {"cpu": 1}),
        tune_config=tune.TuneConfig(search_alg=searcher, scheduler=make_scheduler(algorithm, "asha", "accuracy", 3),
                                    num_samples=8),
        run_config=tune.RunConfig(storage_path=str(tmp_path), name=algorithm, verbose=0,
                                  callbacks=[RecordTrials(store.url, job, {"algorithm": algorithm}, 3)]))
    results = tuner.fit()
    assert len(results) == 8 and not results.errors
    rows = store.trials(job, kind="hpo-sample")  # one row per Tune trial (BOHB pauses and restarts trials), all ended
    assert sorted(r["config"]["tune_trial_id"] for r in rows) == sorted(r.metrics["trial_id"] for r in results)
    assert {r["state"] for r in rows} <= {"COMPLETE", "PRUNED"}
    configs = [r.config for r in results]
    assert {"lr": 1e-3, "alpha_soft": 0.5, "batch_size": 32} in configs  # the default point is tried
    assert all(1e-4 <= c["lr"] <= 1e-2 and c["batch_size"] in (16, 32) for c in configs)
    assert all(type(c["batch_size"]) is int and type(c["lr"]) is float for c in configs)  # JSON-clean, no numpy scalars
    distinct = {(round(c["lr"], 12), round(c["alpha_soft"], 12), c["batch_size"]) for c in configs}
    assert len(distinct) >= 4  # the searcher proposed, not one point repeated
    best = results.get_best_result("accuracy", "max", scope="all")
    assert best.metrics["accuracy"] > 0.5


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_replay_restores_searcher_state(algorithm):
    history = [{"config": {"lr": lr, "alpha_soft": a, "batch_size": 32}, "accuracy": acc, "train_s": 1.0, "budget": 3}
               for lr, a, acc in [(1e-3, 0.7, 0.9), (1e-4, 0.1, 0.2), (5e-3, 0.4, 0.6), (2e-3, 0.9, 0.8)]]
    s = make_searcher(algorithm, PARAMS, "accuracy", seed=1, max_concurrent=2, population=4)
    assert replay(s, history, PARAMS) == 4
    inner = s.searcher
    if algorithm.startswith("optuna"):
        assert len(inner._ot_study.trials) == 4
    elif algorithm == "bohb":
        assert sum(len(v) for v in inner.bohber.configs.values()) == 4
    elif algorithm == "random":
        fresh = make_searcher("random", PARAMS, "accuracy", seed=1).searcher
        assert inner.suggest("x") != fresh.suggest("x")  # continues the sequence, does not restart it
    elif algorithm == "nni-tpe":
        assert sum(len(v) for v in inner.tuner._history.values()) == 4 * len(PARAMS)  # a record per axis per trial
    else:  # evolution tuners: the imported results form their population, so they can propose at once
        assert inner.suggest("x") is not None


# -- the stage in a real job -------------------------------------------------------------------------------------------
HPO_SPEC = tiny_job_spec("tiny-hpo").replace("budgets: {trials: 3,", "budgets: {trials: 2,").replace(
    "references: [tfidf-linear]\n", "") + (
    "hpo: {algorithm: optuna-tpe, samples: 3, sample_fraction: 0.5, epochs: 2, reports: 2, top_k: 2,"
    " space: relevance}\n")


def test_hpo_stage_in_a_job_and_resume_replays(tmp_path):
    import yaml

    from nas.pipeline import resume_job, run_job
    from nas.spec.job import parse_spec
    from nas.store import Store

    home = tmp_path / "home"
    home.mkdir()
    url = f"sqlite:///{home / 'nas.db'}"
    data = yaml.safe_load(HPO_SPEC)
    data["storage"] = url
    with job_environment(home):
        store = Store(url)
        job_id = run_job(parse_spec(data), store, progress=False)
        trials = store.trials(job_id)
        kinds = [t["kind"] for t in trials]
        assert kinds.count("hpo-sample") == 3 and kinds.count("hpo-full") == 3 and kinds.count("hpo") == 1
        samples = [t for t in trials if t["kind"] == "hpo-sample"]
        assert all(t["state"] in ("COMPLETE", "PRUNED") for t in samples)
        assert any(t["config"]["hparams"]["lr"] == pytest.approx(1e-3) for t in samples)  # the defaults are tried
        full = [t for t in trials if t["kind"] == "hpo-full"]
        assert {t["config"]["label"] for t in full} >= {"default"}
        assert all(any(m["split"] == "test" for m in t["metrics"]) for t in full)
        summary = next(t for t in trials if t["kind"] == "hpo")["config"]["summary"]
        assert summary["default_test"] is not None and summary["tuned_test"] is not None

        # more samples asked for on the same job: the finished ones are replayed, only the missing ones run
        job = store.get_job(job_id)
        spec = dict(job["spec"])
        spec["hpo"] = {**spec["hpo"], "samples": 5}
        with store.Session.begin() as s:
            from nas.store.models import Job, Trial

            s.get(Job, job_id).spec = spec
            for t in s.query(Trial).filter(Trial.job_id == job_id, Trial.kind == "hpo"):
                s.delete(t)
        logs = []
        resume_job(store, job_id, log=logs.append, progress=False)
        samples = store.trials(job_id, kind="hpo-sample")
        assert len(samples) == 5
        assert any("3 finished configuration(s) replayed" in line for line in logs), logs
        assert len(store.trials(job_id, kind="hpo")) == 1


def test_bad_hpo_space_is_a_spec_error(tmp_path):
    from nas.hpo.space import load_hpo_space

    bad = tmp_path / "bad.yaml"
    bad.write_text("params:\n  lr: {type: loguniform, low: 0, high: 1}\n")
    with pytest.raises(SpecError) as e:
        load_hpo_space(str(bad))
    assert e.value.field == "hpo.space.params.lr.low"
    bad.write_text("params:\n  learning_rate: {type: uniform, low: 0, high: 1}\n")
    with pytest.raises(SpecError) as e:
        load_hpo_space(str(bad))
    assert e.value.field == "hpo.space.params.learning_rate"
    with pytest.raises(SpecError) as e:
        load_hpo_space("no-such-space")
    assert e.value.field == "hpo.space"


def test_binary_scores_include_auc():
    from nas.distill.evaluate import scores

    logits = torch.tensor([[0.0, 1.0], [1.0, 0.0], [0.0, 2.0], [0.5, 0.0]])  # match scores 1, -1, 2, -0.5
    out = scores(logits, torch.tensor([1, 0, 1, 0]))
    assert out["auc"] == pytest.approx(1.0) and out["accuracy"] == pytest.approx(1.0)
    out = scores(logits, torch.tensor([0, 1, 1, 0]))  # positives scored -1 and 2; negatives 1 and -0.5: 2 of 4 pairs
    assert out["auc"] == pytest.approx(0.5)
    assert "auc" not in scores(torch.zeros(2, 3), torch.tensor([0, 1]))
