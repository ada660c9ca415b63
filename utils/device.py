"""Device choice and mixed-precision settings."""
import functools
import time
from contextlib import nullcontext

import torch

from utils.errors import UserError


def resolve_device(name):
    """"auto" -> cuda if available else cpu; an unavailable explicit device is a UserError."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise UserError(f"device '{name}' requested but CUDA is not available here; use --device cpu or auto")
    if name.startswith("cuda:") and int(name[5:]) >= torch.cuda.device_count():
        raise UserError(f"device '{name}' requested but only {torch.cuda.device_count()} CUDA device(s) exist")
    if name == "mps" and not torch.backends.mps.is_available():
        raise UserError("device 'mps' requested but MPS is not available here; use --device cpu or auto")
    return torch.device(name)


def amp_dtype(device, use_amp):
    """Evaluation's autocast: bf16 on CUDA where supported, else fp16; None (fp32) on CPU or with use_amp off.
    (CPU evaluation stays fp32 so that its recall equals clip_benchmark's --no_amp numbers.)"""
    if not use_amp or device.type != "cuda":
        return None
    return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16


# /proc/cpuinfo flags of native bf16 arithmetic: AVX-512 BF16 and AMX (x86), the BF16 extension (aarch64).
# Without them torch emulates bf16 on the CPU, slower than float32.
NATIVE_BF16_FLAGS = ("avx512_bf16", "amx_bf16", "bf16")


def cpu_bf16_flags():
    """The NATIVE_BF16_FLAGS this CPU reports ([] where /proc/cpuinfo is absent)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            words = {word for line in handle if line.startswith(("flags", "Features")) for word in line.split()}
    except OSError:
        return []
    return [flag for flag in NATIVE_BF16_FLAGS if flag in words]


@functools.lru_cache(maxsize=None)
def cpu_bf16_speedup(rounds=5):
    """float32 time / bf16-autocast time of a small convolution + linear forward and backward on this CPU
    (about a second; measured once per process; bench/machine.py reports it). Not what training decides by:
    on one idle 2-core VM it read 1.0x to 2.0x within an hour, and below 1.0x beside another job, so a run's
    precision would have followed the moment it started, not the machine. The two precisions are timed in
    turn, ``rounds`` times each, and the fastest of each kept, so that a busy neighbour slows both alike."""
    with torch.random.fork_rng(devices=[]):  # a training run seeded before the probe draws as if it never ran
        torch.manual_seed(0)
        conv = torch.nn.Conv2d(64, 64, 3, padding=1)
        linear = torch.nn.Linear(1024, 1024)
        images, tokens = torch.randn(32, 64, 32, 32), torch.randn(512, 1024)

    def step(dtype):
        started = time.perf_counter()
        with torch.autocast("cpu", dtype=dtype, enabled=dtype is not None):
            loss = conv(images).float().square().mean() + linear(tokens).float().square().mean()
        loss.backward()
        return time.perf_counter() - started

    step(None), step(torch.bfloat16)  # the first calls pick kernels
    times = {None: [], torch.bfloat16: []}
    for _ in range(rounds):
        for dtype in times:
            times[dtype].append(step(dtype))
    return min(times[None]) / min(times[torch.bfloat16])


def training_dtype(device, use_amp, amp_dtype_name="auto", recorded=None):
    """(autocast dtype or None for float32, why) of a training run.

    CUDA: bf16 where supported, else fp16 (or ``amp_dtype_name`` when not "auto"). CPU: with "auto", bf16
    where the CPU has native bf16 (cpu_bf16_flags: the same choice every run on a machine), else float32;
    "bfloat16" forces it; never fp16. bf16 steps' gradients are
    further from float32's than bench/gpu_check.py's tolerance, yet the faster steps win over a run of the
    same minutes (docs/training.md has both measurements).
    ``recorded``: the precision a resumed run trained in ("bfloat16"/"float32"), kept on a CPU.
    """
    if not use_amp:
        return None, "use-amp false"
    if recorded in ("bfloat16", "float32") and amp_dtype_name == "auto" and device.type == "cpu":
        return (torch.bfloat16 if recorded == "bfloat16" else None), "as the run being resumed"
    if device.type == "cuda":
        if amp_dtype_name == "bfloat16" and not torch.cuda.is_bf16_supported():
            raise UserError("amp-dtype bfloat16: this GPU does not support bf16; use auto or float16")
        if amp_dtype_name != "auto":
            return getattr(torch, amp_dtype_name), f"amp-dtype {amp_dtype_name}"
        return (torch.bfloat16, "bf16 supported") if torch.cuda.is_bf16_supported() else (torch.float16, "no bf16")
    if device.type != "cpu":
        return None, f"use-amp applies to CUDA and CPUs; running on {device}"
    if amp_dtype_name == "float16":
        raise UserError("amp-dtype float16 is for CUDA only (fp16 autocast on a CPU is slow and needs loss "
                        "scaling); use bfloat16 or auto")
    native = cpu_bf16_flags()
    if amp_dtype_name == "bfloat16":
        return torch.bfloat16, ("amp-dtype bfloat16" if native else
                                "amp-dtype bfloat16; this CPU has no native bf16: emulated, slower than float32")
    if not native:
        return None, "use-amp: this CPU has no native bf16 (emulated bf16 is slower than float32)"
    return torch.bfloat16, f"use-amp: native bf16 on this CPU ({', '.join(native)}); use-amp false for float32"


def autocast(device, dtype):
    """Autocast context for ``dtype``, or a no-op context for fp32."""
    return torch.autocast(device.type, dtype=dtype) if dtype is not None else nullcontext()


def precision_notice(device, use_amp, dtype, why=None):
    """The log's "precision:" line; ``why``: training_dtype's reason."""
    reason = f" ({why})" if why else ""
    if dtype is not None:
        return f"precision: AMP {dtype_name(dtype)} on {device}{reason}"
    if why is None and use_amp and device.type != "cuda":
        return f"precision: float32 (use-amp applies to CUDA only when evaluating; running on {device})"
    return f"precision: float32 on {device}{reason}"


def dtype_name(dtype):
    """"bfloat16", "float16", "float32" (None: float32)."""
    return str(dtype).replace("torch.", "") if dtype is not None else "float32"
