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
def cpu_bf16_speedup():
    """float32 time / bf16-autocast time of a small convolution + linear forward and backward on this CPU
    (about a second; measured once per process; bench/machine.py reports it)."""
    generator = torch.Generator().manual_seed(0)
    conv = torch.nn.Conv2d(64, 64, 3, padding=1)
    linear = torch.nn.Linear(1024, 1024)
    images, tokens = torch.randn(32, 64, 32, 32, generator=generator), torch.randn(512, 1024, generator=generator)

    def step(dtype):
        with torch.autocast("cpu", dtype=dtype, enabled=dtype is not None):
            loss = conv(images).float().square().mean() + linear(tokens).float().square().mean()
        loss.backward()

    def best(dtype):
        step(dtype)  # the first call picks kernels
        times = []
        for _ in range(3):
            started = time.perf_counter()
            step(dtype)
            times.append(time.perf_counter() - started)
        return min(times)

    return best(None) / best(torch.bfloat16)


def training_dtype(device, use_amp, amp_dtype_name="auto", recorded=None):
    """(autocast dtype or None for float32, why) of a training run.

    CUDA: bf16 where supported, else fp16 (or ``amp_dtype_name`` when not "auto"). CPU: float32 unless
    ``amp_dtype_name`` is "bfloat16"; never fp16. Why not bf16 by default where it is faster (1.9x on a
    ResNet18 step with AVX-512 BF16): its gradients on the demo's towers differ from float32's by 16-63%
    (relative L2 over all parameters; docs/training.md), far outside bench/gpu_check.py's 5e-2.
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
    if amp_dtype_name == "bfloat16":
        native = cpu_bf16_flags()
        return torch.bfloat16, ("amp-dtype bfloat16" if native else
                                "amp-dtype bfloat16; this CPU has no native bf16: emulated, slower than float32")
    return None, ("use-amp on a CPU keeps float32: bf16 gradients are too far from float32's "
                  "(docs/training.md); amp-dtype bfloat16 forces it")


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
