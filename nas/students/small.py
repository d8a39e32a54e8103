"""What the non-transformer student families share: a config that saves as config.json, an output with `.logits`
(what the distillation loop, the evaluators and the latency runners read), token embeddings initialised from what
students slice, and one save/load format (config.json + model.safetensors, so an export directory looks like a
Hugging Face one; `nas.teachers.load_pretrained` reads both).

Every family reads the token ids of the source's own tokenizer (the job's token cache), so a student of any family is
scored, timed and exported through the same paths as a BERT slice."""

from __future__ import annotations

import json
import pathlib

import torch
from transformers.modeling_outputs import SequenceClassifierOutput

from nas.compute import on_host
from nas.students.arch import Arch

MODEL_TYPE_PREFIX = "nas-"  # config.json's model_type of a saved student of these families: nas-textcnn, ...


class SmallConfig:
    """The few config fields the service reads (`model_type`, `vocab_size`, `num_labels`, labels) and the arch."""

    def __init__(self, arch: dict, vocab_size: int, num_labels: int, pad_token_id: int = 0, id2label=None,
                 label2id=None, architectures=None, **_ignored):
        self.arch, self.vocab_size, self.num_labels, self.pad_token_id = dict(arch), int(vocab_size), int(num_labels), int(pad_token_id)
        self.model_type = MODEL_TYPE_PREFIX + self.arch["family"]
        self.id2label = {int(k): v for k, v in (id2label or {i: f"LABEL_{i}" for i in range(self.num_labels)}).items()}
        self.label2id = label2id or {v: k for k, v in self.id2label.items()}
        self.architectures = architectures
        self._attn_implementation = "eager"

    def to_dict(self) -> dict:
        return {"model_type": self.model_type, "arch": self.arch, "vocab_size": self.vocab_size,
                "num_labels": self.num_labels, "pad_token_id": self.pad_token_id,
                "id2label": {str(k): v for k, v in self.id2label.items()}, "label2id": self.label2id,
                "architectures": self.architectures}


class SmallStudent(torch.nn.Module):
    """Base of the families' modules: `forward(input_ids, attention_mask, ...)` -> SequenceClassifierOutput; extra
    keyword arguments (token types, output_hidden_states, ...) are accepted and ignored: these families have no
    hidden states or attention maps to distil."""

    def __init__(self, config: SmallConfig):
        super().__init__()
        self.config = config

    @property
    def arch(self) -> Arch:
        return Arch.from_dict(self.config.arch)

    def logits(self, input_ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def forward(self, input_ids, attention_mask=None, token_type_ids=None, **_ignored) -> SequenceClassifierOutput:
        mask = torch.ones_like(input_ids) if attention_mask is None else attention_mask
        return SequenceClassifierOutput(logits=self.logits(input_ids, mask))

    def get_input_embeddings(self) -> torch.nn.Embedding:
        return self.emb

    def set_attn_implementation(self, _name: str) -> None:  # the distillation loop's call where attention is distilled
        pass

    def save_pretrained(self, out) -> None:
        from safetensors.torch import save_file

        out = pathlib.Path(out)
        out.mkdir(parents=True, exist_ok=True)
        (out / "config.json").write_text(json.dumps(self.config.to_dict(), indent=1))
        save_file({k: v.detach().contiguous() for k, v in self.state_dict().items()}, str(out / "model.safetensors"))


def is_small(path) -> bool:
    """Whether the model directory `path` holds a student of these families (config.json's model_type nas-*)."""
    cfg = pathlib.Path(path) / "config.json"
    return cfg.is_file() and str(json.loads(cfg.read_text()).get("model_type", "")).startswith(MODEL_TYPE_PREFIX)


def load_small(path) -> SmallStudent:
    """A saved student of these families, in eval mode on the CPU."""
    import importlib

    from safetensors.torch import load_file

    path = pathlib.Path(path)
    config = SmallConfig(**json.loads((path / "config.json").read_text()))
    with on_host():  # each family's module is named after it (nas/students/textcnn.py, ...)
        model = importlib.import_module(f"nas.students.{config.arch['family']}").MODEL(config)
    model.load_state_dict(load_file(str(path / "model.safetensors"), device="cpu"))
    return model.eval()


def source_embeddings(source) -> torch.Tensor:
    """The token embedding table of what students slice (vocab, dim), a detached CPU copy."""
    return source.get_input_embeddings().weight.detach().to("cpu", torch.float32).clone()


def projected_embeddings(table: torch.Tensor, dim: int, seed: int = 0) -> torch.Tensor:
    """The token table projected onto its `dim` leading principal directions (centred; scaled to the table's own
    per-entry spread); extra columns beyond the table's width are small random values."""
    g = torch.Generator(device="cpu").manual_seed(seed)
    mean = table.mean(0, keepdim=True)
    centred = table - mean
    k = min(dim, table.shape[1])
    _, _, v = torch.pca_lowrank(centred, q=k, center=False, niter=4)
    out = centred @ v[:, :k]
    out = out * (table.std() / out.std().clamp_min(1e-8))
    if dim > k:
        out = torch.cat([out, torch.randn(table.shape[0], dim - k, generator=g, device="cpu") * table.std()], 1)
    return out.contiguous()


def new_student(model_class, source, arch: Arch, num_labels: int | None = None) -> SmallStudent:
    """A fresh student of `arch` reading `source`'s tokenizer, its token embeddings projected from `source`'s."""
    scfg = source.config
    config = SmallConfig(arch.as_dict(), scfg.vocab_size, num_labels or scfg.num_labels,
                         getattr(scfg, "pad_token_id", 0) or 0, id2label=getattr(scfg, "id2label", None),
                         label2id=getattr(scfg, "label2id", None))
    torch.manual_seed(0)
    with on_host():
        model = model_class(config)
    with torch.no_grad():
        model.emb.weight.copy_(projected_embeddings(source_embeddings(source), arch["emb"]))
    return model.eval()


def masked_mean(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean over the sequence of x (b, s, d) where mask (b, s) is 1."""
    m = mask.unsqueeze(-1).to(x.dtype)
    return (x * m).sum(1) / m.sum(1).clamp_min(1.0)


def masked_max(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Max over the sequence of x (b, s, d) where mask (b, s) is 1."""
    return x.masked_fill(mask.unsqueeze(-1) == 0, torch.finfo(x.dtype).min).amax(1)


def head(n_in: int, mlp: int, num_labels: int, dropout: float = 0.2) -> torch.nn.Sequential:
    """The classifier on a pooled vector: dropout, then a linear layer, or an MLP with `mlp` hidden units."""
    if mlp <= 0:
        return torch.nn.Sequential(torch.nn.Dropout(dropout), torch.nn.Linear(n_in, num_labels))
    return torch.nn.Sequential(torch.nn.Dropout(dropout), torch.nn.Linear(n_in, mlp), torch.nn.GELU(),
                               torch.nn.Dropout(dropout), torch.nn.Linear(mlp, num_labels))


def count_parameters(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def size_mb(model: torch.nn.Module) -> float:
    n = sum(t.numel() * t.element_size() for t in model.state_dict().values())
    return round(n / 1e6, 3)
