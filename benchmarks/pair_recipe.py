"""The query-doc pair task as the seeds ran it: a cross-encoder student scoring (query, doc), trained from
(query, positive, negative) triples with hinge + soft losses (+ a relevance loss against gradient-boosted trees), and
ranked by AUC and MRR.

- `headline_triples`: BBC News headline -> article. Articles are split by article into train/dev/test; each train
  headline gets its own article (positive) and `negatives` others (half from the same category: the hard ones); each
  dev/test headline is ranked against its own article and `candidates - 1` others.
- `PairScorer`: a BERT encoder (sliced from the fine-tuned pair teacher, like every student here) whose token states are
  pooled three ways (CLS, masked mean, masked max), concatenated, and scored by two linear layers with tanh between.
- `train_pair_student`: hinge(s+, s-, margin) + soft MSE to the teacher's scores (logit of "match" minus "different")
  + KL to the auxiliary teacher's match probability; `rank_metrics`: AUC over all (pos, neg) pairs and MRR per query."""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from nas.data import Dataset
from nas.distill.loop import DistillSettings, linear_schedule, optimizer_step, trim_padding
from nas.distill.losses import hinge, relevance_kl


@dataclass
class PairData:
    dataset: Dataset  # every (query, doc) row used: train pos/neg pairs, then dev and test candidate lists
    splits: dict  # train/dev/test row indices into dataset (train: the pointwise pairs the teacher is tuned on)
    triples: np.ndarray  # (n, 2): rows of (query, pos) and (query, neg) for each training triple
    groups: dict  # split -> list of row-index arrays, one per query; the first row of each is the positive


