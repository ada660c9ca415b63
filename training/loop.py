"""The training loop behind train.py: set up, then per epoch ``train_one_epoch`` and ``validate_and_save``."""
import logging
import os
import sys
import time

import numpy as np
import torch
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, DistributedSampler, RandomSampler
from tqdm import tqdm

from data.caption_table import read_caption_table
from data.datasets import PairCollate, TrainImages
from data.transforms import augmentation_policy, normalization, preprocess_for, train_transform
from models.checkpoint import model_from_checkpoint, save_checkpoint
from training.evaluate import evaluate_table
from training.optimizer import make_optimizer
from training.recall import mean_recall
from training.resume import restore_training_state, rng_state, seed_everything, starting_checkpoint
from training.run_log import RunLog
from training.step import grad_cache_step, plain_step
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


def _training_images(config, train_table, spec):
    """The training dataset with the configured augmentation, and a line saying what augmentation is on."""
    image_size = spec["image-size"]
    if config["use-augment"]:
        flip, color, notice = augmentation_policy(train_table.captions, config["augment-flip"],
                                                  config["augment-color"])
        transform = train_transform(image_size, config["augment-crop-scale"], flip, color, *normalization(spec))
    else:
        transform, notice = preprocess_for(spec), "augmentation: off"
    if len(train_table.images) < 2:
        raise UserError(f"{config['train-data']}: {len(train_table.images)} usable image(s); contrastive "
                        f"training needs at least 2")
    return TrainImages(train_table, transform, config["seed"], draft_size=image_size), notice


def _global_batch(requested, dataset_size, world_size):
    """(global batch, per-process batch): the requested batch, capped at the dataset, split over ranks."""
    batch_size = min(requested, dataset_size)
    if batch_size < requested:
        logger.info(f"batch-size {requested} > {dataset_size} training images; using {batch_size}")
    if batch_size % world_size:
        raise UserError(f"batch-size {batch_size} is the global batch and must divide evenly over "
                        f"{world_size} processes")
    return batch_size, batch_size // world_size


def _prepare_model(model, spec, config, device, resumed):
    """Temperature, locking, checkpointing and memory format, in place. Returns the towers' lock notice."""
    if resumed is None and not spec.get("learned-logit-scale"):
        model.set_temperature(config["temperature"], config["learn-temperature"])
    else:
        if resumed is None:  # a CLIP or an earlier run learned its temperature: the key would throw that away
            logger.info(f"temperature: {1 / model.scale().item():.4f}, the starting model's learned one (the "
                        f"temperature key applies to models whose temperature was never learned)")
        model.logit_scale.requires_grad_(config["learn-temperature"])
    lock_notice = model.lock(config["lock-image"], config["lock-image-unlocked"], config["lock-text"],
                             config["lock-text-unlocked"])
    if config["grad-checkpointing"]:
        model.enable_grad_checkpointing()
    model.to(device)
    if config["channels-last"]:
        model.image_backbone.to(memory_format=torch.channels_last)
    return lock_notice


