"""Recomputing a forward pass without counting its batch twice in BatchNorm's running statistics."""
from contextlib import contextmanager

import torch
from torch.nn.modules.batchnorm import _BatchNorm


@contextmanager
def frozen_batch_norm_statistics(module):
    """Within the block, training-mode BatchNorm layers of ``module`` normalise with batch statistics as
    usual but leave running_mean, running_var and num_batches_tracked unchanged.

    For passes that recompute a forward already counted: gradient checkpointing's recomputation and the
    gradient cache's replay. Momentum 0 keeps the running values exactly (1 * old + 0 * new).
    """
    layers = [m for m in module.modules()
              if isinstance(m, _BatchNorm) and m.training and m.track_running_stats]
    saved = [(m.momentum, m.num_batches_tracked.clone() if m.num_batches_tracked is not None else None)
             for m in layers]
    for layer in layers:
        layer.momentum = 0.0
    try:
        yield
    finally:
        with torch.no_grad():
            for layer, (momentum, tracked) in zip(layers, saved):
                layer.momentum = momentum
                if tracked is not None:
                    layer.num_batches_tracked.copy_(tracked)
