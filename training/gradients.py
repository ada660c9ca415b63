"""Gradient buffers for a step that accumulates over chunks (the gradient cache's replay), on a CPU.

Allocating each parameter's gradient lazily, on the first chunk's backward, puts those buffers between the
chunk's freed activations; glibc's heap then cannot reuse or return that span, and the peak RSS of a
16-chunk step grows by ~50 MiB over the demo's 45 MiB of gradients (bench/grad_cache.py). Allocating them
before the first activation keeps them out of the way. On CUDA the caching allocator has no such problem,
and buffers held through the no-grad pass and the loss would only raise the peak: nothing is done there.
"""
from contextlib import contextmanager

import torch


def _sparse_parameter_ids(model):
    """Parameters whose gradient is sparse (nn.Embedding(sparse=True)): a dense zero buffer would replace it."""
    return {id(param) for module in model.modules() if getattr(module, "sparse", False)
            for param in module.parameters(recurse=False)}


@contextmanager
def gradients_allocated_first(model, device):
    """Inside: every trainable parameter without a gradient has a zero one, allocated on entry. On exit, those
    that no backward accumulated into get None back, as after a plain step (else AdamW would decay them).

    Accumulation is observed with post-accumulate-grad hooks, so parameters reached in ways a walk of the
    graph cannot see (a reentrant checkpoint) count. Skipped off the CPU, and under DDP with
    find_unused_parameters, which writes gradients of parameters its rank did not use.
    """
    inner = getattr(model, "_orig_mod", model)  # torch.compile's wrapper, then DDP's
    if device.type != "cpu" or getattr(inner, "find_unused_parameters", False):
        yield
        return
    sparse = _sparse_parameter_ids(model)
    fresh = [param for param in model.parameters()
             if param.requires_grad and param.grad is None and id(param) not in sparse]
    reached = set()
    handles = []
    try:
        for param in fresh:
            param.grad = torch.zeros_like(param)
            handles.append(param.register_post_accumulate_grad_hook(lambda p: reached.add(id(p))))
        yield
    finally:
        for handle in handles:
            handle.remove()
        for param in fresh:
            if id(param) not in reached:
                param.grad = None
