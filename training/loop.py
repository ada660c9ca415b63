"""The training loop behind train.py: set up a TrainState, then per epoch ``train_one_epoch`` and ``validate``."""
import logging
import os
import sys
import time

import numpy as np
import torch
from torch.nn.parallel import DistributedDataParallel
from tqdm import tqdm

from data.negatives import read_negatives
from data.sources import open_source
from data.transforms import preprocess_for
from evaluation.embedding import evaluate_table
from evaluation.recall import mean_recall
from models.checkpoint import model_from_checkpoint
from training.optimizer import OptimizerSettings, make_optimizer
from training.resume import resolved_resume, seed_everything, starting_checkpoint
from training.run_context import RunContext
from training.run_length import EpochBudget, RunLength
from training.run_log import RunLog
from training.state import EpochProgress, TrainState
from training.objective import objective_from_config, prepare_for_objective
from training.step import grad_cache_step, plain_step
from training.train_data import DataSettings, training_data
from utils.atomic_file import check_writable
from utils.device import amp_dtype, dtype_name, precision_notice, resolve_device, training_dtype
from utils.distributed import broadcast_buffers, broadcast_object, init_distributed, shutdown
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
    if resumed is None and not spec.learned_logit_scale and not spec.logit_bias:
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
    seed_everything(config["seed"] + job.rank)
    for path in (config["best-path"], config["last-path"], os.path.join(config["log-dir"], "metrics.jsonl")):
        check_writable(path)
    payload = starting_checkpoint(config)
    model, spec, tokenizer = model_from_checkpoint(payload)
    resumed = payload.get("training") if config["resume"] else None
    dtype, why = training_dtype(device, config["use-amp"], config["amp-dtype"], (resumed or {}).get("precision"))
    if job.enabled:  # one precision for every rank, as rank 0 chose it
        dtype, why = broadcast_object((dtype, why))

    pin_memory = device.type == "cuda"
    data = training_data(DataSettings.from_config(config, spec), spec, tokenizer, job, pin_memory)
    valid_source = open_source(config["valid-data"], config["caption-key"], config["shard-timeout"])
    valid_table = valid_source.validation_table(config["strict"])
    valid = Validation(valid_table, tokenizer, data.local_batch, config["num-workers"],
                       read_negatives(valid_source.side_files, valid_table) if valid_source.side_files else None,
                       amp_dtype(device, config["use-amp"]))
    objective = objective_from_config(config)
    lock_notice, spec = _prepare_model(model, spec, config, device, resumed, objective)
    run = RunLength.from_config(config, data.steps_per_epoch, data.batch_size)
    optimizer, scheduler = make_optimizer(model, OptimizerSettings.from_config(config), device, run.total_steps,
                                          run.warmup_steps)
    scaler = torch.amp.GradScaler("cuda", enabled=dtype == torch.float16)
    state = TrainState(model, optimizer, scheduler, scaler, spec, payload["tokenizer"], config, forward=model,
                       precision=dtype_name(dtype))
    if resumed is not None:
        state.restore(resumed, job, config["resume"])
    if job.enabled:
        state.forward = DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    if config["compile"]:
        state.forward = torch.compile(state.forward)

    logger.info(precision_notice(device, config["use-amp"], dtype, why))
    logger.info(speed_notice(config, device, dtype, pin_memory, config["num-workers"] > 0))
    *notices, described = data.notices
    for notice in notices:
        logger.info(notice)
    logger.info(f"towers: {lock_notice}; {objective.describe()}")
    logger.info(f"{described}; {run.describe(data.batch_size)}")
    log = None
    if job.is_main:
        log = RunLog(config["log-dir"], state.history, purge_step=state.step if resumed else None)
        state.history = log.history  # one list: what the log records is what last-path keeps
    context = RunContext.from_config(config, job, device, dtype, log)
    scores = [item["mean_recall"] for item in state.history]  # every rank keeps them: all must stop together

    if config["validate-first"] and resumed is None:
        scores.append(validate(state, context, valid, run)["mean_recall"])
    spent = state.spent_seconds()
    for epoch in run.epoch_indices(state.epoch):
        if run.finished(state.step, spent):
            break
        started = time.perf_counter()
        data.start_epoch(epoch, model, device, dtype, state.progress)  # mining is timed: part of the method's cost
        budget = EpochBudget(run, spent, started)
        loss_sum, batches, samples, margin_sum = train_one_epoch(state, data, objective, context, budget)
        seconds = time.perf_counter() - started
        spent = budget.spent_at_end
        data.end_of_epoch(epoch)
        state.epoch = epoch + 1
        record = validate(state, context, valid, run, loss_sum / max(batches, 1), samples / seconds, seconds, spent,
                          margin_sum / max(batches, 1) if objective.negatives_per_image else None)
        scores.append(record["mean_recall"])
        if stop_early(scores, config["early-stop-patience"]):
            break
    if log:
        log.close()
    logger.info(f"done: best mean recall {state.best:.4f} in {config['best-path']}; last in {config['last-path']}; "
                f"curves in {os.path.join(config['log-dir'], 'curves.png')}")


