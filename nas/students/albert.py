"""`albert`: a factorised-embedding encoder whose one transformer layer is applied `layers` times (ALBERT, as Tencent's
1-layer ALBERT student). Axes: `emb` (the factorised embedding width), `hidden`, `heads`, `ffn` (of the shared layer),
`layers` (how many times it is applied). A stock `AlbertForSequenceClassification`, so its export is a Hugging Face
model transformers loads.

Initialised from what students slice: the shared layer is the source's first layer sliced to hidden / heads / ffn (the
layer trained on embeddings as input, as a 1-layer BERT slice keeps); the token and position tables are the source's
(sliced to `hidden`), projected onto their `emb` leading principal directions, and the embedding-to-hidden mapping is
that projection's transpose plus the mean it removed, so mapping back restores the source's table where the
directions span it."""

from __future__ import annotations

import torch

from nas.compute import on_host
from nas.students.arch import Arch
from nas.students.shape import Shape
from nas.students.small import count_parameters, size_mb

__all__ = ["extract_subnet", "count_parameters", "size_mb", "config_of"]

PARTS = {"q": "attention.query", "k": "attention.key", "v": "attention.value", "o": "attention.dense",
         "attn_ln": "attention.LayerNorm", "ffn_in": "ffn", "ffn_out": "ffn_output", "out_ln": "full_layer_layer_norm"}


def config_of(source, arch: Arch, max_positions: int):
    import transformers as tr

    scfg = source.config
    return tr.AlbertConfig(vocab_size=scfg.vocab_size, embedding_size=arch["emb"], hidden_size=arch["hidden"],
                           num_hidden_layers=arch["layers"], num_attention_heads=arch["heads"],
                           intermediate_size=arch["ffn"], num_labels=scfg.num_labels, max_position_embeddings=max_positions,
                           hidden_act="gelu", classifier_dropout_prob=0.1, pad_token_id=getattr(scfg, "pad_token_id", 0) or 0,
                           id2label=scfg.id2label, label2id=scfg.label2id, type_vocab_size=2,
                           attn_implementation="eager", architectures=["AlbertForSequenceClassification"])


def _projection(table: torch.Tensor, dim: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(P (width, dim) principal directions, mean (width,)) of a (rows, width) table."""
    mean = table.mean(0)
    k = min(dim, table.shape[1])
    _, _, v = torch.pca_lowrank(table - mean, q=k, center=False, niter=4)
    p = v[:, :k]
    if dim > k:
        p = torch.cat([p, torch.zeros(table.shape[1], dim - k)], 1)
    return p, mean


def extract_subnet(source, arch: Arch):
    """An ALBERT student of `arch` reading `source`'s tokenizer, initialised from `source` (see the module's text)."""
    import transformers as tr

    from nas.students import bert_slice
    from nas.teachers import family
    from nas.teachers.adapter import attr

    fam = family(source.config.model_type)
    h, a, f = arch["hidden"], arch["heads"], arch["ffn"]
    one = bert_slice.extract_subnet(source, Shape(1, h, a, f))  # the source's first layer, sliced
    base = attr(one, fam.base)
    layer = attr(base, fam.layers)[0]
    words = attr(base, fam.word).weight.detach()
    pos = attr(base, fam.position).weight.detach()
    if fam.positions_from_padding:  # RoBERTa / MPNet number positions from the padding index + 1
        pad = fam.padding_idx if fam.padding_idx is not None else int(source.config.pad_token_id or 0)
        pos = pos[pad + 1:]
    with on_host():
        model = tr.AlbertForSequenceClassification(config_of(source, arch, pos.shape[0])).eval()
    p, mean = _projection(words, arch["emb"])
    emb, shared = model.albert.embeddings, model.albert.encoder.albert_layer_groups[0].albert_layers[0]
    with torch.no_grad():
        emb.word_embeddings.weight.copy_((words - mean) @ p)
        emb.position_embeddings.weight.copy_(pos @ p)
        if fam.token_type is not None:
            emb.token_type_embeddings.weight[: attr(base, fam.token_type).weight.shape[0]].copy_(
                attr(base, fam.token_type).weight.detach() @ p)
        else:
            emb.token_type_embeddings.weight.zero_()
        model.albert.encoder.embedding_hidden_mapping_in.weight.copy_(p)
        model.albert.encoder.embedding_hidden_mapping_in.bias.copy_(mean)
        for part, path in PARTS.items():
            src, dst = attr(layer, fam.layer[part]), attr(shared, path)
            dst.weight.copy_(src.weight)
            dst.bias.copy_(src.bias)
    return model.eval()
