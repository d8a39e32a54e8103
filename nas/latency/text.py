"""End-to-end latency from raw text (tokenisation included), for references and any model behind a `predict(texts)`."""

from __future__ import annotations

from typing import Callable


def text_batches(texts: list[str], batch: int, n: int = 64) -> list[list[str]]:
    """`n` batches of real texts (cycled), so that end-to-end timings see real lengths and vocabulary."""
    out, i = [], 0
    for _ in range(n):
        out.append([texts[(i + j) % len(texts)] for j in range(batch)])
        i += batch
    return out


def measure_text_latency(predict: Callable[[list[str]], object], texts: list[str], settings) -> dict:
    """End-to-end latency of `predict(list of raw texts)` with the students' protocol (warm-up, stopping rule, threads,
    batch), in the exclusive latency slot. Returns a measurement row with runtime `text-e2e`."""
    import torch

    from nas.latency.measure import latency_row, timed_runs
    from nas.latency.slot import exclusive_measurement

    batches = text_batches(texts, settings.batch)
    pos = [0]

    def once():
        predict(batches[pos[0] % len(batches)])
        pos[0] += 1

    prev = torch.get_num_threads()
    torch.set_num_threads(settings.threads)
    try:
        with exclusive_measurement():
            samples = timed_runs(once, settings)
    finally:
        torch.set_num_threads(prev)
    row = latency_row(settings, "cpu", samples)
    row["runtime"] = "text-e2e"
    return row


def hf_predictor(model, tokenizer, seq_len: int) -> Callable[[list[str]], object]:
    """Raw texts -> logits through the model's own tokenizer, padded to the job's sequence length like the students."""
    import torch

    from nas.data import encode

    model = model.eval()

    def predict(texts: list[str]):
        enc = encode(tokenizer, texts, seq_len)
        with torch.inference_mode():
            return model(**enc).logits

    return predict


def tokenizer_only(tokenizer, seq_len: int) -> Callable[[list[str]], object]:
    from nas.data import encode

    return lambda texts: encode(tokenizer, texts, seq_len)


def sklearn_predictor(pipe) -> Callable[[list[str]], object]:
    return pipe.predict_proba
