"""What a training run carries from step to step, and what its checkpoints hold: one writer, one reader.

A run's last-path is ``TrainState.to_checkpoint``'s payload; ``TrainState.restore`` reads it back (checkpoints
of earlier versions included: their keys are the same).
"""
import logging
from dataclasses import dataclass, field

import torch

from models.checkpoint import save_checkpoint
from training.resume import restore_rng_state, rng_state
from utils.distributed import all_gather_objects, barrier
from utils.errors import UserError

logger = logging.getLogger(__name__)


@dataclass
class EpochProgress:
    """How far an interrupted epoch got.

    batches, loss_sum and swap_margin_sum: what it trained so far; seconds: the run's training seconds at that
    point (None in checkpoints older than time budgets); world_size and num_workers: the split its data position belongs to;
    data_position: the data's own record of the position (a mined batch order), from ``TrainData.position``.
    """
    batches: int
    loss_sum: float
    seconds: float | None
    world_size: int
    num_workers: int
    data_position: dict = field(default_factory=dict)
    swap_margin_sum: float = 0.0  # summed Objective.last_swap_margin (compositional negatives only)

    _KEYS = ("batches", "loss_sum", "seconds", "world-size", "num-workers", "swap_margin_sum")

    def to_dict(self):
        """The checkpoint's "epoch-progress" entry."""
        return {"batches": self.batches, "loss_sum": self.loss_sum, "world-size": self.world_size,
                "num-workers": self.num_workers, "seconds": self.seconds,
                "swap_margin_sum": self.swap_margin_sum, **self.data_position}

    @classmethod
    def from_dict(cls, entry):
        return cls(entry["batches"], entry["loss_sum"], entry.get("seconds"), entry.get("world-size"),
                   entry.get("num-workers"), {k: v for k, v in entry.items() if k not in cls._KEYS},
                   entry.get("swap_margin_sum", 0.0))


@dataclass
class TrainState:
    """Model, optimizer, scaler and schedule, and where the run is: epochs completed, global step, the epoch's
    progress when inside one, the best mean recall and the per-epoch history.

    ``model`` is the plain module (its weights are saved, its parameters clipped); ``forward`` is what runs the
    forward pass: ``model`` itself or its DDP / compiled wrapper.
    """
    model: torch.nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    scaler: torch.amp.GradScaler
    spec: dict
    tokenizer_files: dict
    config: dict  # the run's settings, kept in last-path for the resume guard
    forward: torch.nn.Module = None
    epoch: int = 0
    step: int = 0
    best: float = float("-inf")
    history: list = field(default_factory=list)
    progress: EpochProgress | None = None
    precision: str = "float32"  # autocast's dtype name: a resume on the CPU computes as the run did

    def saved_spec(self):
        """The spec written with the weights: once the temperature has been learned, a later fine-tune starts
        from it, as from a CLIP's."""
        if self.config["learn-temperature"] and self.step > 0:
            return self.spec.replace(learned_logit_scale=True)
        return self.spec

    def spent_seconds(self):
        """Training seconds spent before this process started (a time budget counts them; validation does
        not count): the interrupted epoch's record, else the last epoch's."""
        if self.progress is not None and self.progress.seconds is not None:
            return self.progress.seconds
        return self.history[-1].get("run_seconds", 0.0) if self.history else 0.0

    def to_checkpoint(self, rng_states, metrics=None):
        """The "training" entry of last-path: everything ``restore`` needs. ``rng_states``: every rank's
        random streams (all_gather_objects of rng_state()), in rank order."""
        training = {"epoch": self.epoch, "step": self.step}
        if self.progress is not None:
            training["epoch-progress"] = self.progress.to_dict()
        training.update({"best-metric": self.best, "history": self.history})
        if metrics is not None:
            training["metrics"] = metrics
        training.update({"optimizer": self.optimizer.state_dict(), "scheduler": self.scheduler.state_dict(),
                         "scaler": self.scaler.state_dict(), "rng": rng_states, "config": dict(self.config),
                         "precision": self.precision})
        return training

    def write_last(self, path, job, metrics=None):
        """Write last-path (every rank calls this: the random streams are gathered; rank 0 writes)."""
        rng_states = all_gather_objects(rng_state())
        if job.is_main:
            save_checkpoint(path, self.model, self.saved_spec(), self.tokenizer_files,
                            self.to_checkpoint(rng_states, metrics))
        barrier()

    def write_best(self, path, metrics):
        """Write best-path: the weights and the epoch's record, no training state (rank 0 only)."""
        save_checkpoint(path, self.model, self.saved_spec(), self.tokenizer_files,
                        {"epoch": self.epoch, "step": self.step, "metrics": metrics})

    def restore(self, training, job, resume_path):
        """Continue from a last-path's "training" entry: optimizer, schedule, scaler, this rank's random
        streams, and where the run was. A position inside an epoch holds only for the split it was read under."""
        self.optimizer.load_state_dict(training["optimizer"])
        self.scheduler.load_state_dict(training["scheduler"])
        if training["scaler"] and self.scaler.is_enabled():
            self.scaler.load_state_dict(training["scaler"])
        states = training["rng"]
        if len(states) == job.world_size:
            restore_rng_state(states[job.rank])
        else:
            logger.info(f"note: {resume_path} was written by {len(states)} process(es), this run has "
                        f"{job.world_size}; random streams restart from the seed")
        self.epoch, self.step = training["epoch"], training["step"]
        self.best, self.history = training["best-metric"], training["history"]
        entry = training.get("epoch-progress")
        self.progress = EpochProgress.from_dict(entry) if entry else None
        within = f" after batch {self.progress.batches} of epoch {self.epoch + 1}" if self.progress else ""
        logger.info(f"resumed {resume_path} at epoch {self.epoch}{within}, step {self.step}, best mean "
                    f"recall {self.best:.4f}")
        num_workers = self.config["num-workers"]
        if self.progress and (self.progress.world_size, self.progress.num_workers) != (job.world_size, num_workers):
            raise UserError(f"{resume_path} stopped inside an epoch with {self.progress.world_size} process(es) x "
                            f"num-workers {self.progress.num_workers}; resume it with the same, or from a "
                            f"checkpoint written at an epoch's end")
