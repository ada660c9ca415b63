"""The training loop behind train.py: one function you can read top to bottom."""
import os
import random
import sys
import tempfile
import time

import numpy as np
import torch
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, DistributedSampler, RandomSampler
from tqdm import tqdm

from data.caption_table import read_caption_table
from data.datasets import PairCollate, TrainImages
from data.transforms import augmentation_policy, eval_transform, train_transform
from models.checkpoint import model_from_checkpoint, read_checkpoint, save_checkpoint
from utils.device import amp_dtype, precision_notice, resolve_device
from utils.distributed import all_gather_objects, barrier, init_distributed, shutdown
from utils.embedding import evaluate_table
from utils.errors import UserError
from utils.metrics import mean_recall
from utils.run_log import RunLog
from utils.schedule import warmup_cosine
from utils.train_step import grad_cache_step, plain_step


class TrainingDiverged(UserError):
    """The loss became NaN or infinite; the run stops and best-path is left as it was."""

    exit_code = 1


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


def parameter_groups(model, weight_decay):
    """Weight decay on matrices and kernels only; none on biases, norms and the logit scale."""
    decay, no_decay = [], []
    for parameter in model.parameters():
        if parameter.requires_grad:
            (decay if parameter.ndim >= 2 else no_decay).append(parameter)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


# Keys whose change would make a resumed run differ from the run it continues.
RUN_DEFINING_KEYS = ("epochs", "learning-rate", "lr-schedule", "batch-size", "weight-decay", "warmup-steps", "learn-temperature",
                     "train-data", "seed", "use-augment", "augment-flip", "augment-color", "augment-crop-scale",
                     "grad-cache-chunk", "lock-image", "lock-image-unlocked", "lock-text", "lock-text-unlocked")


def check_resume_config(saved, config):
    """Refuse a resume whose run-defining settings differ from those the checkpoint was trained with."""
    changed = [f"{k}: {saved[k]!r} -> {config[k]!r}" for k in RUN_DEFINING_KEYS if k in saved and saved[k] != config[k]]
    if changed:
        raise UserError(f"--resume {config['resume']} was trained with other settings ({'; '.join(changed)}). "
                        f"Resume with the same settings, or start a new run from its weights with "
                        f"--load-path {config['resume']} --overwrite true")


def check_writable(path):
    """Fail before training, not after the first epoch, when an output cannot be written."""
    directory = os.path.dirname(os.path.abspath(path)) or "."
    try:
        os.makedirs(directory, exist_ok=True)
        probe = tempfile.NamedTemporaryFile(dir=directory, prefix=".probe-")
        probe.close()
    except OSError as error:
        raise UserError(f"cannot write '{path}': {error.strerror or error}") from None
    if os.path.isdir(path):
        raise UserError(f"cannot write '{path}': it is a directory")


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
    """Train with the seed's objective; validate every epoch; keep best-path and last-path.

    Under torchrun every process runs this; ``batch-size`` is the global batch, split evenly across ranks.
    """
    job, device = init_distributed(resolve_device(config["device"]))
    try:
        _train(config, job, device)
    finally:
        shutdown()


