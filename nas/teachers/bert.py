"""BERT itself: its pooler (dense + tanh on [CLS]) is the head's dense, positions count from 0, token types."""

from __future__ import annotations

from nas.teachers.adapter import Family

FAMILY = Family("bert", "BERT (bert)", "BertForSequenceClassification", "bert",
                head_dense="bert.pooler.dense", head_out="classifier", head_dropout_first=False)
