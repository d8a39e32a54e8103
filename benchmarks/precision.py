"""bf16 against fp32 on this machine, side by side in one run: a training step (AdamW, forward and loss under
torch.autocast as the jobs train, `nas.plan.step_time`) and a batch-1 forward (bf16: the model's weights cast to
bf16), for the named teachers, and how far the bf16 logits move from the fp32 ones on the same inputs. Last line of output: one JSON object.

    python benchmarks/precision.py                       # mpnet-base (after `make teacher-mpnet`) and minilm-l6
    python benchmarks/precision.py --models minilm-l6 --rounds 5

Each figure is the median of --rounds interleaved rounds (fp32, then bf16, in every round), so a noisy machine moves
both alike; ratios are fp32 / bf16. On a CPU without bf16 instructions (no avx512_bf16 or AMX in /proc/cpuinfo) bf16 is
emulated and slower; the JSON says which flags the CPU has.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import statistics
import sys
import time

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def cpu_info() -> dict:
    from nas.latency.measure import device_fingerprint

    fp = device_fingerprint()
    return {"cpu": fp["cpu"], "bf16_flags": [f for f in fp["cpu_flags"] if "bf16" in f or f.startswith("amx")]}


def batch1_forward(model, seq: int, precision: str, n: int = 20) -> float:
    """Median seconds of a batch-1 forward (`nas.plan.forward_time`). bf16 is timed on a copy whose weights are bf16, as
    a bf16 deployment serves: autocast under inference_mode keeps no cast weights between calls, so it would re-cast
    every weight on every call and time the casts, not the model."""
    import copy

    import torch

    from nas.plan import forward_time

    served = copy.deepcopy(model).to(torch.bfloat16) if precision == "bf16" else model
    return forward_time(served, 1, seq, n)


def logit_gap(model, seq: int, rows: int = 32) -> float:
    """Largest absolute difference between the bf16-autocast and the fp32 logits on the same random rows."""
    import torch

    from nas.compute import Compute

    torch.manual_seed(0)
    x = {"input_ids": torch.randint(5, model.config.vocab_size, (rows, seq)),
         "attention_mask": torch.ones(rows, seq, dtype=torch.long)}
    with torch.inference_mode():
        exact = model(**x).logits.float()
        with Compute("cpu", "bf16").autocast():
            cast = model(**x).logits.float()
    return float((exact - cast).abs().max())


def measure(name: str, args) -> dict:
    import torch
    from transformers import AutoModelForSequenceClassification

    from nas.plan import step_time
    from nas.teachers.load import teacher_path

    path = teacher_path(name)
    model = AutoModelForSequenceClassification.from_pretrained(str(path), num_labels=2)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    out = {p: {"step": [], "batch1": []} for p in ("fp32", "bf16")}
    for r in range(args.rounds):
        for p in ("fp32", "bf16"):
            out[p]["step"].append(step_time(model, args.batch, args.seq, p))
            model.load_state_dict(state)  # the step moved the weights: every round times the same model
            out[p]["batch1"].append(batch1_forward(model.eval(), args.seq, p))
        print(f"{name} round {r + 1}/{args.rounds}: step fp32 {out['fp32']['step'][-1]:.3f} s, "
              f"bf16 {out['bf16']['step'][-1]:.3f} s", flush=True)
    med = {p: {k: statistics.median(v) for k, v in d.items()} for p, d in out.items()}
    return {"params_m": round(sum(t.numel() for t in model.parameters()) / 1e6, 1),
            "step_s": {p: round(med[p]["step"], 4) for p in med},
            "batch1_ms": {p: round(med[p]["batch1"] * 1e3, 2) for p in med},
            "step_ratio": round(med["fp32"]["step"] / med["bf16"]["step"], 2),
            "batch1_ratio": round(med["fp32"]["batch1"] / med["bf16"]["batch1"], 2),
            "logit_max_abs_gap": round(logit_gap(model.eval(), args.seq), 4),
            "threads": torch.get_num_threads()}


def main() -> None:
    import torch

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", default="mpnet-base,minilm-l6", help="named teachers or model directories")
    ap.add_argument("--batch", type=int, default=32, help="rows per training step (the jobs' batch)")
    ap.add_argument("--seq", type=int, default=40, help="tokens per row (Rotten Tomatoes: ~30 on average)")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    t0 = time.perf_counter()
    res = {"benchmark": "precision", **cpu_info(), "batch": args.batch, "seq": args.seq, "rounds": args.rounds,
           "models": {name: measure(name, args) for name in args.models.split(",") if name}}
    res["wall_s"] = round(time.perf_counter() - t0, 1)
    print(json.dumps(res))


if __name__ == "__main__":
    main()
