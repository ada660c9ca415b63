"""torchrun support: process-group set-up and the feature gather used by the global-batch loss."""
import logging
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Distributed:
    """This process's place in the job. world_size == 1 means a plain single-process run."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self):
        return self.rank == 0

    @property
    def enabled(self):
        return self.world_size > 1


def init_distributed(device, timeout=None):
    """Join the torchrun job described by RANK/WORLD_SIZE/LOCAL_RANK (NCCL on CUDA, gloo on CPU).

    Under torchrun the process group exists even for one process (its collectives are then trivial, but the
    backend is set up and used as in a bigger job). Returns (Distributed, device): on CUDA each process takes
    the GPU of its LOCAL_RANK. ``timeout``: how long a collective may wait for the slowest rank (a timedelta;
    None: PyTorch's default, 10 minutes for NCCL).
    """
    if "RANK" not in os.environ or "WORLD_SIZE" not in os.environ:
        return Distributed(), device
    rank, world_size = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if device.type == "cuda":
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        options = {"timeout": timeout} if timeout else {}
        store, _, _ = next(dist.rendezvous("env://", rank, world_size, **options))
        # torchrun keeps its store across restarts (--max-restarts) and PyTorch gives no attempt its own keys: a
        # restarted rank would read the killed one's address and fail to connect. Each attempt gets a prefix.
        attempt = os.environ.get("TORCHELASTIC_RESTART_COUNT", "0")
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo", store=dist.PrefixStore(
            f"attempt-{attempt}", store), rank=rank, world_size=world_size, **options)
    logger.info(f"distributed: {dist.get_backend()}, {world_size} process(es)")
    return Distributed(rank, world_size, local_rank), device


def gather_features(image_features, text_features):
    """All ranks' features, concatenated in rank order, keeping the gradient path to the local ones.

    image_features [b, D], text_features [b, D] -> ([b * world, D], [b * world, D]).
    Pitfall: this uses torch.distributed.nn.all_gather (differentiable); plain dist.all_gather returns
    tensors without gradient, which would silently train on the local batch only.
    """
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return image_features, text_features
    import torch.distributed.nn

    return (torch.cat(torch.distributed.nn.all_gather(image_features)),
            torch.cat(torch.distributed.nn.all_gather(text_features)))


def gather_tensor(tensor):
    """All ranks' ``tensor`` [n, ...] concatenated in rank order, without gradient (``tensor`` itself alone)."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return tensor
    parts = [torch.empty_like(tensor) for _ in range(dist.get_world_size())]
    dist.all_gather(parts, tensor.contiguous())
    return torch.cat(parts)


def all_gather_objects(value):
    """list of ``value`` from every rank, in rank order (just [value] without torchrun)."""
    if not (dist.is_available() and dist.is_initialized()):
        return [value]
    gathered = [None] * dist.get_world_size()
    dist.all_gather_object(gathered, value)
    return gathered


def broadcast_object(value, source=0):
    """``source``'s ``value`` on every rank (just ``value`` without torchrun)."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return value
    holder = [value]
    dist.broadcast_object_list(holder, source)
    return holder[0]


def broadcast_buffers(module, source=0):
    """Copy ``source``'s buffers (BatchNorm running statistics) to every rank, in place."""
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        for buffer in module.buffers():
            dist.broadcast(buffer, source)


def barrier():
    if dist.is_available() and dist.is_initialized():
        dist.barrier()


def shutdown():
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
