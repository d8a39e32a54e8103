"""The formats an export carries, and one way to score raw text with any of them.

- `hf`: `save_pretrained` model + tokenizer in DIR/model (transformers loads it);
- `native`: the same place for a student of a non-transformer family (textcnn, bilstm, boe): config.json +
  model.safetensors that `nas.students.load_student` reads, tokenizer beside;
- `onnx`: DIR/onnx/model.onnx (fp32, dynamic batch and sequence axes) with the tokenizer beside it;
- `int8`: DIR/onnx/model.int8.onnx, the same graph dynamically quantised (int8 weights of every MatMul);
- `sklearn`: DIR/model.joblib (a TF-IDF reference).

`predictor(DIR, fmt)` returns a function from raw texts (or (query, doc) pairs) to class probabilities, tokenising
exactly as the job did (its max_seq_len, from DIR/config.yaml); `nas predict` and `nas check-export` use it.
"""

from __future__ import annotations

import pathlib
from typing import Callable

import numpy as np
import yaml

FORMATS = ("hf", "onnx", "int8")  # what `nas export` writes for a distilled student by default


def size_mb(path: pathlib.Path) -> float:
    """Bytes on disk of a file or directory's files, in MB (10^6)."""
    files = [path] if path.is_file() else [p for p in path.rglob("*") if p.is_file()]
    return round(sum(p.stat().st_size for p in files) / 1e6, 3)


def write_onnx(out: pathlib.Path, int8: bool = True) -> dict[str, float]:
    """DIR/onnx/model.onnx (+ model.int8.onnx) and the tokenizer, from DIR/model. Returns {format: size in MB}."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    from nas.data import load_tokenizer
    from nas.latency.measure import dummy_inputs
    from nas.latency.runtimes import export_onnx, input_names
    from nas.students import load_student

    model = load_student(out / "model")
    onnx_dir = out / "onnx"
    onnx_dir.mkdir()
    inputs = dummy_inputs(2, 16, model.config.vocab_size)
    export_onnx(model, {k: inputs[k] for k in input_names(model)}, onnx_dir / "model.onnx")
    load_tokenizer(out / "model").save_pretrained(onnx_dir)
    sizes = {"onnx": size_mb(onnx_dir / "model.onnx")}
    if int8:
        import logging

        import onnx

        # the exporter's recorded intermediate shapes trip the quantiser's shape inference (ShapeInferenceError:
        # "inferred shape and existing shape differ"): it quantises a copy without them
        graph = onnx.load(str(onnx_dir / "model.onnx"))
        del graph.graph.value_info[:]
        bare = onnx_dir / "model.bare.onnx"
        onnx.save(graph, str(bare))
        level = logging.getLogger().level
        logging.getLogger().setLevel(logging.ERROR)  # "consider pre-processing": not needed for dynamic quantisation
        try:
            quantize_dynamic(str(bare), str(onnx_dir / "model.int8.onnx"), weight_type=QuantType.QInt8)
        finally:
            logging.getLogger().setLevel(level)
            bare.unlink()
        sizes["int8"] = size_mb(onnx_dir / "model.int8.onnx")
    return sizes


def formats_of(out: str | pathlib.Path) -> list[str]:
    """The formats export directory `out` holds."""
    out = pathlib.Path(out)
    from nas.students.small import is_small

    saved = (out / "model" / "config.json").is_file()
    small = saved and is_small(out / "model")
    have = {"hf": saved and not small, "native": small, "onnx": (out / "onnx" / "model.onnx").is_file(),
            "int8": (out / "onnx" / "model.int8.onnx").is_file(), "sklearn": (out / "model.joblib").is_file()}
    return [f for f, ok in have.items() if ok]


def predictor(out: str | pathlib.Path, fmt: str | None = None) -> Callable[[list], np.ndarray]:
    """Raw texts (or (query, doc) pairs for a pair task) -> class probabilities (n, classes), in format `fmt` (default
    the first the export holds). ValueError for a format the export does not hold."""
    out = pathlib.Path(out)
    have = formats_of(out)
    fmt = fmt or (have[0] if have else None)
    if fmt not in have:
        raise ValueError(f"{out} holds {', '.join(have) or 'no model'}; not {fmt}")
    card = yaml.safe_load((out / "config.yaml").read_text())
    if fmt == "sklearn":
        import joblib

        pipe = joblib.load(out / "model.joblib")["model"]
        return lambda texts: np.asarray(pipe.predict_proba(list(texts)))
    from nas.data import FastEncoder, load_tokenizer

    max_len = card["spec"]["budgets"]["max_seq_len"]
    pair = card["spec"]["task"] == "pair"
    if fmt in ("hf", "native"):
        import torch

        from nas.distill.evaluate import predict_logits
        from nas.students import load_student

        model = load_student(out / "model")
        enc = FastEncoder(load_tokenizer(out / "model"), max_len, pair)
        return lambda texts: torch.softmax(predict_logits(model, enc(texts)), -1).numpy()
    import os

    from nas.latency.runtimes import onnx_session

    enc = FastEncoder(load_tokenizer(out / "onnx"), max_len, pair)
    sess = onnx_session(out / "onnx" / ("model.onnx" if fmt == "onnx" else "model.int8.onnx"), os.cpu_count() or 1)
    wanted = {i.name for i in sess.get_inputs()}

    def run(texts) -> np.ndarray:
        feed = enc.numpy(texts)
        logits = np.concatenate([sess.run(["logits"], {k: v[i:i + 64] for k, v in feed.items() if k in wanted})[0]
                                 for i in range(0, len(feed["input_ids"]), 64)])
        e = np.exp(logits - logits.max(-1, keepdims=True))
        return e / e.sum(-1, keepdims=True)

    return run


def label_names(out: str | pathlib.Path) -> list[str] | None:
    """The class names an export predicts, in order (config.yaml's `labels`)."""
    return yaml.safe_load((pathlib.Path(out) / "config.yaml").read_text()).get("labels")
