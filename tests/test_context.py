"""The JobContext contract: what reaches a worker (pickled by Ray) and its plain-data form."""

from __future__ import annotations

import json
import pickle

from nas.context import JobContext
from nas.data import Dataset
from nas.spec.job import parse_spec
from nas.spec.space import load_search_space


def context() -> JobContext:
    import numpy as np

    spec = parse_spec({"name": "ctx", "dataset": "bbc-news", "seed": 5})
    ds = Dataset("d", "classification", ["a", "b"], np.array([0, 1]), ["x", "y"])
    return JobContext(spec=spec, space=load_search_space("tiny"), teacher_config={"model_type": "bert"}, job_id=3,
                      storage="sqlite:///x.db", artefact_dir="/tmp/a", threads=2, dataset=ds, log=print,
                      train_idx=[0], dev_idx=[1], test_idx=[1], labels=[0, 1])


def test_driver_only_fields_never_reach_a_worker():
    ctx = context()
    shipped = pickle.loads(pickle.dumps(ctx))
    assert shipped.dataset is None and shipped.log is None  # the texts and the log function stay on the driver
    assert ctx.dataset is not None and ctx.log is print  # the driver's own context is untouched
    assert (shipped.seed, shipped.job_id, shipped.train_idx, shipped.spec) == (5, 3, [0], ctx.spec)
    shipped.say("a worker has no log: this is a no-op")


def test_to_dict_is_plain_json_without_the_driver_only_fields():
    d = context().to_dict()
    assert "dataset" not in d and "log" not in d
    again = json.loads(json.dumps(d))
    assert again["spec"]["name"] == "ctx" and again["compute"]["device"] == "cpu" and again["threads"] == 2
