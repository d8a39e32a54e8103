"""Inference and scores: logits in length-sorted batches with padding trimmed, accuracy / macro-F1 / AUC."""

from __future__ import annotations

import numpy as np
import torch

from nas.compute import CPU, Compute, device_of
from nas.distill.loop import mean_pool, trim_padding


def length_order(tensors: dict[str, torch.Tensor]) -> torch.Tensor:
    """Row order by true length (shortest first), so that batches of similar length trim most of their padding."""
    mask = tensors.get("attention_mask")
    n = len(next(iter(tensors.values())))
    if mask is not None and mask.dim() == 2:
        return torch.argsort(mask.sum(1), stable=True)
    return torch.arange(n, device="cpu")


@torch.inference_mode()
def predict_logits(model, tensors: dict[str, torch.Tensor], batch_size: int = 64, compute: Compute = CPU,
                   progress: str | None = None, pooled: bool = False):
    """Logits (n, classes) on the CPU in row order; rows are batched by length and padding trimmed (same values, less
    work), each batch run on `compute`'s device in its precision (on cuda, in batches of at least 256). The model goes
    back where it was. `progress`: a progress bar of that name, by rows. `pooled`: return (logits, the final hidden
    state averaged over each row's tokens (n, hidden), fp16) from the same forward."""
    from tqdm import tqdm

    home = device_of(model)
    model.eval().to(compute.device)
    n = len(next(iter(tensors.values())))
    if n == 0:
        return (torch.empty(0, device="cpu"), torch.empty(0, device="cpu")) if pooled else torch.empty(0, device="cpu")
    batch_size = max(batch_size, 256) if compute.cuda else batch_size
    order = length_order(tensors)
    outs, pools = [], []
    bar = tqdm(total=n, desc=progress, unit="row", leave=False, disable=progress is None)
    for i in range(0, n, batch_size):
        rows = order[i:i + batch_size]
        inputs = compute.to_device(trim_padding({k: v[rows] for k, v in tensors.items()}))
        with compute.autocast():
            out = model(**inputs, **({"output_hidden_states": True} if pooled else {}))
        outs.append(out.logits.float().cpu())
        if pooled:
            pools.append(mean_pool(out.hidden_states[-1], inputs.get("attention_mask")).half().cpu())
        bar.update(len(rows))
    bar.close()
    model.to(home)
    back = torch.argsort(order)
    return (torch.cat(outs)[back], torch.cat(pools)[back]) if pooled else torch.cat(outs)[back]


def scores(logits: torch.Tensor, labels: torch.Tensor) -> dict[str, float]:
    pred = logits.argmax(-1)
    acc = (pred == labels).float().mean().item()
    f1s = []
    for c in torch.unique(labels):
        tp = ((pred == c) & (labels == c)).sum().item()
        fp = ((pred == c) & (labels != c)).sum().item()
        fn = ((pred != c) & (labels == c)).sum().item()
        f1s.append(0.0 if tp == 0 else 2 * tp / (2 * tp + fp + fn))
    out = {"accuracy": acc, "f1_macro": float(np.mean(f1s))}
    if logits.dim() == 2 and logits.shape[1] == 2 and len(torch.unique(labels)) == 2:
        from sklearn.metrics import roc_auc_score  # binary tasks (pairs: match / different) are also ranked

        out["auc"] = float(roc_auc_score(labels.numpy(), (logits[:, 1] - logits[:, 0]).float().numpy()))
    return out
