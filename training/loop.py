"""The training loop behind train.py: set up, then per epoch ``train_one_epoch`` and ``validate_and_save``."""
import logging
import os
import sys
import time

import numpy as np
import torch
from torch.nn.parallel import DistributedDataParallel
from tqdm import tqdm

from data.shard_table import read_eval_table
from data.transforms import preprocess_for
from models.checkpoint import model_from_checkpoint, save_checkpoint
from models.loss import INFONCE
from training.evaluate import evaluate_table
from training.optimizer import make_optimizer
from training.recall import mean_recall
from training.resume import resolved_resume, restore_training_state, rng_state, seed_everything, starting_checkpoint
from training.run_length import RunLength, agreed_seconds
from training.run_log import RunLog
from training.objective import objective_from_config, prepare_for_objective
from training.step import grad_cache_step, plain_step
from training.train_data import training_data
from utils.atomic_file import check_writable
from utils.device import amp_dtype, precision_notice, resolve_device
from utils.distributed import all_gather_objects, barrier, broadcast_buffers, init_distributed, shutdown
from utils.errors import UserError

logger = logging.getLogger(__name__)


class TrainingDiverged(UserError):
    """The loss became NaN or infinite; the run stops and best-path is left as it was."""

    exit_code = 1


def speed_notice(config, device, dtype, pin_memory, persistent):
    """One line saying which speed features are on, so a slowdown is never silent."""
    def flag(value):
        return "on" if value else "off"

    chunk = config["grad-cache-chunk"]
    return (f"speed: channels_last {flag(config['channels-last'])}, fused AdamW {flag(device.type == 'cuda')}, "
            f"pinned memory {flag(pin_memory)}, persistent workers {flag(persistent)}, "
            f"autocast {str(dtype).replace('torch.', '') if dtype else 'off'}, "
            f"torch.compile {flag(config['compile'])}, grad cache {chunk if chunk else 'off'}, "
            f"grad checkpointing {flag(config['grad-checkpointing'])}")


def train(config):
    """Train with the original project's objective; validate every epoch; keep best-path and last-path.

    Under torchrun every process runs this; ``batch-size`` is the global batch, split evenly across ranks.
    """
    job, device = init_distributed(resolve_device(config["device"]))
    try:
        _train(config, job, device)
    finally:
        shutdown()


def _prepare_model(model, spec, config, device, resumed, objective):
    """Temperature, the objective's parameters, locking, checkpointing and memory format, in place.
    Returns (the towers' lock notice, the spec to save)."""
    if resumed is None and not spec.get("learned-logit-scale") and not spec.get("logit-bias"):
        model.set_temperature(config["temperature"], config["learn-temperature"])
    else:
        if resumed is None:  # a CLIP or an earlier run learned its temperature: the key would throw that away
            logger.info(f"temperature: {1 / model.scale().item():.4f}, the starting model's learned one (the "
                        f"temperature key applies to models whose temperature was never learned)")
        model.logit_scale.requires_grad_(config["learn-temperature"])
    spec = prepare_for_objective(model, spec, objective, config["learn-temperature"])
    lock_notice = model.lock(config["lock-image"], config["lock-image-unlocked"], config["lock-text"],
                             config["lock-text-unlocked"])
    if config["grad-checkpointing"]:
        model.enable_grad_checkpointing()
    model.to(device)
    if config["channels-last"]:
        model.image_backbone.to(memory_format=torch.channels_last)
    return lock_notice, spec


