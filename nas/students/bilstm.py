"""`bilstm`: a bidirectional LSTM over token embeddings (Tang et al.'s student). Axes: `emb` (embedding width,
projected from the source's token table), `hidden` (units per direction), `layers`, `mlp` (classifier hidden units;
0: linear). The backward direction reads each text from its own last real token (texts are right-padded), so padding
never enters a state; outputs are max- and mean-pooled over the real tokens."""

from __future__ import annotations

import torch

from nas.students.arch import Arch
from nas.students.small import (SmallConfig, SmallStudent, count_parameters, head, masked_max, masked_mean,
                                new_student, size_mb)

__all__ = ["MODEL", "extract_subnet", "count_parameters", "size_mb"]


def reverse_real(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """x (b, s, d) with each row's real tokens (mask 1, a prefix) in reverse order; padding positions keep padding."""
    seq = x.shape[1]
    lengths = mask.sum(1, keepdim=True)  # (b, 1)
    pos = torch.arange(seq, device=x.device).unsqueeze(0)
    idx = torch.where(pos < lengths, lengths - 1 - pos, pos)
    return x.gather(1, idx.unsqueeze(-1).expand(-1, -1, x.shape[2]))


class BiLSTM(SmallStudent):
    def __init__(self, config: SmallConfig):
        super().__init__(config)
        a = self.arch
        self.emb = torch.nn.Embedding(config.vocab_size, a["emb"], padding_idx=config.pad_token_id)
        self.drop = torch.nn.Dropout(0.1)
        dims = [a["emb"]] + [2 * a["hidden"]] * (a["layers"] - 1)
        self.fwd = torch.nn.ModuleList(torch.nn.LSTM(d, a["hidden"], batch_first=True) for d in dims)
        self.bwd = torch.nn.ModuleList(torch.nn.LSTM(d, a["hidden"], batch_first=True) for d in dims)
        self.head = head(4 * a["hidden"], a["mlp"], config.num_labels)

    def logits(self, input_ids, mask):
        x = self.drop(self.emb(input_ids))
        for fwd, bwd in zip(self.fwd, self.bwd):
            f, _ = fwd(x)
            b, _ = bwd(reverse_real(x, mask))
            x = torch.cat([f, reverse_real(b, mask)], -1)
        return self.head(torch.cat([masked_max(x, mask), masked_mean(x, mask)], -1))


MODEL = BiLSTM


def extract_subnet(source, arch: Arch) -> BiLSTM:
    """A BiLSTM reading `source`'s tokenizer, its embeddings projected from `source`'s token table."""
    return new_student(MODEL, source, arch)
