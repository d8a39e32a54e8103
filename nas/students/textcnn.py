"""`textcnn`: Kim's CNN over token embeddings. Axes: `emb` (embedding width, projected from the source's token table),
`channels` (filters per width), `kernels` (how many widths: 2, 3, ... up to kernels + 1 tokens), `mlp` (hidden units of
the classifier; 0: linear). Max-pooling over time of each width's ReLU feature maps, padding masked out."""

from __future__ import annotations

import torch

from nas.students.arch import Arch
from nas.students.small import SmallConfig, SmallStudent, count_parameters, head, masked_max, new_student, size_mb

__all__ = ["MODEL", "extract_subnet", "count_parameters", "size_mb"]


def widths(kernels: int) -> list[int]:
    return list(range(2, kernels + 2))


class TextCNN(SmallStudent):
    def __init__(self, config: SmallConfig):
        super().__init__(config)
        a = self.arch
        self.emb = torch.nn.Embedding(config.vocab_size, a["emb"], padding_idx=config.pad_token_id)
        self.drop = torch.nn.Dropout(0.1)
        self.convs = torch.nn.ModuleList(torch.nn.Conv1d(a["emb"], a["channels"], k, padding=k // 2)
                                         for k in widths(a["kernels"]))
        self.head = head(a["channels"] * a["kernels"], a["mlp"], config.num_labels)

    def logits(self, input_ids, mask):
        x = self.drop(self.emb(input_ids)) * mask.unsqueeze(-1).to(self.emb.weight.dtype)
        x = x.transpose(1, 2)  # (b, emb, s)
        seq = input_ids.shape[1]
        pooled = [masked_max(torch.relu(conv(x))[:, :, :seq].transpose(1, 2), mask) for conv in self.convs]
        return self.head(torch.cat(pooled, -1))


MODEL = TextCNN


def extract_subnet(source, arch: Arch) -> TextCNN:
    """A TextCNN reading `source`'s tokenizer, its embeddings projected from `source`'s token table."""
    return new_student(MODEL, source, arch)
