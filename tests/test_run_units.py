"""nas/service/cluster.py's run_units, which runs the finals (each final, each member, each baseline) as Ray tasks at
once: real Ray tasks that sleep and record when they ran; what is under test is which start, when, and what happens
after a wall-clock budget or a failure."""

from __future__ import annotations

import time

import pytest

from nas.service.cluster import init_ray, run_units


@pytest.fixture(scope="module")
def ray_up():
    import ray

    def unit(i: int, seconds: float, fail: bool = False) -> tuple[int, float, float]:
        """A unit: sleeps, then fails or returns (i, start, end). Defined here, so Ray ships it by value to its
        workers (this test module is not importable there)."""
        start = time.time()
        time.sleep(seconds)
        if fail:
            raise RuntimeError(f"unit {i} failed")
        return i, start, time.time()

    init_ray(num_cpus=2)  # a Ray another module left up serves as well: the tasks ask for no CPU
    return ray.remote(num_cpus=0)(unit)


def _runner(remote, args: dict):
    """submit(i) for run_units, recording the order units were started in; the spans come back from the tasks."""
    import ray

    started: list[int] = []
    refs: dict = {}

    def submit(i: int):
        started.append(i)
        refs[i] = remote.remote(i, *args[i][:1], **args[i][1])
        return refs[i]

    def spans() -> dict[int, tuple[float, float]]:
        out = {}
        for i, ref in refs.items():
            try:
                _, start, end = ray.get(ref)
                out[i] = (start, end)
            except Exception:
                pass
        return out

    return submit, started, spans


def test_at_most_slots_units_run_at_once_and_a_unit_waits_for_the_ones_it_needs(ray_up):
    """Unit 2 waits for 0 and 1; with two slots, 3 starts as soon as 0 ends, before 2 (which waits for the slow 1)."""
    args = {0: (0.3, {}), 1: (1.2, {}), 2: (0.3, {}), 3: (0.3, {})}
    submit, started, spans = _runner(ray_up, args)
    finished: list[int] = []
    done = run_units(submit, [(), (), (0, 1), ()], slots=2, on_done=finished.append)
    assert done == {0, 1, 2, 3} and sorted(finished) == [0, 1, 2, 3]
    assert started == [0, 1, 3, 2], started
    s = spans()
    assert s[2][0] >= max(s[0][1], s[1][1]), s  # 2 started after both of its units ended
    for i in s:  # never more than two running at any unit's start
        assert sum(1 for j in s if s[j][0] <= s[i][0] < s[j][1]) <= 2, s


def test_once_the_budget_is_spent_no_training_unit_starts_but_the_average_of_done_ones_does(ray_up):
    """One slot; the deadline lands while unit 0 trains: unit 1 (training) never starts, unit 2 (the average, which
    trains nothing and waits only for 0) still does; unit 3 waits for 1, so it never runs either."""
    args = {0: (1.0, {}), 1: (0.1, {}), 2: (0.1, {}), 3: (0.1, {})}
    submit, started, spans = _runner(ray_up, args)
    deadline = time.time() + 0.5
    done = run_units(submit, [(), (), (0,), (1,)], slots=1, may_start=lambda i: i == 2 or time.time() < deadline)
    assert done == {0, 2} and started == [0, 2], started
    assert spans()[0][1] >= deadline  # the budget was spent while unit 0 ran


def test_after_a_failure_nothing_starts_the_running_unit_finishes_and_the_failure_is_raised(ray_up):
    """Unit 0 fails while unit 1 runs (0 is let fail before 1 starts, so the order is certain): 1 finishes and counts
    as done, the ready unit 2 never starts, and run_units raises 0's error."""
    import ray

    args = {0: (0.0, {"fail": True}), 1: (1.0, {}), 2: (0.1, {})}
    submit, started, spans = _runner(ray_up, args)

    def submit_0_fails_first(i: int):
        ref = submit(i)
        if i == 0:
            ray.wait([ref], num_returns=1)
        return ref

    finished: list[int] = []
    with pytest.raises(Exception, match="unit 0 failed"):
        run_units(submit_0_fails_first, [(), (), ()], slots=2, on_done=finished.append)
    assert finished == [1] and started == [0, 1], (finished, started)
    assert 1 in spans()  # it ran to its end
