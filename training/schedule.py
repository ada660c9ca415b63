"""Learning-rate schedule: linear warmup, then cosine decay to zero."""
import math

from torch.optim.lr_scheduler import LambdaLR


class WarmupCosine:
    """Multiplier for step s: s/warmup during warmup, then 0.5*(1+cos(pi*progress)).

    A class (not a lambda) so LambdaLR.state_dict() records it as plain data.
    """

    def __init__(self, warmup_steps, total_steps, decay=True):
        self.warmup_steps = warmup_steps
        self.total_steps = max(total_steps, 1)
        self.decay = decay

    def __call__(self, step):
        if step < self.warmup_steps:
            return (step + 1) / self.warmup_steps
        if not self.decay:
            return 1.0
        progress = (step - self.warmup_steps) / max(1, self.total_steps - self.warmup_steps)
        return 0.5 * (1.0 + math.cos(math.pi * min(progress, 1.0)))


def warmup_cosine(optimizer, warmup_steps, total_steps, decay=True):
    """decay=False: constant learning rate after the warmup."""
    return LambdaLR(optimizer, WarmupCosine(warmup_steps, total_steps, decay))
