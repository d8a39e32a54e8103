"""A uniform "model soup": the average of the weights of models of one architecture trained from the same start with
different seeds (Wortsman et al., 2022). One model of the same shape, so the same latency."""

from __future__ import annotations

from collections.abc import Iterable


def average_state_dicts(states: Iterable[dict]) -> dict:
    """The element-wise mean of every floating-point tensor over `states` (accumulated in fp32, returned in each
    tensor's own dtype); integer buffers (position ids, token types) are taken from the first state. Raises ValueError
    on no states or states whose keys or shapes differ."""
    total: dict | None = None
    first: dict | None = None
    n = 0
    for state in states:
        if first is None:
            first = state
            total = {k: v.detach().float().clone() for k, v in state.items() if v.is_floating_point()}
        else:
            if state.keys() != first.keys():
                raise ValueError(f"the models differ in their weights: {sorted(state.keys() ^ first.keys())[:3]}")
            for k, acc in total.items():
                if state[k].shape != acc.shape:
                    raise ValueError(f"{k}: shape {tuple(state[k].shape)} against {tuple(acc.shape)}")
                acc += state[k].detach().float()
        n += 1
    if first is None:
        raise ValueError("no models to average")
    return {k: (total[k] / n).to(v.dtype) if k in total else v for k, v in first.items()}
