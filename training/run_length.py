"""How long a run trains: a number of epochs, of samples seen (train-samples) or of minutes (time-budget).

A budget of samples or minutes lets one recipe fit a thousand images as well as a hundred thousand: the
learning-rate schedule spans the budget, whatever an epoch is.
"""
import math
import time

from utils.distributed import all_gather_objects
from utils.errors import UserError

# With a time budget the schedule's length is projected from the pace; before this many steps the pace
# still includes the workers' start-up, so the first guess (the epochs key) stands.
PACE_MIN_STEPS = 5
# Under a budget the warmup takes at most this share of the run: a short budget still decays.
WARMUP_SHARE = 0.2


class RunLength:
    """``epochs`` (an upper bound for the loop), ``total_steps`` (what the schedule spans, updated by
    ``steer`` under a time budget), ``finished(step, seconds)`` and ``label(epoch)`` for the logs."""

    def __init__(self, epochs, warmup_steps, steps_per_epoch, batch_size, train_samples=None, minutes=None):
        self.configured_warmup = warmup_steps
        self.samples = train_samples
        self.seconds = minutes * 60 if minutes else None
        self.steps_per_epoch = steps_per_epoch
        if self.samples:
            self.total_steps = max(1, self.samples // batch_size)
            self.epochs = math.ceil(self.total_steps / steps_per_epoch)
            self.warmup_steps = self.capped_warmup(self.total_steps)
        elif self.seconds:
            self.total_steps = steps_per_epoch * epochs  # a first guess; steer() fits it to the pace
            self.epochs = None
            self.warmup_steps = self.configured_warmup
        else:
            self.total_steps = steps_per_epoch * epochs
            self.epochs = epochs
            self.warmup_steps = self.configured_warmup

    @classmethod
    def from_config(cls, config, steps_per_epoch, batch_size):
        """From train.py's epochs, warmup-steps, train-samples and time-budget (at most one of the last two)."""
        if config["train-samples"] and config["time-budget"]:
            raise UserError(f"{config['config-path']}: train-samples and time-budget both set; a run's length "
                            f"is one of them (or epochs, when both are null)")
        return cls(config["epochs"], config["warmup-steps"], steps_per_epoch, batch_size, config["train-samples"],
                   config["time-budget"])

    def capped_warmup(self, total_steps):
        return min(self.configured_warmup, int(WARMUP_SHARE * total_steps))

    def describe(self, batch_size):
        capped = (f"; warmup {self.warmup_steps} steps, at most {WARMUP_SHARE:.0%} of the run"
                  if self.warmup_steps < self.configured_warmup else "")
        if self.samples:
            return (f"length: train-samples {self.samples} = {self.total_steps} steps of {batch_size} "
                    f"({self.epochs} epoch(s); the epochs key is not used{capped})")
        if self.seconds:
            return (f"length: time-budget {self.seconds / 60:g} min of training (validation not counted; the "
                    f"schedule and its warmup, at most {WARMUP_SHARE:.0%} of the run, are fitted to the measured "
                    f"pace; the epochs key is not used)")
        return f"length: {self.epochs} epochs = {self.total_steps} steps"

    def label(self, epoch):
        """'3/8' with a known number of epochs, '3' under a time budget."""
        return f"{epoch}/{self.epochs}" if self.epochs else f"{epoch}"

    def epoch_indices(self, start):
        epoch = start
        while self.epochs is None or epoch < self.epochs:
            yield epoch
            epoch += 1

    def finished(self, step, seconds):
        """True once the budget is spent: ``step`` global steps done, ``seconds`` of training (agreed by all
        ranks, see agreed_seconds)."""
        if self.seconds:
            return seconds >= self.seconds
        return step >= self.total_steps

    def steer(self, scheduler, step, seconds):
        """Under a time budget, stretch or shrink the schedule (and its warmup) to the steps the pace so far
        projects."""
        if not self.seconds or step < PACE_MIN_STEPS or seconds <= 0:
            return
        projected = max(step + 1, round(step * self.seconds / seconds))
        self.total_steps, self.warmup_steps = projected, self.capped_warmup(projected)
        for schedule in scheduler.lr_lambdas:
            schedule.total_steps, schedule.warmup_steps = projected, self.warmup_steps


def agreed_seconds(seconds):
    """The largest of every rank's ``seconds``: all ranks must stop a time budget at the same step."""
    return max(all_gather_objects(seconds))


class EpochBudget:
    """The run's length as seen inside one epoch: ``spent`` training seconds before it, the epoch's start
    (perf_counter). ``done(step, scheduler)`` says whether the run's budget is spent, and steers a time-budget
    schedule."""

    def __init__(self, run, spent, started):
        self.run, self.spent, self.started = run, spent, started
        self.spent_at_end = spent

    def done(self, step, scheduler):
        seconds = self.spent + time.perf_counter() - self.started
        if self.run.seconds:
            seconds = agreed_seconds(seconds)
            self.run.steer(scheduler, step, seconds)
        self.spent_at_end = seconds
        return self.run.finished(step, seconds)
