"""A teacher family whose layers have BERT's structure, as data: where its embeddings, layers, heads, FFN and classifier
live, what its config calls the four shape axes, how its positions are numbered, and which head it classifies with.

The slicing code (nas/students/bert_slice.py, rewire.py) reads models only through a `Family`, so a new family of this
structure is one `Family(...)` in one small module. Paths are dotted attribute paths from the sequence-classification
model (`roberta.encoder.layer`), or, for a layer's parts, from one layer (`attention.self.query`).
"""

from __future__ import annotations

from dataclasses import dataclass, field

BERT_LAYER = {"q": "attention.self.query", "k": "attention.self.key", "v": "attention.self.value",
              "o": "attention.output.dense", "attn_ln": "attention.output.LayerNorm", "ffn_in": "intermediate.dense",
              "ffn_out": "output.dense", "out_ln": "output.LayerNorm"}
BERT_KEYS = {"layers": "num_hidden_layers", "hidden": "hidden_size", "heads": "num_attention_heads",
             "ffn": "intermediate_size"}


@dataclass(frozen=True)
class Family:
    model_type: str
    description: str  # what a refusal lists as supported
    class_name: str  # the transformers class with a sequence-classification head
    base: str  # the encoder's attribute on that class
    layers: str = "encoder.layer"  # from the base
    layer: dict = field(default_factory=lambda: dict(BERT_LAYER))  # q k v o attn_ln ffn_in ffn_out out_ln
    word: str = "embeddings.word_embeddings"  # from the base, like the next three
    position: str = "embeddings.position_embeddings"
    token_type: str | None = "embeddings.token_type_embeddings"
    emb_ln: str = "embeddings.LayerNorm"
    emb_project: str | None = None  # ELECTRA: embedding_size -> hidden, where they differ
    rel_bias: str | None = None  # MPNet: one relative-position bias (buckets, heads) shared by every layer
    head_dense: str = "classifier.dense"  # from the model; BERT's is its pooler
    head_out: str = "classifier.out_proj"
    head_act: str = "tanh"  # tanh | gelu | relu
    head_dropout_first: bool = True  # RoBERTa-style heads drop out before their dense too
    attn_out_dropout: bool = True  # dropout on the attention output before its residual (DistilBERT has none)
    positions_from_padding: bool = False  # RoBERTa / MPNet: positions count from padding_idx + 1, pads get padding_idx
    padding_idx: int | None = None  # a fixed one (MPNet's is 1 whatever its config says), else pad_token_id
    keys: dict = field(default_factory=lambda: dict(BERT_KEYS))  # shape axis -> config attribute
    act_key: str = "hidden_act"
    dropout_keys: tuple = ("hidden_dropout_prob", "attention_probs_dropout_prob", "classifier_dropout")

    def model_class(self):
        import transformers

        return getattr(transformers, self.class_name)

    def config_class(self):
        return self.model_class().config_class

    def shape_limits(self, config: dict) -> dict[str, int]:
        """The largest student shape this teacher's weights can be sliced into, by axis (config.json as a dict)."""
        return {axis: int(config[key]) for axis, key in self.keys.items()}

    def hidden_refused(self, config: dict, hidden: int) -> str | None:
        """Why a student of this teacher (config.json as a dict) cannot have this hidden size, or None. ELECTRA with an
        embedding projection: a student whose hidden size equals embedding_size would have no projection to slice."""
        emb = config.get("embedding_size")
        if self.emb_project is not None and emb and emb != config[self.keys["hidden"]] and hidden == emb:
            return (f"{hidden} equals the teacher's embedding_size: an ELECTRA student of that width has no embedding "
                    f"projection to slice (use a width other than {emb})")
        return None

    def usable_positions(self, config: dict) -> int:
        """The longest sequence the position table holds (config.json as a dict): where positions count from the
        padding index + 1 (RoBERTa, MPNet), that many rows fewer (514 -> 512)."""
        n = int(config.get("max_position_embeddings", 512))
        if self.positions_from_padding:
            pad = self.padding_idx if self.padding_idx is not None else int(config.get("pad_token_id") or 0)
            n -= pad + 1
        return n

    def shape_of(self, cfg) -> tuple[int, int, int, int]:
        """(layers, hidden, heads, ffn) of a transformers config of this family."""
        return tuple(int(getattr(cfg, self.keys[a])) for a in ("layers", "hidden", "heads", "ffn"))

    def shaped_config(self, base, layers: int, hidden: int, heads: int, ffn: int):
        """A copy of config `base` with the four axes set (eager attention), for a student sliced from it."""
        why = self.hidden_refused(base.to_dict(), hidden)
        if why:
            raise ValueError(why)
        cfg = self.config_class().from_dict(base.to_dict())
        for axis, value in zip(("layers", "hidden", "heads", "ffn"), (layers, hidden, heads, ffn)):
            setattr(cfg, self.keys[axis], value)
        if self.emb_project is not None and base.embedding_size == self.shape_of(base)[1]:
            cfg.embedding_size = hidden  # no projection in the teacher: the embeddings are sliced with the hidden size
        cfg._attn_implementation = "eager"
        cfg.architectures = [self.class_name]
        return cfg

    def dropouts(self, cfg) -> tuple[float, float, float]:
        """(hidden, attention, classifier) dropout probabilities; a missing classifier one is the hidden one."""
        hidden, attn, cls = (getattr(cfg, k, None) for k in self.dropout_keys)
        return float(hidden), float(attn), float(hidden if cls is None else cls)

    def activation(self, cfg) -> str:
        return getattr(cfg, self.act_key)

    def layer_prefix(self) -> str:
        """The state-dict prefix of layer i is f"{layer_prefix()}{i}."."""
        return f"{self.base}.{self.layers}."


def attr(obj, path: str):
    """`obj.a.b.c` for path "a.b.c"."""
    for name in path.split("."):
        obj = getattr(obj, name)
    return obj
