"""DistilBERT, by renaming: transformer.layer.N.{attention.q_lin/k_lin/v_lin/out_lin, sa_layer_norm, ffn.lin1/lin2,
output_layer_norm}; no token types, no pooler; the head is pre_classifier + ReLU + classifier on [CLS]; its config calls
the axes n_layers, dim, n_heads, hidden_dim."""

from __future__ import annotations

from nas.teachers.adapter import Family

FAMILY = Family("distilbert", "DistilBERT (distilbert)", "DistilBertForSequenceClassification", "distilbert",
                layers="transformer.layer",
                layer={"q": "attention.q_lin", "k": "attention.k_lin", "v": "attention.v_lin",
                       "o": "attention.out_lin", "attn_ln": "sa_layer_norm", "ffn_in": "ffn.lin1",
                       "ffn_out": "ffn.lin2", "out_ln": "output_layer_norm"},
                token_type=None, head_dense="pre_classifier", head_out="classifier", head_act="relu",
                head_dropout_first=False, attn_out_dropout=False,
                keys={"layers": "n_layers", "hidden": "dim", "heads": "n_heads", "ffn": "hidden_dim"},
                act_key="activation", dropout_keys=("dropout", "attention_dropout", "seq_classif_dropout"))
