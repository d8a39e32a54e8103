"""No tensor in the training, labelling, proxy, final and HPO paths lands on an implicit device.

Under the NAS_STRICT_DEVICES hook torch's default device is `meta` in a job's stages and in every worker: a tensor or
module made without an explicit device is a meta tensor there, which fails at its first real use (or, as an index,
reads garbage, which the jobs' own result checks catch). conftest turns the hook on for every real job of the suite, so
each of them is this test for its paths: per-trial KD (test_job_e2e), the supernet schedule with AutoDisc assistants,
the transfer set and the finals (test_supernet_job), HPO samples and full retrains (test_hpo), pairs, references, the
CLI, the cluster and the faults; on a fresh clone the first of them fine-tunes and labels the teacher from a cold cache.
(A dedicated job here ran all of those paths at once in 55 s; the suite already runs each of them strict.) So the CUDA
path differs from the tested one only in the device's name. Here: the hook itself."""

from __future__ import annotations

import os

import torch

from nas.compute import on_host, strict_devices


def test_the_hook_makes_the_default_device_meta_and_the_host_stays_explicit(monkeypatch):
    monkeypatch.setenv("NAS_STRICT_DEVICES", "1")
    with strict_devices():
        assert torch.zeros(2).device.type == "meta"
        with on_host():
            assert torch.zeros(2).device.type == "cpu"
        assert torch.as_tensor([1, 2], device="cpu").device.type == "cpu"
    assert torch.zeros(2).device.type == "cpu"  # restored
    monkeypatch.delenv("NAS_STRICT_DEVICES")
    with strict_devices():
        assert torch.zeros(2).device.type == "cpu"  # without the hook it changes nothing


def test_every_real_job_of_the_suite_runs_strict():
    assert os.environ.get("NAS_STRICT_DEVICES") == "1"  # conftest's, inherited by `nas` subprocesses and Ray workers


def test_a_ray_worker_thread_that_sets_up_is_strict_for_the_rest_of_its_life():
    """What `worker_setup` calls, in a Ray worker, in a thread of its own (Ray Tune runs a trainable in one): every
    later tensor of that thread without a device is a meta tensor."""
    import ray

    def worker() -> list[str]:
        import threading

        from nas.compute import strict_devices_here

        seen = []

        def trainable() -> None:
            strict_devices_here()
            seen.append(torch.zeros(1).device.type)
            seen.append(torch.as_tensor([1], device="cpu").device.type)

        t = threading.Thread(target=trainable)
        t.start()
        t.join()
        return seen

    ray.init(num_cpus=1, include_dashboard=False)
    try:
        assert ray.get(ray.remote(worker).remote()) == ["meta", "cpu"]
    finally:
        ray.shutdown()
