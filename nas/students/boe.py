"""`boe`: a bag of embeddings with an MLP (fastText-like; the fastest family). Axes: `emb` (embedding width, projected
from the source's token table), `ngrams` (1: tokens; 2: also hashed token bigrams, in BUCKETS embeddings of the same
width), `mlp` (classifier hidden units; 0: linear). The masked mean of the embeddings feeds the classifier."""

from __future__ import annotations

import torch

from nas.students.arch import Arch
from nas.students.small import SmallConfig, SmallStudent, count_parameters, head, masked_mean, new_student, size_mb

__all__ = ["MODEL", "extract_subnet", "count_parameters", "size_mb"]

BUCKETS = 1 << 15  # hashed bigram embeddings
PRIME = 1_000_003


class BagOfEmbeddings(SmallStudent):
    def __init__(self, config: SmallConfig):
        super().__init__(config)
        a = self.arch
        self.emb = torch.nn.Embedding(config.vocab_size, a["emb"], padding_idx=config.pad_token_id)
        self.bigrams = torch.nn.Embedding(BUCKETS, a["emb"]) if a["ngrams"] >= 2 else None
        if self.bigrams is not None:
            torch.nn.init.normal_(self.bigrams.weight, std=0.02)
        self.drop = torch.nn.Dropout(0.1)
        self.head = head(a["emb"], a["mlp"], config.num_labels)

    def logits(self, input_ids, mask):
        x = self.drop(self.emb(input_ids))
        pooled = masked_mean(x, mask)
        if self.bigrams is not None and input_ids.shape[1] > 1:
            ids = (input_ids[:, :-1] * PRIME + input_ids[:, 1:]) % BUCKETS
            both = mask[:, :-1] * mask[:, 1:]
            pooled = pooled + masked_mean(self.drop(self.bigrams(ids)), both)
        return self.head(pooled)


MODEL = BagOfEmbeddings


def extract_subnet(source, arch: Arch) -> BagOfEmbeddings:
    """A bag of embeddings reading `source`'s tokenizer, its token embeddings projected from `source`'s table."""
    return new_student(MODEL, source, arch)