def _train(config, job, device):
    config = resolved_resume(config)
    dtype = amp_dtype(device, config["use-amp"])
    seed_everything(config["seed"] + job.rank)
    for path in (config["best-path"], config["last-path"], os.path.join(config["log-dir"], "metrics.jsonl")):
        check_writable(path)
    payload = starting_checkpoint(config)
    model, spec, tokenizer = model_from_checkpoint(payload)
    resumed = payload.get("training") if config["resume"] else None

    pin_memory = device.type == "cuda"
    data = training_data(config, spec, tokenizer, job, pin_memory)
    valid_table = read_eval_table(config["valid-data"], config["strict"], config["caption-key"],
                                  config["shard-timeout"])
    local_batch, steps_per_epoch = data.local_batch, data.steps_per_epoch

    objective = objective_from_config(config)
    lock_notice, spec = _prepare_model(model, spec, config, device, resumed, objective)
    run = RunLength(config, steps_per_epoch, data.batch_size)
    optimizer, scheduler = make_optimizer(model, config, device, run.total_steps, run.warmup_steps)
    scaler = torch.amp.GradScaler("cuda", enabled=dtype == torch.float16)
    start_epoch, step, best, history, progress = 0, 0, float("-inf"), [], None
    if resumed is not None:
        start_epoch, step, best, history, progress = restore_training_state(resumed, optimizer, scheduler, scaler,
                                                                            job, config["resume"])
        # Inside an epoch the data position is a position in that run's split over processes and workers.
        if progress and (progress.get("world-size"), progress.get("num-workers")) != (job.world_size,
                                                                                      config["num-workers"]):
            raise UserError(f"{config['resume']} stopped inside an epoch with {progress.get('world-size')} "
                            f"process(es) x num-workers {progress.get('num-workers')}; resume it with the same, "
                            f"or from a checkpoint written at an epoch's end")

    trained = model  # the module whose weights are saved; ``model`` may become a DDP/compiled wrapper
    if job.enabled:
        model = DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    if config["compile"]:
        model = torch.compile(model)
    workers = config["num-workers"]
    logger.info(precision_notice(device, config["use-amp"], dtype))
    logger.info(speed_notice(config, device, dtype, pin_memory, workers > 0))
    *notices, described = data.notices
    for notice in notices:
        logger.info(notice)
    logger.info(f"towers: {lock_notice}; {objective.describe()}")
    logger.info(f"{described}; {run.describe(data.batch_size)}")
    log = RunLog(config["log-dir"], history, purge_step=step if resumed else None) if job.is_main else None
    scores = [item["mean_recall"] for item in history]  # every rank keeps them: all must stop together

    def saved_spec(at_step):
        # once it has learned, a later fine-tune starts from this run's temperature, as from a CLIP's
        return {**spec, "learned-logit-scale": True} if config["learn-temperature"] and at_step > 0 else spec

    def checkpoint_within(epoch, at_step, done):
        """last-path inside epoch ``epoch`` (0-based) after ``done`` = {"batches", "loss_sum", "seconds"} of it."""
        rng_states = all_gather_objects(rng_state())
        if data.miner:
            done = {**done, **data.miner.state()}
        if job.is_main:
            save_checkpoint(config["last-path"], trained, saved_spec(at_step), payload["tokenizer"], {
                "epoch": epoch, "step": at_step, "epoch-progress": dict(done), "best-metric": best,
                "history": log.history, "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                "scaler": scaler.state_dict(), "rng": rng_states, "config": dict(config)})
        barrier()

    def validate(epoch, train_loss, samples_per_s, seconds, run_seconds=0.0):
        """Validate, log and save the epoch (0: the starting model); returns the new best mean recall."""
        # DDP keeps BatchNorm statistics per rank (each saw its own last batch); best.pt holds rank 0's, so
        # every rank validates with rank 0's, as the next training forward would use them anyway.
        broadcast_buffers(trained)
        metrics = evaluate_table(trained, tokenizer, valid_table, preprocess_for(spec), local_batch,
                                 workers, device, dtype)
        record = {"epoch": epoch, "step": step, "train_loss": train_loss, "lr": scheduler.get_last_lr()[0],
                  "temperature": 1.0 / trained.scale().item(), "samples_per_s": samples_per_s,
                  "train_seconds": seconds, "run_seconds": run_seconds, **metrics, "mean_recall": mean_recall(metrics)}
        scores.append(record["mean_recall"])
        return validate_and_save(record, best, config, trained, saved_spec(step), payload["tokenizer"], optimizer,
                                 scheduler, scaler, job, log, run)

    if config["validate-first"] and resumed is None:
        best = validate(0, None, None, 0.0)
    # training seconds spent before this call (a time budget counts them; validation is not counted);
    # a mid-epoch checkpoint records the run's total so far
    spent = (progress["seconds"] if progress and "seconds" in progress
             else history[-1].get("run_seconds", 0.0) if history else 0.0)
    for epoch in run.epoch_indices(start_epoch):
        if run.finished(step, spent):
            break
        started = time.perf_counter()
        if data.miner:  # mining is part of the method's cost: inside the timed part
            if progress and "order" in progress:
                data.miner.restore(progress)
            else:
                data.miner.mine(trained, epoch, device, dtype)
        data.set_epoch(epoch, progress["batches"] if progress else 0)
        budget = EpochBudget(run, spent, started)
        step, loss_sum, batches, samples = train_one_epoch(
            model, trained, data.loader, optimizer, scheduler, scaler, config, epoch, step, device, dtype, job, log,
            progress, data.steps_per_epoch, checkpoint_within, objective, budget)
        progress = None
        seconds = time.perf_counter() - started
        spent = budget.spent_at_end
        data.end_of_epoch(epoch)
        best = validate(epoch + 1, loss_sum / max(batches, 1), samples / seconds, seconds, spent)
        if stop_early(scores, config["early-stop-patience"]):
            break
    if log:
        log.close()
    logger.info(f"done: best mean recall {best:.4f} in {config['best-path']}; last in {config['last-path']}; "
                f"curves in {os.path.join(config['log-dir'], 'curves.png')}")


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


def stop_early(scores, patience):
    """True when the last ``patience`` validations (0 = never) brought no mean recall above the best before."""
    if not patience or len(scores) <= patience:
        return False
    best_before = max(scores[:-patience])
    if max(scores[-patience:]) > best_before:
        return False
    logger.info(f"early stop: no better mean recall than {best_before:.4f} in the last {patience} epoch(s)")
    return True


def train_one_epoch(model, trained, loader, optimizer, scheduler, scaler, config, epoch, step, device, dtype, job,
                    log, progress=None, steps_per_epoch=None, checkpoint_within=None, objective=INFONCE,
                    budget=None):
    """One pass over ``loader``: forward, backward, clip, step.

    ``model`` is what runs the forward (maybe DDP/compiled), ``trained`` the plain module whose parameters
    are clipped and whose logit scale is clamped. ``progress`` ({"batches", "loss_sum", "seconds", ...}) is what an
    interrupted run did of this epoch (the loader starts after it); ``checkpoint_within(epoch, step, progress)``
    is called every checkpoint-every-steps steps before the epoch's last. ``budget`` (EpochBudget) ends the
    epoch early when the run's train-samples or time-budget is spent. Returns (global step, summed loss,
    batches, samples), the loss and batches including the interrupted part, the samples this call's alone.
    """
    model.train()
    loss_sum, batches = (progress["loss_sum"], progress["batches"]) if progress else (0.0, 0)
    samples, started, every = 0, time.perf_counter(), config["checkpoint-every-steps"]
    bar = tqdm(loader, desc=f"epoch {budget.run.label(epoch + 1) if budget else epoch + 1}", file=sys.stdout, mininterval=2,
               total=steps_per_epoch - batches if steps_per_epoch else None, initial=0,
               disable=None if job.is_main else True, dynamic_ncols=True, leave=False)
    for images, input_ids in bar:
        images = images.to(device, non_blocking=True)
        if config["channels-last"]:
            images = images.contiguous(memory_format=torch.channels_last)
        input_ids = input_ids.to(device, non_blocking=True)
        optimizer.zero_grad(set_to_none=True)
        if config["grad-cache-chunk"]:
            loss = grad_cache_step(model, images, input_ids, device, dtype, scaler, config["grad-cache-chunk"],
                                   objective=objective)
        else:
            loss = plain_step(model, images, input_ids, device, dtype, scaler, objective)
        loss_value = loss.item()
        if not np.isfinite(loss_value):
            raise TrainingDiverged(f"loss became {loss_value} at epoch {epoch + 1}, step {step + 1}; "
                                   f"stopped. {config['best-path']} is unchanged; try a lower "
                                   f"learning-rate or use-amp false")
        scaler.unscale_(optimizer)
        norm = torch.nn.utils.clip_grad_norm_(trained.parameters(), config["grad-clip"] or float("inf"))
        if not scaler.is_enabled() and not torch.isfinite(norm):
            # fp16's scaler skips such steps by design; otherwise they would write NaN into the weights.
            raise TrainingDiverged(f"gradient norm became {norm.item()} at epoch {epoch + 1}, step {step + 1}; "
                                   f"stopped before updating the weights. {config['best-path']} is unchanged")
        scaler.step(optimizer)
        scaler.update()
        trained.clamp_logit_scale()
        scheduler.step()
        step += 1
        loss_sum, batches = loss_sum + loss_value, batches + 1
        samples += images.shape[0] * job.world_size
        lr = scheduler.get_last_lr()[0]
        if log:
            log.step(step, loss_value, lr, 1.0 / trained.scale().item())
        bar.set_postfix(loss=f"{loss_value:.3f}", lr=f"{lr:.2e}",
                        samples_per_s=f"{samples / (time.perf_counter() - started):.0f}")
        finished = budget is not None and budget.done(step, scheduler)
        if every and checkpoint_within and step % every == 0 and batches < (steps_per_epoch or 0) and not finished:
            checkpoint_within(epoch, step, {"batches": batches, "loss_sum": loss_sum, "world-size": job.world_size,
                                            "num-workers": config["num-workers"],
                                            "seconds": budget.spent_at_end if budget else 0.0})
        if finished:
            break
    bar.close()
    return step, loss_sum, batches, samples


def validate_and_save(record, best, config, trained, spec, tokenizer_files, optimizer, scheduler, scaler, job,
                      log, run=None):
    """Report the epoch, log it, write best-path if it improved and always last-path. Returns the new best.

    ``record`` holds the epoch's training numbers and validation recalls (``mean_recall`` among them).
    """
    score = record["mean_recall"]
    improved = score > best
    best = max(best, score)
    epoch = record["epoch"]
    trained_part = (f"loss {record['train_loss']:.4f}" if record["train_loss"] is not None
                    else "before training")
    speed = f"  {record['samples_per_s']:.0f} samples/s" if record["samples_per_s"] is not None else ""
    logger.info(f"epoch {run.label(epoch) if run else epoch}  {trained_part}  "
                f"i2t R@1/5/10 {record['i2t_r1']:.3f}/{record['i2t_r5']:.3f}/{record['i2t_r10']:.3f}  "
                f"t2i R@1/5/10 {record['t2i_r1']:.3f}/{record['t2i_r5']:.3f}/{record['t2i_r10']:.3f}  "
                f"mean {score:.4f}{'  (best)' if improved else ''}{speed}")
    rng_states = all_gather_objects(rng_state())
    if job.is_main:
        log.epoch(record)
        # best before last: a kill between the two writes is repaired by resuming from the older last.
        if improved:
            save_checkpoint(config["best-path"], trained, spec, tokenizer_files,
                            {"epoch": epoch, "step": record["step"], "metrics": record})
        save_checkpoint(config["last-path"], trained, spec, tokenizer_files, {
            "epoch": epoch, "step": record["step"], "best-metric": best, "history": log.history,
            "metrics": record, "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
            "scaler": scaler.state_dict(), "rng": rng_states, "config": dict(config)})
    barrier()
    return best
