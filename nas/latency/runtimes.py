"""Runtimes a model can be measured in. Each turns a sequence-classification model into a zero-argument callable that runs
one forward pass on fixed inputs; each is a separate measurement row (runtime and dtype are part of its settings).

- eager: PyTorch, fp32 on the CPU; fp16/bf16 weights on CUDA.
- int8: dynamic int8 quantisation of every Linear layer (`torch.ao.quantization.quantize_dynamic`), CPU only: the seeds'
  low-precision inference.
- onnx: `torch.onnx.export` (dynamo exporter) to a temporary file, run by ONNX Runtime's CPU execution provider with the
  same thread count.
"""

from __future__ import annotations

import copy

import contextlib
import io
import logging
import pathlib
import tempfile
import warnings
from typing import Callable

import torch

RUNTIMES = ("eager", "int8", "onnx")


class LogitsOnly(torch.nn.Module):
    """The model's logits as one tensor output (what the exporters and quantised graphs want)."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, input_ids, attention_mask, token_type_ids=None):
        extra = {} if token_type_ids is None else {"token_type_ids": token_type_ids}
        return self.model(input_ids=input_ids, attention_mask=attention_mask, **extra).logits


def input_names(model) -> list[str]:
    """The inputs `model`'s family reads: token types only where it has them (not RoBERTa-style single-type models
    fed without them, MPNet, DistilBERT)."""
    from nas.teachers import FAMILIES, family

    if model.config.model_type not in FAMILIES:  # a student of another family (nas/students): no token types needed
        return ["input_ids", "attention_mask"]
    fam = family(model.config.model_type)
    return ["input_ids", "attention_mask"] + (["token_type_ids"] if fam.token_type is not None else [])


def quantize_int8(model: torch.nn.Module) -> torch.nn.Module:
    """Dynamic int8 quantisation of the Linear layers (weights int8, activations quantised per batch)."""
    from torch.ao.quantization import quantize_dynamic

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return quantize_dynamic(model.eval(), {torch.nn.Linear}, dtype=torch.qint8)


def export_onnx(model: torch.nn.Module, inputs: dict[str, torch.Tensor], path: str | pathlib.Path) -> pathlib.Path:
    """Export the logits of `model` to ONNX at `path` with dynamic batch and sequence axes."""
    path = pathlib.Path(path)
    wrapped = LogitsOnly(model.eval())
    names = [n for n in input_names(model) if n in inputs]
    args = tuple(inputs[n] for n in names)
    batch, seq = torch.export.Dim("batch", min=1, max=4096), torch.export.Dim("seq", min=2, max=4096)
    shapes = {name: {0: batch, 1: seq} for name in names}
    quiet = [logging.getLogger(n) for n in ("torch.onnx", "torch.export", "onnxscript")]
    levels = [lg.level for lg in quiet]
    for lg in quiet:
        lg.setLevel(logging.ERROR)
    # the exporter traces on the CPU copy it is given; its own tensors are made there too
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()), torch.device("cpu"):
        warnings.simplefilter("ignore")
        torch.onnx.export(wrapped, args, str(path), input_names=names,
                          output_names=["logits"], dynamic_shapes=shapes, dynamo=True, external_data=False,
                          verbose=False)
    for lg, level in zip(quiet, levels):
        lg.setLevel(level)
    return path


def onnx_session(path: str | pathlib.Path, threads: int):
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.log_severity_level = 3
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


def make_runner(model: torch.nn.Module, runtime: str, dtype: str, device: str, inputs: dict[str, torch.Tensor],
                threads: int) -> tuple[Callable[[], object], Callable[[], None]]:
    """(run_once, cleanup) for `model` in `runtime`. Raises ValueError for a combination that does not exist."""
    if runtime not in RUNTIMES:
        raise ValueError(f"runtime must be one of {', '.join(RUNTIMES)}, not {runtime!r}")
    if runtime != "eager" and device != "cpu":
        raise ValueError(f"runtime {runtime} is measured on the CPU only")
    if dtype == "int8" and runtime != "int8" or runtime == "int8" and dtype not in ("int8", "fp32"):
        raise ValueError("int8 is the int8 runtime (dynamic quantisation of the Linear layers)")
    model = model.eval()
    if runtime == "eager":
        if device != "cpu":  # a copy: moving or casting the caller's model would change what it saves or measures next
            model = copy.deepcopy(model)
        if device == "cuda" and dtype in ("fp16", "bf16"):
            model = model.to(torch.float16 if dtype == "fp16" else torch.bfloat16)
        model = model.to(device)
        moved = {k: v.to(device) for k, v in inputs.items()}

        def run():
            with torch.inference_mode():
                return model(**moved)

        return run, lambda: None
    if runtime == "int8":
        q = quantize_int8(model)

        def run():
            with torch.inference_mode():
                return q(**inputs)

        return run, lambda: None
    tmp = tempfile.TemporaryDirectory(prefix="nas-onnx-")
    path = export_onnx(model, inputs, pathlib.Path(tmp.name) / "model.onnx")
    sess = onnx_session(path, threads)
    wanted = {i.name for i in sess.get_inputs()}
    feed = {k: v.numpy() for k, v in inputs.items() if k in wanted}
    return (lambda: sess.run(["logits"], feed)), tmp.cleanup


def runtime_logits(model: torch.nn.Module, runtime: str, inputs: dict[str, torch.Tensor], threads: int = 1) -> torch.Tensor:
    """Logits of `model` run in `runtime` on `inputs` (to check a runtime against eager fp32)."""
    run, cleanup = make_runner(model, runtime, "int8" if runtime == "int8" else "fp32", "cpu", inputs, threads)
    try:
        out = run()
    finally:
        cleanup()
    if isinstance(out, list):
        return torch.as_tensor(out[0], device="cpu")
    return out.logits.float()


__all__ = ["RUNTIMES", "quantize_int8", "export_onnx", "onnx_session", "make_runner", "runtime_logits"]
