"""RoBERTa and XLM-R: BERT's layers; positions count from the padding index + 1 (pads get the padding index); a single
token type; the head is dense + tanh + out_proj on <s>, with dropout before each."""

from __future__ import annotations

from nas.teachers.adapter import Family

ROBERTA = Family("roberta", "RoBERTa (roberta)", "RobertaForSequenceClassification", "roberta",
                 positions_from_padding=True)
XLM_ROBERTA = Family("xlm-roberta", "XLM-R (xlm-roberta)", "XLMRobertaForSequenceClassification", "roberta",
                     positions_from_padding=True)
