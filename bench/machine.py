"""Where a benchmark ran: CPU model, cores, the ISA flags that change kernel choice, library versions, threads.

Why: the same code measured 1.12x and 0.95x open_clip's train step on two 2-core machines (issue 23); a ratio
without its machine cannot be reproduced. Every bench prints ``machine_line()`` first; bench/run_all.py stores
``machine()`` in its JSON and writes it as the table's header.
"""
import os
import platform
import re

ISA_FLAGS = ("avx2", "avx512f", "avx512_bf16", "avx512_vnni", "amx_tile", "amx_bf16")  # /proc/cpuinfo names


def _cpuinfo():
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            return handle.read()
    except OSError:  # not Linux
        return ""


def _library_versions(config_text):
    """oneDNN and MKL versions as torch.__config__.show() states them (None where absent)."""
    onednn = re.search(r"(?:oneDNN|MKL-DNN)[^\n]*?v(\d+[\w.]*)", config_text)
    mkl = re.search(r"Math Kernel Library Version (\S+)", config_text)
    return (onednn.group(1) if onednn else None), (mkl.group(1) if mkl else None)


def machine():
    """dict: cpu, cores (logical CPUs this process may use), isa (the flags of ISA_FLAGS present), torch,
    onednn, mkl, threads (torch intra-op), bf16_speedup (a small step's float32 time / bf16 autocast time, where
    the CPU has native bf16; else None), python, platform."""
    import torch

    info = _cpuinfo()
    model = re.search(r"^model name\s*:\s*(.+)$", info, re.MULTILINE)
    flags = re.search(r"^flags\s*:\s*(.+)$", info, re.MULTILINE)
    present = set(flags.group(1).split()) if flags else set()
    onednn, mkl = _library_versions(torch.__config__.show())
    from utils.device import cpu_bf16_flags, cpu_bf16_speedup

    bf16 = round(cpu_bf16_speedup(), 2) if cpu_bf16_flags() else None
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return {"cpu": model.group(1).strip() if model else platform.processor() or platform.machine(),
            "cores": cores, "isa": [flag for flag in ISA_FLAGS if flag in present], "torch": torch.__version__,
            "onednn": onednn, "mkl": mkl, "threads": torch.get_num_threads(), "bf16_speedup": bf16,
            "python": platform.python_version(), "platform": platform.platform(terse=True)}


def machine_line(facts=None):
    """One line naming the machine, e.g. "machine: AMD EPYC, 2 cores, avx2, torch 2.14.1 (oneDNN 3.7, MKL
    2024.2), 2 threads"."""
    facts = facts or machine()
    libraries = ", ".join(f"{name} {facts[key]}" for name, key in (("oneDNN", "onednn"), ("MKL", "mkl"))
                          if facts[key])
    return (f"machine: {facts['cpu']}, {facts['cores']} cores, {' '.join(facts['isa']) or 'no AVX2'}, "
            f"torch {facts['torch']}{f' ({libraries})' if libraries else ''}, {facts['threads']} threads"
            + (f", bf16 autocast {facts['bf16_speedup']:.2f}x float32" if facts.get("bf16_speedup") else ""))


if __name__ == "__main__":
    print(machine_line())
