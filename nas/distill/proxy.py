"""Proxy evaluation of a shape with inherited supernet weights: its logits, its features, and a logistic-regression
probe on its own features. The supernet must already be on `compute`'s device (a caller scores many shapes with one
model); rows are moved there batch by batch and results come back to the CPU."""

from __future__ import annotations

import numpy as np
import torch

from nas.compute import CPU, Compute
from nas.distill.evaluate import length_order
from nas.distill.loop import trim_padding
from nas.students.bert_slice import supernet_forward
from nas.students.shape import Shape


def _by_length(shape_fn, tensors: dict[str, torch.Tensor], idx, batch_size: int, compute: Compute = CPU) -> torch.Tensor:
    """`shape_fn(batch)` over rows `idx` in length-sorted batches with padding trimmed (on the compute device, in its
    precision), rows back in `idx` order, on the CPU."""
    idx = torch.as_tensor(np.asarray(idx), dtype=torch.long, device="cpu")
    if len(idx) == 0:
        raise ValueError("no rows to evaluate")
    sub = {k: v[idx] for k, v in tensors.items()}
    order = length_order(sub)
    with torch.inference_mode(), compute.autocast():
        out = torch.cat([shape_fn(compute.to_device(trim_padding({k: v[order[i:i + batch_size]] for k, v in sub.items()})))
                         .float().cpu() for i in range(0, len(idx), batch_size)])
    return out[torch.argsort(order)]


def shape_logits(model, shape: Shape, tensors: dict[str, torch.Tensor], idx, batch_size: int = 64,
                 compute: Compute = CPU) -> torch.Tensor:
    """Logits (len(idx), classes) of `shape` with inherited weights on rows `idx`; tensors (n, seq)."""
    return _by_length(lambda b: supernet_forward(model, shape, b)[0], tensors, idx, batch_size, compute)


def shape_features(model, shape: Shape, tensors: dict[str, torch.Tensor], idx, batch_size: int = 64,
                   compute: Compute = CPU) -> torch.Tensor:
    """Sentence features (len(idx), 2 * shape.hidden) of `shape` with inherited weights: the last layer's [CLS] state
    and the mean of its token states (padding excluded)."""
    def features(b):
        h = supernet_forward(model, shape, b, output_hidden_states=True)[1][-1]
        m = b["attention_mask"][..., None].to(h.dtype) if "attention_mask" in b else torch.ones_like(h[..., :1])
        return torch.cat([h[:, 0], (h * m).sum(1) / m.sum(1).clamp_min(1)], 1)

    return _by_length(features, tensors, idx, batch_size, compute)


def probe_logits(model, shape: Shape, tensors: dict[str, torch.Tensor], labels: torch.Tensor, fit_idx, idx,
                 c: float = 1.0, compute: Compute = CPU) -> torch.Tensor:
    """A `probe` proxy: log-probabilities (len(idx), classes) of a logistic regression fitted on the sub-network's
    inherited sentence features (`shape_features`) of train rows `fit_idx`, applied to rows `idx`. Unlike the inherited
    classifier head, which every sub-network shares with the largest, the probe reads what the shape's own
    representation knows; rows `fit_idx` must not include `idx`."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    fit_idx = np.asarray(fit_idx)
    if len(np.intersect1d(fit_idx, np.asarray(idx))):
        raise ValueError("probe rows overlap the rows it is evaluated on")
    y = labels[torch.as_tensor(fit_idx, dtype=torch.long, device="cpu")].numpy()
    x_fit = shape_features(model, shape, tensors, fit_idx, compute=compute).numpy()
    scaler = StandardScaler().fit(x_fit)
    clf = LogisticRegression(C=c, max_iter=2000).fit(scaler.transform(x_fit), y)
    proba = clf.predict_proba(scaler.transform(shape_features(model, shape, tensors, idx, compute=compute).numpy()))
    logp = np.log(np.clip(proba, 1e-12, 1.0))  # finite: a saturated class must not turn into -inf downstream (AUC)
    n_classes = int(labels.max()) + 1
    out = torch.full((len(logp), n_classes), -1e9, dtype=torch.float32, device="cpu")
    cols = torch.as_tensor(clf.classes_, dtype=torch.long, device="cpu")
    out[:, cols] = torch.as_tensor(logp, dtype=torch.float32, device="cpu")
    return out


def evaluate_shape(model, shape: Shape, tensors: dict[str, torch.Tensor], labels: torch.Tensor, idx,
                   batch_size: int = 64) -> float:
    """Accuracy of `shape` with inherited weights (a `proxy` metric) on rows `idx`; tensors (n, seq), labels (n,)."""
    logits = shape_logits(model, shape, tensors, idx, batch_size)
    rows = torch.as_tensor(np.asarray(idx), dtype=torch.long, device="cpu")
    return float((logits.argmax(-1) == labels[rows]).float().mean())
