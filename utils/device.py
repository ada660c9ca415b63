"""Device choice and mixed-precision settings."""
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
    """bf16 on CUDA where supported, else fp16; None (fp32) on CPU or with use_amp off."""
    if not use_amp or device.type != "cuda":
        return None
    return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16


def autocast(device, dtype):
    """Autocast context for ``dtype``, or a no-op context for fp32."""
    return torch.autocast(device.type, dtype=dtype) if dtype is not None else nullcontext()


def precision_notice(device, use_amp, dtype):
    if dtype is not None:
        return f"precision: AMP {str(dtype).replace('torch.', '')} on {device}"
    if use_amp and device.type != "cuda":
        return f"precision: float32 (use-amp applies to CUDA only; running on {device})"
    return f"precision: float32 on {device}"
