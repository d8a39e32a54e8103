"""ELECTRA (the discriminator): BERT's layers; where embedding_size differs from the hidden size the embeddings keep
their width and `embeddings_project` maps them to the hidden size (its output rows are sliced); the head is dense + GELU
+ out_proj on [CLS]."""

from __future__ import annotations

from nas.teachers.adapter import Family

FAMILY = Family("electra", "ELECTRA (electra)", "ElectraForSequenceClassification", "electra",
                emb_project="embeddings_project", head_act="gelu")