def _train(config, job, device):
    say = print if job.is_main else (lambda *args, **kwargs: None)
    quiet = None if job.is_main else (lambda line: None)
    dtype = amp_dtype(device, config["use-amp"])
    seed_everything(config["seed"] + job.rank)
    for path in (config["best-path"], config["last-path"], os.path.join(config["log-dir"], "metrics.jsonl")):
        check_writable(path)
    payload = starting_checkpoint(config)
    model, spec, tokenizer = model_from_checkpoint(payload)
    tokenizer_files = payload["tokenizer"]
    resumed = payload.get("training") if config["resume"] else None

    train_table = read_caption_table(config["train-data"], strict=config["strict"], report=quiet)
    valid_table = read_caption_table(config["valid-data"], strict=config["strict"], report=quiet)
    image_size = spec["image-size"]
    if config["use-augment"]:
        flip, colour, notice = augmentation_policy(train_table.captions, config["augment-flip"],
                                                   config["augment-color"])
        transform = train_transform(image_size, config["augment-crop-scale"], flip, colour)
    else:
        transform, notice = eval_transform(image_size), "augmentation: off"
    if len(train_table.images) < 2:
        raise UserError(f"{config['train-data']}: {len(train_table.images)} usable image(s); contrastive "
                        f"training needs at least 2")
    dataset = TrainImages(train_table, transform, config["seed"], draft_size=image_size)
    batch_size = min(config["batch-size"], len(dataset))
    if batch_size < config["batch-size"]:
        say(f"batch-size {config['batch-size']} > {len(dataset)} training images; using {batch_size}")
    if batch_size % job.world_size:
        raise UserError(f"batch-size {batch_size} is the global batch and must divide evenly over "
                        f"{job.world_size} processes")
    local_batch = batch_size // job.world_size
    steps_per_epoch = len(dataset) // batch_size
    total_steps = steps_per_epoch * config["epochs"]

    if resumed is None:
        model.set_temperature(config["temperature"], config["learn-temperature"])
    else:
        model.logit_scale.requires_grad_(config["learn-temperature"])
    lock_notice = model.lock(config["lock-image"], config["lock-image-unlocked"], config["lock-text"],
                             config["lock-text-unlocked"])
    if config["grad-checkpointing"]:
        model.enable_grad_checkpointing()
    model.to(device)
    if config["channels-last"]:
        model.image_backbone.to(memory_format=torch.channels_last)
    optimizer = torch.optim.AdamW(parameter_groups(model, config["weight-decay"]), lr=config["learning-rate"],
                                  fused=device.type == "cuda")
    scheduler = warmup_cosine(optimizer, config["warmup-steps"], total_steps, config["lr-schedule"] == "cosine")
    scaler = torch.amp.GradScaler("cuda", enabled=dtype == torch.float16)
    start_epoch, step, best, history = 0, 0, float("-inf"), []
    if resumed is not None:
        optimizer.load_state_dict(resumed["optimizer"])
        scheduler.load_state_dict(resumed["scheduler"])
        if resumed["scaler"] and scaler.is_enabled():
            scaler.load_state_dict(resumed["scaler"])
        start_epoch, step, best, history = (resumed["epoch"], resumed["step"], resumed["best-metric"],
                                            resumed["history"])
        states = resumed["rng"]
        if len(states) == job.world_size:
            restore_rng_state(states[job.rank])
        else:
            say(f"note: {config['resume']} was written by {len(states)} process(es), this run has "
                f"{job.world_size}; random streams restart from the seed")
        say(f"resumed {config['resume']} at epoch {start_epoch}, step {step}, best mean recall {best:.4f}")

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
    loader = DataLoader(dataset, batch_size=local_batch, sampler=sampler, drop_last=True,
                        collate_fn=PairCollate(tokenizer), num_workers=workers, pin_memory=pin_memory,
                        persistent_workers=persistent, prefetch_factor=4 if workers else None)

    say(precision_notice(device, config["use-amp"], dtype))
    say(speed_notice(config, device, dtype, pin_memory, persistent))
    say(notice)
    say(f"towers: {lock_notice}")
    say(f"training: {len(dataset)} images, {len(train_table.captions)} captions, global batch {batch_size}"
        f"{f' ({job.world_size} processes x {local_batch})' if job.enabled else ''}, {steps_per_epoch} "
        f"steps/epoch, epochs {start_epoch + 1}..{config['epochs']}")
    log = RunLog(config["log-dir"], history, purge_step=step if resumed else None) if job.is_main else None
    for epoch in range(start_epoch, config["epochs"]):
        dataset.set_epoch(epoch)
        if job.enabled:
            sampler.set_epoch(epoch)
        else:
            sampler.generator.manual_seed(config["seed"] * 7919 + epoch)
        model.train()
        loss_sum, batches, samples, started = 0.0, 0, 0, time.perf_counter()
        bar = tqdm(loader, desc=f"epoch {epoch + 1}/{config['epochs']}", file=sys.stdout, mininterval=2,
                   disable=None if job.is_main else True, dynamic_ncols=True, leave=False)
        for batch in bar:
            if batch is None:
                continue
            images, input_ids = batch
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
        seconds = time.perf_counter() - started
        metrics = evaluate_table(trained, tokenizer, valid_table, eval_transform(image_size), local_batch,
                                 workers, device, dtype)
        score = mean_recall(metrics)
        record = {"epoch": epoch + 1, "step": step, "train_loss": loss_sum / max(batches, 1),
                  "lr": scheduler.get_last_lr()[0], "temperature": 1.0 / trained.scale().item(),
                  "samples_per_s": samples / seconds, "train_seconds": seconds, **metrics, "mean_recall": score}
        improved = score > best
        best = max(best, score)
        say(f"epoch {epoch + 1}/{config['epochs']}  loss {record['train_loss']:.4f}  "
            f"i2t R@1/5/10 {metrics['i2t_r1']:.3f}/{metrics['i2t_r5']:.3f}/{metrics['i2t_r10']:.3f}  "
            f"t2i R@1/5/10 {metrics['t2i_r1']:.3f}/{metrics['t2i_r5']:.3f}/{metrics['t2i_r10']:.3f}  "
            f"mean {score:.4f}{'  (best)' if improved else ''}  {samples / seconds:.0f} samples/s", flush=True)
        rng_states = all_gather_objects(rng_state())
        if job.is_main:
            log.epoch(record)
            # best before last: a kill between the two writes is repaired by resuming from the older last.
            if improved:
                save_checkpoint(config["best-path"], trained, spec, tokenizer_files,
                                {"epoch": epoch + 1, "step": step, "metrics": record})
            save_checkpoint(config["last-path"], trained, spec, tokenizer_files, {
                "epoch": epoch + 1, "step": step, "best-metric": best, "history": log.history,
                "metrics": record, "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                "scaler": scaler.state_dict(), "rng": rng_states, "config": dict(config)})
        barrier()
    if log:
        log.close()
    say(f"done: best mean recall {best:.4f} in {config['best-path']}; last in {config['last-path']}; "
        f"curves in {os.path.join(config['log-dir'], 'curves.png')}")
