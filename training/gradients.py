"""Gradient buffers for a step that accumulates over chunks (the gradient cache's replay).

Allocating each parameter's gradient lazily, on the first chunk's backward, puts those buffers between the
chunk's freed activations; on a CPU the heap then cannot reuse or return that span, and the peak RSS of a
16-chunk step grows by ~50 MiB over the demo's 45 MiB of gradients (bench/grad_cache.py). Allocating them
before the first activation keeps them out of the way.
"""
import torch


def allocate_gradients(model):
    """Give every trainable parameter without a gradient a zero one. Returns those parameters."""
    fresh = [param for param in model.parameters() if param.requires_grad and param.grad is None]
    for param in fresh:
        param.grad = torch.zeros_like(param)
    return fresh


def reached_parameters(outputs):
    """The leaf tensors that backward from ``outputs`` accumulates into, as a set of ids."""
    reached = {id(output) for output in outputs if output.grad_fn is None}  # a parameter returned as it is
    seen = set()
    stack = [output.grad_fn for output in outputs if output.grad_fn is not None]
    while stack:
        node = stack.pop()
        if node is None or node in seen:
            continue
        seen.add(node)
        variable = getattr(node, "variable", None)  # an AccumulateGrad node
        if variable is not None:
            reached.add(id(variable))
        stack.extend(next_node for next_node, _ in node.next_functions)
    return reached


def release_unreached(fresh, reached):
    """Set back to None the gradients given by allocate_gradients that no backward reached.

    The optimizer then skips those parameters, as it does after a plain step (AdamW would otherwise apply
    weight decay and momentum to them).
    """
    for param in fresh:
        if id(param) not in reached:
            param.grad = None
