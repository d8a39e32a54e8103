"""The compute policy a job trains and infers with: one device (cpu or cuda), one precision, and what each kind of Ray
trial or task asks the scheduler for.

`resolve(spec)` turns the spec's `compute:` section into a `Compute` (auto -> cuda when one is visible). Training loops
take a `Compute` and keep the data on the CPU: each batch moves to the device without blocking, forward and loss run
under `autocast()` (bf16 / fp16; fp16 with the gradient scaler from `scaler()`), results come back to the CPU. So the
CUDA path differs from the CPU one only in the device's name.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, replace

import os

AUTOCAST_DTYPES = {"bf16": "bfloat16", "fp16": "float16"}
# Test hook: GPUs declared to Ray on a CPU machine (`ray.init(num_gpus=N)`) are scheduled as GPUs, but tensors stay on
# the CPU, so the scheduling of GPU fractions is tested where no GPU exists
GPU_AS_CPU = "NAS_GPU_AS_CPU"
# Test hook: torch's default device is `meta` in the job's stages and workers, so any tensor or module created without
# an explicit device fails (at once, or at its first use beside a real tensor)
STRICT_DEVICES = "NAS_STRICT_DEVICES"


@dataclass(frozen=True)
class Compute:
    device: str = "cpu"  # cpu | cuda
    precision: str = "fp32"  # fp32 | bf16 | fp16
    gpus_per_trial: float = 0.0  # small trials (per-trial students, proxies, HPO configurations)
    gpus_per_task: float = 0.0  # teacher-sized steps (supernet, finals, labelling): a whole GPU on cuda
    cpus_per_trial: int | None = None

    @property
    def cuda(self) -> bool:
        return self.device == "cuda"

    def autocast(self):
        """Mixed precision for forward and loss (a no-op in fp32)."""
        if self.precision == "fp32":
            return contextlib.nullcontext()
        import torch

        return torch.autocast(device_type=self.device, dtype=getattr(torch, AUTOCAST_DTYPES[self.precision]))

    def exact(self) -> "Compute":
        """The same device in fp32: where a score is stored as the model's (dev and test accuracy of teachers,
        initialisers, students), it is the fp32 model's, as the exports deploy it, whatever precision it trained in."""
        return replace(self, precision="fp32")

    def key_part(self) -> tuple:
        """What the precision adds to a cache key (a fine-tuned teacher, an initialiser, a labelled transfer set): only
        where it is not fp32, so entries trained in fp32 keep their keys."""
        return () if self.precision == "fp32" else (("precision", self.precision),)

    def scaler(self):
        """A gradient scaler, enabled for fp16 only (bf16 has fp32's range)."""
        import torch

        return torch.amp.GradScaler(self.device, enabled=self.precision == "fp16")

    def to_device(self, batch: dict) -> dict:
        """Every tensor of `batch` on the device (asynchronously from pinned memory on cuda)."""
        return {k: v.to(self.device, non_blocking=self.cuda) for k, v in batch.items()}

    def describe(self) -> dict:
        """What a trial that trained records: device, precision, the GPU's name and, inside a Ray worker, the resources
        Ray assigned to it."""
        out = {"device": self.device, "precision": self.precision, "gpu": gpu_name(self.device)}
        try:
            import ray

            if ray.is_initialized():
                out["assigned"] = {k: float(v) for k, v in ray.get_runtime_context().get_assigned_resources().items()}
        except Exception:  # outside a worker there is nothing assigned
            pass
        return out

    def ray_resources(self, whole_gpu: bool = False) -> dict:
        """`ray.remote` options of a task: a teacher-sized step (`whole_gpu`) or a small trial's GPU fraction."""
        gpus = self.gpus_per_task if whole_gpu else self.gpus_per_trial
        return {"num_gpus": gpus} if gpus else {}


CPU = Compute()


def device_of(model) -> str:
    """Where `model`'s parameters are (loops put a model back where they found it)."""
    return str(next(model.parameters()).device)


def gpu_name(device: str) -> str | None:
    """The GPU's name on a cuda device this process sees; None elsewhere (a driver on a cluster's GPU-less head)."""
    if device != "cuda":
        return None
    import torch

    return torch.cuda.get_device_name(torch.cuda.current_device()) if torch.cuda.is_available() else None


def cuda_visible() -> bool:
    import torch

    return torch.cuda.is_available()


def resolve(policy, max_concurrent: int = 1, cuda_available: bool | None = None) -> Compute:
    """The spec's `compute:` section (a ComputePolicy) as a Compute; auto is cuda when a GPU is visible (to this
    process, or `cuda_available`: the Ray cluster has GPUs)."""
    visible = cuda_visible() if cuda_available is None else cuda_available
    device = ("cuda" if visible else "cpu") if policy.device == "auto" else policy.device
    if device == "cpu":
        return Compute("cpu", policy.precision, 0.0, 0.0, policy.cpus_per_trial)
    trial = policy.gpus_per_trial if policy.gpus_per_trial is not None else round(1.0 / max(1, max_concurrent), 4)
    tensors_on = "cpu" if os.environ.get(GPU_AS_CPU) else "cuda"
    precision = "fp32" if tensors_on == "cpu" else policy.precision
    return Compute(tensors_on, precision, float(trial), max(1.0, float(trial)), policy.cpus_per_trial)


def check(policy, cluster: bool = False) -> None:
    """SpecError for a policy this machine cannot run: cuda (or fp16, which needs it) with no GPU visible. On a cluster
    (`--address`) the GPUs are the workers', not the driver's: Ray finds them when the job starts."""
    from nas.spec.errors import SpecError

    if cluster or os.environ.get(GPU_AS_CPU) or cuda_visible():
        return
    if policy.device == "cuda":
        raise SpecError("compute.device", "cuda was asked for but no CUDA device is visible here (use cpu or auto)")
    if policy.precision == "fp16":
        raise SpecError("compute.precision", "fp16 trains on cuda and no GPU is visible here (auto is cpu): use fp32 or "
                        "bf16")


def strict_devices_here() -> None:
    """Under the test hook, torch's default device is `meta` in this thread from now on (`worker_setup` calls it in
    every worker); else nothing. See `strict_devices`."""
    if os.environ.get(STRICT_DEVICES):
        import torch

        torch.set_default_device("meta")


@contextlib.contextmanager
def strict_devices():
    """The job's stages run inside this (`run_job`; every worker calls `strict_devices_here`). It does nothing unless
    the test hook is set: then torch's default device is `meta`, so every tensor in the training, labelling, proxy,
    final and HPO paths must name its device (the compute device, or the CPU for host-side data), and the CUDA path
    differs from the tested one only in the device's name. (A meta index into a CPU tensor reads garbage rather than
    failing, which the jobs' own checks of their results catch.)"""
    import torch

    old = torch.get_default_device()
    strict_devices_here()
    try:
        yield
    finally:
        torch.set_default_device(old)


def on_host():
    """Where models are built and loaded (a context manager: `with on_host(): Model(config)`) and where host-side data
    (token ids, labels, row indices) lives: the CPU, named explicitly. The loops move what they run to the compute
    device and put it back."""
    import torch

    return torch.device("cpu")


def enable_tf32() -> None:
    """TF32 matmuls and convolutions where the GPU has them (Ampere and later): fp32 code, tensor-core speed."""
    import torch

    if torch.cuda.is_available():
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