class Validation:
    """The validation split and how it is encoded: table (CaptionTable), tokenizer, batch size, workers, its
    compositional negatives (data.negatives; None without a negatives.csv): compositional accuracy per epoch,
    and dtype: eval.py's autocast (None: float32), so that best-path is chosen on the numbers eval.py reports
    for it even where training computes in bf16 on a CPU."""

    def __init__(self, table, tokenizer, batch_size, num_workers, negatives=None, dtype=None):
        self.table, self.tokenizer, self.batch_size, self.num_workers = table, tokenizer, batch_size, num_workers
        self.negatives, self.dtype = negatives, dtype


def validate(state, context, valid, run, train_loss=None, samples_per_s=None, seconds=0.0, run_seconds=0.0,
             train_swap_margin=None):
    """Validate the model after ``state.epoch`` epochs (0: the starting model), log the epoch, write best-path
    if it improved and always last-path. Returns the epoch's record (``mean_recall`` among its numbers; with
    compositional negatives, the epoch's mean training swap margin, models.loss.swap_margin)."""
    model = state.model
    # DDP keeps BatchNorm statistics per rank (each saw its own last batch); best.pt holds rank 0's, so
    # every rank validates with rank 0's, as the next training forward would use them anyway.
    broadcast_buffers(model)
    metrics = evaluate_table(model, valid.tokenizer, valid.table, preprocess_for(state.spec), valid.batch_size,
                             valid.num_workers, context.device, valid.dtype, valid.negatives)
    record = {"epoch": state.epoch, "step": state.step, "train_loss": train_loss,
              "lr": state.scheduler.get_last_lr()[0], "temperature": 1.0 / model.scale().item(),
              "samples_per_s": samples_per_s, "train_seconds": seconds, "run_seconds": run_seconds,
              **({"train_swap_margin": train_swap_margin} if train_swap_margin is not None else {}), **metrics,
              "mean_recall": mean_recall(metrics)}
    score = record["mean_recall"]
    improved = score > state.best
    state.best = max(state.best, score)
    trained_part = f"loss {train_loss:.4f}" if train_loss is not None else "before training"
    speed = f"  {samples_per_s:.0f} samples/s" if samples_per_s is not None else ""
    logger.info(f"epoch {run.label(state.epoch)}  {trained_part}  "
                f"i2t R@1/5/10 {record['i2t_r1']:.3f}/{record['i2t_r5']:.3f}/{record['i2t_r10']:.3f}  "
                f"t2i R@1/5/10 {record['t2i_r1']:.3f}/{record['t2i_r5']:.3f}/{record['t2i_r10']:.3f}  "
                f"mean {score:.4f}{'  (best)' if improved else ''}{_binding(record)}{speed}")
    if context.log:
        context.log.epoch(record)
        # best before last: a kill between the two writes is repaired by resuming from the older last.
        if improved:
            state.write_best(context.best_path, record)
    state.write_last(context.last_path, context.job, metrics=record)
    return record


