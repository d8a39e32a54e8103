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


def measure_text_interleaved(predictors: dict[str, Callable[[list[str]], object]], texts: list[str], settings,
                             reference: str | None = None, seed: int = 0) -> dict[str, dict]:
    """`measure_text_latency` for several predictors in `settings.rounds` interleaved rounds (a fresh random order
    each round, as `measure_interleaved` does for models), so that the machine's drift hits them alike. With
    `reference`, each row gets `speedup` (the median over rounds of the reference's p50 / the predictor's, from the
    same round) and `reference_p50_ms`."""
    import statistics

    import numpy as np
    import torch

    from nas.latency.measure import MeasureSettings, latency_row, timed_runs
    from nas.latency.slot import exclusive_measurement

    rounds = max(1, int(settings.rounds))
    per_round = MeasureSettings(**{**settings.__dict__, "min_runs": max(5, settings.min_runs // rounds),
                                   "max_runs": max(5, settings.max_runs // rounds),
                                   "warmup": max(1, settings.warmup // rounds)})
    batches = text_batches(texts, settings.batch)
    samples = {k: [] for k in predictors}
    round_p50 = {k: [] for k in predictors}
    rng = np.random.default_rng(seed)
    names = list(predictors)
    prev = torch.get_num_threads()
    torch.set_num_threads(settings.threads)
    try:
        with exclusive_measurement():
            for _ in range(rounds):
                for i in rng.permutation(len(names)):
                    predict, pos = predictors[names[i]], [0]

                    def once(predict=predict, pos=pos):
                        predict(batches[pos[0] % len(batches)])
                        pos[0] += 1

                    got = timed_runs(once, per_round)
                    samples[names[i]] += got
                    round_p50[names[i]].append(statistics.median(got))
    finally:
        torch.set_num_threads(prev)
    out = {}
    for name in names:
        row = latency_row(settings, "cpu", samples[name])
        row.update(runtime="text-e2e", rounds=rounds)
        if reference is not None:
            row["speedup"] = float(np.median([a / b for a, b in zip(round_p50[reference], round_p50[name])]))
            row["reference_p50_ms"] = float(np.median(round_p50[reference]))
        out[name] = row
    return out


def hf_predictor(model, tokenizer, seq_len: int) -> Callable[[list[str]], object]:
    """Raw texts -> logits through the model's own tokenizer (its fast path, `FastEncoder`), padded to the job's
    sequence length like the students, in eager PyTorch (a student of any family: they all return `.logits`)."""
    import torch

    from nas.data import FastEncoder

    model, enc = model.eval(), FastEncoder(tokenizer, seq_len)

    def predict(texts: list[str]):
        with torch.inference_mode():
            return model(**enc(texts)).logits

    return predict


def onnx_predictor(model, tokenizer, seq_len: int, threads: int) -> Callable[[list[str]], object]:
    """The same as `hf_predictor` in ONNX Runtime (what an export's onnx format runs): `model` exported to a
    temporary file (kept while the predictor lives), fed by the tokenizer's fast path."""
    import pathlib
    import tempfile

    from nas.data import FastEncoder
    from nas.latency.runtimes import export_onnx, onnx_session

    enc = FastEncoder(tokenizer, seq_len)
    tmp = tempfile.TemporaryDirectory(prefix="nas-onnx-")
    path = export_onnx(model, enc(["a probe text", "another"]), pathlib.Path(tmp.name) / "model.onnx")
    sess = onnx_session(path, threads)
    wanted = [i.name for i in sess.get_inputs()]

    def predict(texts: list[str], _keep=tmp):
        feed = enc.numpy(texts)
        return sess.run(["logits"], {k: feed[k] for k in wanted})[0]

    return predict


def runtime_predictor(model, tokenizer, settings) -> Callable[[list[str]], object]:
    """A model's end-to-end predictor in the runtime of `settings` (a deployment target): ONNX Runtime for onnx, the
    int8 graph for int8, eager PyTorch otherwise, so that a reference is timed as the front it is compared with."""
    if settings.runtime == "onnx":
        return onnx_predictor(model, tokenizer, settings.seq_len, settings.threads)
    if settings.runtime == "int8":
        from nas.latency.runtimes import quantize_int8

        model = quantize_int8(model)
    return hf_predictor(model, tokenizer, settings.seq_len)


def tokenizer_only(tokenizer, seq_len: int) -> Callable[[list[str]], object]:
    from nas.data import FastEncoder

    return FastEncoder(tokenizer, seq_len)


def sklearn_predictor(pipe) -> Callable[[list[str]], object]:
    return pipe.predict_proba