def headline_triples(seed: int = 0, negatives: int = 2, candidates: int = 10, max_queries: int | None = None,
                     eval_queries: int | None = None) -> PairData:
    from nas.data import bbc_articles

    arts = bbc_articles()
    rng = np.random.default_rng(seed)
    cats = np.array([c for c, _ in arts])
    heads, bodies = [], []
    for _, text in arts:
        h, _, b = text.partition("\n")
        heads.append(h.strip())
        bodies.append(b.strip())
    order = rng.permutation(len(arts))
    n_dev = n_test = len(arts) // 10
    dev_a, test_a, train_a = order[:n_dev], order[n_dev:n_dev + n_test], order[n_dev + n_test:]
    if max_queries:
        train_a = train_a[:max_queries]
    if eval_queries:
        dev_a, test_a = dev_a[:eval_queries], test_a[:eval_queries]
    pairs, labels = [], []

    def add(q: int, d: int) -> int:
        pairs.append((heads[q], bodies[d]))
        labels.append(int(q == d))
        return len(pairs) - 1

    def negatives_for(q: int, pool: np.ndarray, k: int) -> list[int]:
        same = [int(x) for x in pool if cats[x] == cats[q] and x != q]
        other = [int(x) for x in pool if x != q]
        hard = list(rng.choice(same, size=min(len(same), k // 2), replace=False)) if same else []
        rest = [x for x in rng.choice(other, size=min(len(other), k), replace=False) if x not in hard]
        return hard + rest[: k - len(hard)]

    triples = []
    for q in train_a:
        pos = add(q, q)
        for n in negatives_for(q, train_a, negatives):
            triples.append((pos, add(q, n)))
    train_rows = np.arange(len(pairs))
    groups = {}
    split_rows = {"train": train_rows}
    for split, arts_ in (("dev", dev_a), ("test", test_a)):
        groups[split] = []
        start = len(pairs)
        for q in arts_:
            rows = [add(q, q)] + [add(q, n) for n in negatives_for(q, arts_, candidates - 1)]
            groups[split].append(np.asarray(rows))
        split_rows[split] = np.arange(start, len(pairs))
    ds = Dataset("bbc-headline-triples", "pair", pairs, np.asarray(labels), ["different", "match"],
                 meta={"seed": seed, "negatives": negatives, "candidates": candidates})
    return PairData(ds, split_rows, np.asarray(triples), groups)


class PairScorer(nn.Module):
    """Cross-encoder: BERT token states -> [CLS; masked mean; masked max] -> Linear -> tanh -> Linear -> one score."""

    def __init__(self, bert, head_hidden: int | None = None):
        super().__init__()
        self.bert = bert
        h = bert.config.hidden_size
        self.proj = nn.Linear(3 * h, head_hidden or h)
        self.out = nn.Linear(head_hidden or h, 1)

    def forward(self, input_ids, attention_mask, token_type_ids=None) -> torch.Tensor:
        states = self.bert(input_ids=input_ids, attention_mask=attention_mask,
                           token_type_ids=token_type_ids).last_hidden_state  # (batch, seq, h)
        m = attention_mask.unsqueeze(-1).to(states.dtype)
        mean = (states * m).sum(1) / m.sum(1).clamp_min(1)
        mx = states.masked_fill(m == 0, torch.finfo(states.dtype).min).max(1).values
        return self.out(torch.tanh(self.proj(torch.cat([states[:, 0], mean, mx], -1)))).squeeze(-1)


def scorer_from_teacher(teacher, shape) -> PairScorer:
    from nas.students.bert_slice import extract_subnet

    return PairScorer(extract_subnet(teacher, shape).bert)


def teacher_scores(logits: torch.Tensor) -> torch.Tensor:
    """A pair classifier's relevance score: logit(match) - logit(different)."""
    return logits[:, 1] - logits[:, 0]


def train_pair_student(model: PairScorer, tensors: dict, triples: np.ndarray, t_scores: torch.Tensor,
                       aux_match: torch.Tensor | None, settings: DistillSettings, epochs: float, seed: int = 0) -> dict:
    """Triples (pos_row, neg_row) into `tensors`; loss = hinge_weight * hinge(s+, s-, margin) + alpha_soft * MSE(s, t)
    over both rows + relevance_weight * KL(aux || [1 - sigmoid(s), sigmoid(s)])."""
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    opt = torch.optim.AdamW(model.parameters(), lr=settings.lr, weight_decay=settings.weight_decay)
    bs = min(settings.batch_size, len(triples))
    steps = max(1, int(np.ceil(epochs * len(triples) / bs)))
    sched = linear_schedule(opt, steps, settings.warmup_ratio)
    model.train()
    t0 = time.perf_counter()
    last = float("nan")
    order = rng.permutation(len(triples))
    pos_i = 0
    for step in range(steps):
        if pos_i + bs > len(order):
            order, pos_i = rng.permutation(len(triples)), 0
        batch = triples[order[pos_i:pos_i + bs]]
        pos_i += bs
        rows = torch.as_tensor(np.concatenate([batch[:, 0], batch[:, 1]]))
        s = model(**trim_padding({k: v[rows] for k, v in tensors.items()}))
        sp, sn = s[:bs], s[bs:]
        loss = settings.hinge_weight * hinge(sp, sn, settings.hinge_margin)
        if settings.alpha_soft > 0:
            loss = loss + settings.alpha_soft * F.mse_loss(s, t_scores[rows])
        if settings.relevance_weight > 0 and aux_match is not None:
            two = torch.stack([torch.zeros_like(s), s], -1)  # softmax([0, s]) = [1 - sigmoid(s), sigmoid(s)]
            p = aux_match[rows]
            loss = loss + settings.relevance_weight * relevance_kl(two, torch.stack([1 - p, p], -1))
        last = optimizer_step(model, opt, sched, loss, step)
    model.eval()
    return {"steps": steps, "final_loss": last, "train_s": time.perf_counter() - t0}


@torch.inference_mode()
def score_rows(model, tensors: dict, rows: np.ndarray, batch_size: int = 64) -> torch.Tensor:
    from nas.distill.evaluate import length_order

    model.eval()
    sub = {k: v[torch.as_tensor(rows)] for k, v in tensors.items()}
    order = length_order(sub)
    out = []
    for i in range(0, len(rows), batch_size):
        idx = order[i:i + batch_size]
        out.append(model(**trim_padding({k: v[idx] for k, v in sub.items()})).float())
    return torch.cat(out)[torch.argsort(order)]


def rank_metrics(scores: np.ndarray, groups: list[np.ndarray], row_index: dict[int, int]) -> dict:
    """AUC over every (positive, negative) pair of the same query and over all pairs, MRR of the positive per query.
    `scores[row_index[row]]` is a row's score; each group's first row is its positive."""
    from sklearn.metrics import roc_auc_score

    rr, y, s = [], [], []
    for g in groups:
        sc = np.asarray([scores[row_index[int(r)]] for r in g])
        rank = 1 + int((sc[1:] > sc[0]).sum()) + 0.5 * int((sc[1:] == sc[0]).sum())
        rr.append(1.0 / rank)
        y += [1] + [0] * (len(g) - 1)
        s += sc.tolist()
    return {"auc": float(roc_auc_score(y, s)), "mrr": float(np.mean(rr)), "queries": len(groups)}