def train_one_epoch(state, data, objective, context, budget=None):
    """One pass over ``data.loader`` (TrainData) from ``state.progress`` (an interrupted epoch's position, then
    cleared): forward, backward, clip, step; last-path every ``context.checkpoint_every`` steps before the
    epoch's last. ``budget`` (EpochBudget) ends the epoch early when the run's train-samples or time-budget is
    spent. Returns (summed loss, batches), both including the interrupted part, the samples this call
    trained on (all ranks), and the summed swap margins (0.0 without compositional negatives)."""
    model, job = state.model, context.job
    state.forward.train()
    progress, steps_per_epoch = state.progress, data.steps_per_epoch
    loss_sum, batches = (progress.loss_sum, progress.batches) if progress else (0.0, 0)
    margin_sum = progress.swap_margin_sum if progress else 0.0
    samples, started, every = 0, time.perf_counter(), context.checkpoint_every
    bar = tqdm(data.loader, desc=f"epoch {budget.run.label(state.epoch + 1) if budget else state.epoch + 1}",
               file=sys.stdout, mininterval=2, total=steps_per_epoch - batches, initial=0,
               disable=None if job.is_main else True, dynamic_ncols=True, leave=False)
    for images, input_ids in bar:
        loss_value = _step(state, images, input_ids, objective, context)
        loss_sum, batches = loss_sum + loss_value, batches + 1
        margin = objective.last_swap_margin if objective.negatives_per_image else None
        margin_sum += margin or 0.0
        samples += images.shape[0] * job.world_size
        lr = state.scheduler.get_last_lr()[0]
        if context.log:
            context.log.step(state.step, loss_value, lr, 1.0 / model.scale().item(), margin)
        bar.set_postfix(loss=f"{loss_value:.3f}", lr=f"{lr:.2e}",
                        samples_per_s=f"{samples / (time.perf_counter() - started):.0f}")
        finished = budget is not None and budget.done(state.step, state.scheduler)
        if every and state.step % every == 0 and batches < steps_per_epoch and not finished:
            state.progress = EpochProgress(batches, loss_sum, budget.spent_at_end if budget else 0.0,
                                           job.world_size, context.num_workers, data.position(), margin_sum)
            state.write_last(context.last_path, job)
        if finished:
            break
    bar.close()
    state.progress = None
    return loss_sum, batches, samples, margin_sum


def _binding(record):
    """The epoch line's binding part: validation compositional accuracy and margin, the training swap margin."""
    parts = []
    if "compositional" in record:
        parts.append(f"compositional {record['compositional']:.3f} (margin {record['compositional-margin']:+.4f})")
    if record.get("train_swap_margin") is not None:
        parts.append(f"train swap margin {record['train_swap_margin']:+.4f}")
    return "".join(f"  {part}" for part in parts)


def _step(state, images, input_ids, objective, context):
    """One optimizer step on a batch (images [b,3,S,S], input_ids [b,L]); returns its loss. TrainingDiverged
    when the loss or, without a gradient scaler, the gradient norm is not finite."""
    model, optimizer, scaler = state.model, state.optimizer, state.scaler
    images = images.to(context.device, non_blocking=True)
    if context.channels_last:
        images = images.contiguous(memory_format=torch.channels_last)
    input_ids = input_ids.to(context.device, non_blocking=True)
    optimizer.zero_grad(set_to_none=True)
    if context.grad_cache_chunk:
        loss = grad_cache_step(state.forward, images, input_ids, context.device, context.dtype, scaler,
                               context.grad_cache_chunk, objective=objective)
    else:
        loss = plain_step(state.forward, images, input_ids, context.device, context.dtype, scaler, objective)
    loss_value = loss.item()
    where = f"at epoch {state.epoch + 1}, step {state.step + 1}"
    if not np.isfinite(loss_value):
        raise TrainingDiverged(f"loss became {loss_value} {where}; stopped. {context.best_path} is unchanged; try "
                               f"a lower learning-rate or use-amp false")
    scaler.unscale_(optimizer)
    norm = torch.nn.utils.clip_grad_norm_(model.parameters(), context.grad_clip or float("inf"))
    if not scaler.is_enabled() and not torch.isfinite(norm):
        # fp16's scaler skips such steps by design; otherwise they would write NaN into the weights.
        raise TrainingDiverged(f"gradient norm became {norm.item()} {where}; stopped before updating the "
                               f"weights. {context.best_path} is unchanged")
    scaler.step(optimizer)
    scaler.update()
    model.clamp_logit_scale()
    state.scheduler.step()
    state.step += 1
    return loss_value


def stop_early(scores, patience):
    """True when the last ``patience`` validations (0 = never) brought no mean recall above the best before."""
    if not patience or len(scores) <= patience:
        return False
    best_before = max(scores[:-patience])
    if max(scores[-patience:]) > best_before:
        return False
    logger.info(f"early stop: no better mean recall than {best_before:.4f} in the last {patience} epoch(s)")
    return True
