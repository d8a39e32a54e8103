"""Training and latency on a GPU against this machine's CPU, side by side (issue 24).

    python benchmarks/gpu.py                 # on a CUDA machine: every stage on cuda in fp32 / bf16 / fp16, and on the CPU
    python benchmarks/gpu.py --cpu-only      # the CPU half alone (what a machine without a GPU can measure)

On a slice of Rotten Tomatoes with the MiniLM-L6 teacher: fine-tune the teacher (a few hundred steps), train the
supernet (sandwich rule), distil two finals, each timed in steps per second per device and precision; then measure the
teacher and a small student at batch 1 and 32 in fp32 / bf16 / fp16 (CUDA events) and fp32 on the CPU. Peak GPU memory
and the GPU's utilisation (nvidia-smi, sampled while the supernet trains) are reported beside. The CPU runs the same
stages for fewer steps (rates, not totals, are compared). Sized to finish in under 5 minutes of GPU time.
The last line printed is one JSON object of figures.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import subprocess
import sys
import threading
import time

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def gpu_utilisation(stop: threading.Event, out: list[float]) -> None:
    """nvidia-smi's utilisation.gpu every 0.5 s until `stop`."""
    while not stop.wait(0.5):
        try:
            r = subprocess.run(["nvidia-smi", "--query-gpu=utilization.gpu", "--format=csv,noheader,nounits"],
                               capture_output=True, text=True, timeout=5)
            out.append(float(r.stdout.split()[0]))
        except Exception:
            return


def stage_rates(task, compute, steps: dict[str, int]) -> dict:
    """Steps per second of teacher fine-tuning, supernet training and two finals on `compute`."""
    import copy

    import torch

    from nas.distill.loop import DistillSettings, distill
    from nas.distill.supernet import train_supernet
    from nas.students.bert_slice import extract_subnet
    from nas.students.shape import Shape

    out = {}
    tr = task.train
    x = {k: v[tr] for k, v in task.tensors.items()}
    fine = copy.deepcopy(task.teacher)
    t0 = time.perf_counter()
    distill(fine, x, task.labels[tr], None, DistillSettings(lr=1e-4, alpha_soft=0.0, beta_hard=1.0), steps["teacher"],
            compute=compute)
    out["teacher_steps_per_s"] = steps["teacher"] / (time.perf_counter() - t0)
    sn = copy.deepcopy(task.teacher)
    info = train_supernet(sn, task.t_logits, task.tensors, task.labels, tr, task.space.student, steps["supernet"],
                          DistillSettings(lr=2e-4), n_random=2, hidden_weight=1.0, compute=compute)
    out["supernet_steps_per_s"] = 1.0 / info["step_s"]
    for i, key in enumerate(("L2-H256-A4-F1024", "L1-H128-A2-F512")):
        student = extract_subnet(sn, Shape.from_key(key))
        t0 = time.perf_counter()
        distill(student, x, task.labels[tr], task.t_logits[tr], DistillSettings(lr=1e-3), steps["final"], seed=i,
                compute=compute)
        out[f"final_{key}_steps_per_s"] = steps["final"] / (time.perf_counter() - t0)
    if compute.cuda:
        out["peak_gpu_memory_gb"] = torch.cuda.max_memory_allocated() / 2**30
    return out


def latencies(task, device: str, dtypes: tuple[str, ...], batches: tuple[int, ...], seq: int) -> dict:
    """p50 / p90 / CV of the teacher and a small student per dtype and batch on `device`."""
    import copy

    from nas.latency.measure import MeasureSettings, measure_latency
    from nas.students.bert_slice import extract_subnet
    from nas.students.shape import Shape

    models = {"teacher": task.teacher, "L2-H256": extract_subnet(task.teacher, Shape.from_key("L2-H256-A4-F1024"))}
    out = {}
    for name, model in models.items():
        for dtype in dtypes:
            for batch in batches:
                s = MeasureSettings(device=device, dtype=dtype, batch=batch, seq_len=seq, threads=2, min_runs=50,
                                    max_runs=300, rounds=1)
                row = measure_latency(copy.deepcopy(model), s)
                out[f"{name}/{device}/{dtype}/b{batch}"] = {k: row[k] for k in ("p50_ms", "p90_ms", "cv")}
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cpu-only", action="store_true", help="measure the CPU half only")
    ap.add_argument("--rows", type=int, default=2000, help="stratified slice of Rotten Tomatoes")
    ap.add_argument("--seq", type=int, default=64)
    args = ap.parse_args()

    import torch

    from nas.compute import Compute, enable_tf32, gpu_name

    sys.path.insert(0, str(ROOT / "benchmarks"))
    from task_setup import classification_task

    cuda = torch.cuda.is_available() and not args.cpu_only
    t_start = time.perf_counter()
    task = classification_task("rotten-tomatoes", args.rows, args.seq, teacher_epochs=1.0)
    result: dict = {"gpu": gpu_name("cuda") if cuda else None, "rows": args.rows, "seq_len": args.seq}
    torch.set_num_threads(2)
    result["cpu"] = stage_rates(task, Compute("cpu", "fp32"), {"teacher": 10, "supernet": 5, "final": 10})
    result["latency"] = latencies(task, "cpu", ("fp32",), (1, 32), args.seq)
    if cuda:
        enable_tf32()
        util: list[float] = []
        for precision in ("fp32", "bf16", "fp16"):
            stop = threading.Event()
            watcher = threading.Thread(target=gpu_utilisation, args=(stop, util), daemon=True)
            watcher.start()
            torch.cuda.reset_peak_memory_stats()
            result[f"cuda_{precision}"] = stage_rates(task, Compute("cuda", precision, 1.0, 1.0),
                                                      {"teacher": 200, "supernet": 200, "final": 200})
            stop.set()
            watcher.join()
            result[f"cuda_{precision}"]["gpu_utilisation_median"] = sorted(util)[len(util) // 2] if util else None
            util.clear()
        result["latency"].update(latencies(task, "cuda", ("fp32", "bf16", "fp16"), (1, 32), args.seq))
        result["bf16_supernet_speedup_vs_cpu"] = (result["cuda_bf16"]["supernet_steps_per_s"]
                                                  / result["cpu"]["supernet_steps_per_s"])
        result["gpu_latency_cv_b32_max"] = max(v["cv"] for k, v in result["latency"].items() if "/cuda/" in k
                                               and k.endswith("/b32"))
    result["wall_s"] = time.perf_counter() - t_start
    print(json.dumps(result))


if __name__ == "__main__":
    main()
