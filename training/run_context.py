"""What every step and save of a run uses besides its state: fixed for the run's length."""
from dataclasses import dataclass

import torch

from training.run_log import RunLog
from utils.distributed import Distributed


@dataclass
class RunContext:
    """job: the process group's view (rank, world size); device and dtype (autocast's, None: off); log: the
    metrics log (rank 0 only, else None); the step's settings (channels_last, grad_cache_chunk, grad_clip,
    checkpoint_every, num_workers) and where checkpoints go."""
    job: Distributed
    device: torch.device
    dtype: torch.dtype | None
    log: RunLog | None
    channels_last: bool
    grad_cache_chunk: int
    grad_clip: float
    checkpoint_every: int
    num_workers: int
    best_path: str
    last_path: str

    @classmethod
    def from_config(cls, config, job, device, dtype, log):
        return cls(job, device, dtype, log, config["channels-last"], config["grad-cache-chunk"], config["grad-clip"],
                   config["checkpoint-every-steps"], config["num-workers"], config["best-path"], config["last-path"])
