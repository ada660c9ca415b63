"""Starting and resuming a run: the checkpoint to start from, the resume guard and the random streams."""
import logging
import os
import random

import numpy as np
import torch

from data.sources import open_source
from models.checkpoint import read_checkpoint
from utils.config_schema import TRAIN
from utils.distributed import broadcast_object
from utils.errors import UserError

logger = logging.getLogger(__name__)

# Keys whose change would make a resumed run differ from the run it continues (decided per key in the schema).
RUN_DEFINING_KEYS = tuple(key.name for key in TRAIN if key.run_defining)
AUTO = "auto"  # resume: auto, open_clip's --resume latest


def seed_everything(seed):
    random.seed(seed)
    np.random.seed(seed % 2 ** 32)
    torch.manual_seed(seed)


def rng_state():
    """Global RNG states as plain data (dropout and main-process augmentation draw from these)."""
    version, python_state, gauss = random.getstate()
    return {"torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
            "python": [version, list(python_state), gauss]}


def restore_rng_state(state):
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    version, python_state, gauss = state["python"]
    random.setstate((version, tuple(python_state), gauss))


def resolved_resume(config):
    """``config`` with ``resume: auto`` made a path: last-path when it exists (rank 0's view, so every rank
    starts alike), else None, a first start from load-path. One command line serves the first start and every
    restart (torchrun --max-restarts)."""
    if config["resume"] != AUTO:
        return config
    found = broadcast_object(os.path.exists(config["last-path"]))
    if not found:
        logger.info(f"resume auto: no {config['last-path']} yet; starting from {config['load-path']}")
    return {**config, "resume": config["last-path"] if found else None}


def check_resume_config(saved, config):
    """Refuse a resume whose run-defining settings differ from those the checkpoint was trained with."""
    changed = [f"{k}: {saved[k]!r} -> {config[k]!r}" for k in RUN_DEFINING_KEYS if k in saved and saved[k] != config[k]]
    if changed:
        raise UserError(f"--resume {config['resume']} was trained with other settings ({'; '.join(changed)}). "
                        f"Resume with the same settings, or start a new run from its weights with "
                        f"--load-path {config['resume']} --overwrite true")
    # num-workers is not run-defining for a folder (per-image seeds), but shards' batch k comes from worker k % W
    workers = saved.get("num-workers", config["num-workers"])
    order_follows_workers = open_source(config["train-data"], config["caption-key"]).order_follows_workers
    if order_follows_workers and workers != config["num-workers"]:
        raise UserError(f"--resume {config['resume']} was trained from shards with num-workers {workers}; a shard "
                        f"epoch's batches depend on the worker count, so num-workers {config['num-workers']} would "
                        f"train on other batches. Resume with --num-workers {workers}")


def starting_checkpoint(config):
    """Read the checkpoint to start from: ``resume`` (a training checkpoint) or ``load-path``."""
    if config["resume"]:
        payload = read_checkpoint(config["resume"])
        if "training" not in payload or "optimizer" not in payload["training"]:
            raise UserError(f"{config['resume']} holds no training state; resume from last-path "
                            f"({config['last-path']}), or start from it with --load-path")
        check_resume_config(payload["training"].get("config", {}), config)
        return payload
    existing = [config[k] for k in ("best-path", "last-path") if os.path.exists(config[k])]
    if existing and not config["overwrite"]:
        raise UserError(f"{' and '.join(existing)} exist from an earlier run: continue it with --resume "
                        f"{config['last-path']}, or pass --overwrite true to start a new run that replaces them")
    return read_checkpoint(config["load-path"])
