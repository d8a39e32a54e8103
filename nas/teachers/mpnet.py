"""MPNet: its layers name their parts differently (attention.attn.q/k/v/o, attention.LayerNorm); no token types;
positions count from the padding index + 1; one relative-position bias (buckets x heads) is shared by every layer and
sliced by head; the head is dense + tanh + out_proj on <s>."""

from __future__ import annotations

from nas.teachers.adapter import Family

FAMILY = Family("mpnet", "MPNet (mpnet)", "MPNetForSequenceClassification", "mpnet",
                layer={"q": "attention.attn.q", "k": "attention.attn.k", "v": "attention.attn.v",
                       "o": "attention.attn.o", "attn_ln": "attention.LayerNorm", "ffn_in": "intermediate.dense",
                       "ffn_out": "output.dense", "out_ln": "output.LayerNorm"},
                token_type=None, rel_bias="encoder.relative_attention_bias", positions_from_padding=True, padding_idx=1)