def _train(config, job, device):
    dtype = amp_dtype(device, config["use-amp"])
    seed_everything(config["seed"] + job.rank)
    for path in (config["best-path"], config["last-path"], os.path.join(config["log-dir"], "metrics.jsonl")):
        check_writable(path)
    payload = starting_checkpoint(config)
    model, spec, tokenizer = model_from_checkpoint(payload)
    resumed = payload.get("training") if config["resume"] else None

    train_table = read_caption_table(config["train-data"], strict=config["strict"])
    valid_table = read_caption_table(config["valid-data"], strict=config["strict"])
    dataset, augmentation_notice = _training_images(config, train_table, spec)
    batch_size, local_batch = _global_batch(config["batch-size"], len(dataset), job.world_size)
    steps_per_epoch = len(dataset) // batch_size

    lock_notice = _prepare_model(model, spec, config, device, resumed)
    if config["learn-temperature"]:  # a later fine-tune starts from this run's temperature, as from a CLIP's
        spec = {**spec, "learned-logit-scale": True}
    optimizer, scheduler = make_optimizer(model, config, device, steps_per_epoch * config["epochs"])
    scaler = torch.amp.GradScaler("cuda", enabled=dtype == torch.float16)
    start_epoch, step, best, history = 0, 0, float("-inf"), []
    if resumed is not None:
        start_epoch, step, best, history = restore_training_state(resumed, optimizer, scheduler, scaler, job,
                                                                  config["resume"])

    trained = model  # the module whose weights are saved; ``model`` may become a DDP/compiled wrapper
    if job.enabled:
        model = DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    if config["compile"]:
        model = torch.compile(model)
    workers = config["num-workers"]
    pin_memory, persistent = device.type == "cuda", workers > 0
    if job.enabled:
        sampler = DistributedSampler(dataset, job.world_size, job.rank, shuffle=True, seed=config["seed"],
                                     drop_last=True)
    else:
        sampler = RandomSampler(dataset, generator=torch.Generator())
    # The loader draws its workers' base seed from its own generator, not the global one: a resumed run
    # creates its iterator at another epoch than an uninterrupted run with persistent workers, and a draw
    # from the global generator there would shift every later dropout mask.
    loader = DataLoader(dataset, batch_size=local_batch, sampler=sampler, drop_last=True,
                        collate_fn=PairCollate(tokenizer), num_workers=workers, pin_memory=pin_memory,
                        persistent_workers=persistent, prefetch_factor=4 if workers else None,
                        generator=torch.Generator().manual_seed(config["seed"]))

    logger.info(precision_notice(device, config["use-amp"], dtype))
    logger.info(speed_notice(config, device, dtype, pin_memory, persistent))
    logger.info(augmentation_notice)
    logger.info(f"towers: {lock_notice}")
    logger.info(f"training: {len(dataset)} images, {len(train_table.captions)} captions, global batch {batch_size}"
                f"{f' ({job.world_size} processes x {local_batch})' if job.enabled else ''}, {steps_per_epoch} "
                f"steps/epoch, epochs {start_epoch + 1}..{config['epochs']}")
    log = RunLog(config["log-dir"], history, purge_step=step if resumed else None) if job.is_main else None
    scores = [item["mean_recall"] for item in history]  # every rank keeps them: all must stop together

    def validate(epoch, train_loss, samples_per_s, seconds):
        """Validate, log and save the epoch (0: the starting model); returns the new best mean recall."""
        # DDP keeps BatchNorm statistics per rank (each saw its own last batch); best.pt holds rank 0's, so
        # every rank validates with rank 0's, as the next training forward would use them anyway.
        broadcast_buffers(trained)
        metrics = evaluate_table(trained, tokenizer, valid_table, preprocess_for(spec), local_batch,
                                 workers, device, dtype)
        record = {"epoch": epoch, "step": step, "train_loss": train_loss, "lr": scheduler.get_last_lr()[0],
                  "temperature": 1.0 / trained.scale().item(), "samples_per_s": samples_per_s,
                  "train_seconds": seconds, **metrics, "mean_recall": mean_recall(metrics)}
        scores.append(record["mean_recall"])
        return validate_and_save(record, best, config, trained, spec, payload["tokenizer"], optimizer, scheduler,
                                 scaler, job, log)

    if config["validate-first"] and resumed is None:
        best = validate(0, None, None, 0.0)
    for epoch in range(start_epoch, config["epochs"]):
        dataset.set_epoch(epoch)
        if job.enabled:
            sampler.set_epoch(epoch)
        else:
            sampler.generator.manual_seed(config["seed"] * 7919 + epoch)
        started = time.perf_counter()
        step, loss_sum, batches, samples = train_one_epoch(
            model, trained, loader, optimizer, scheduler, scaler, config, epoch, step, device, dtype, job, log)
        seconds = time.perf_counter() - started
        best = validate(epoch + 1, loss_sum / max(batches, 1), samples / seconds, seconds)
        if stop_early(scores, config["early-stop-patience"]):
            break
    if log:
        log.close()
    logger.info(f"done: best mean recall {best:.4f} in {config['best-path']}; last in {config['last-path']}; "
                f"curves in {os.path.join(config['log-dir'], 'curves.png')}")


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
                    log):
    """One pass over ``loader``: forward, backward, clip, step.

    ``model`` is what runs the forward (maybe DDP/compiled), ``trained`` the plain module whose parameters
    are clipped and whose logit scale is clamped. Returns (global step, summed loss, batches, samples).
    """
    model.train()
    loss_sum, batches, samples, started = 0.0, 0, 0, time.perf_counter()
    bar = tqdm(loader, desc=f"epoch {epoch + 1}/{config['epochs']}", file=sys.stdout, mininterval=2,
               disable=None if job.is_main else True, dynamic_ncols=True, leave=False)
    for images, input_ids in bar:
        images = images.to(device, non_blocking=True)
        if config["channels-last"]:
            images = images.contiguous(memory_format=torch.channels_last)
        input_ids = input_ids.to(device, non_blocking=True)
        optimizer.zero_grad(set_to_none=True)
        if config["grad-cache-chunk"]:
            loss = grad_cache_step(model, images, input_ids, device, dtype, scaler, config["grad-cache-chunk"])
        else:
            loss = plain_step(model, images, input_ids, device, dtype, scaler)
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
    bar.close()
    return step, loss_sum, batches, samples


def validate_and_save(record, best, config, trained, spec, tokenizer_files, optimizer, scheduler, scaler, job,
                      log):
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
    logger.info(f"epoch {epoch}/{config['epochs']}  {trained_part}  "
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
