"""One optimisation step's forward and backward: plain, or through the gradient cache.

Both compute the original project's loss over the global batch (all ranks' features gathered with gradient), so the
gradient equals that of one process holding the whole batch.
"""
from contextlib import nullcontext

import torch
from torch.nn.parallel import DistributedDataParallel

from models.batch_norm import frozen_batch_norm_statistics
from models.loss import contrastive_loss
from utils.device import autocast
from utils.distributed import gather_features


def _forward(model, images, input_ids, device, dtype):
    with autocast(device, dtype):
        image_features, text_features, logit_scale = model(images, input_ids)
    return image_features.float(), text_features.float(), logit_scale.float()


def plain_step(model, images, input_ids, device, dtype, scaler):
    """Forward the whole local batch with a graph; backward the (scaled) loss. Returns the loss tensor.

    A non-finite loss is returned before any backward so that the caller can stop cleanly.
    """
    image_features, text_features, logit_scale = _forward(model, images, input_ids, device, dtype)
    all_image, all_text = gather_features(image_features, text_features)
    loss = contrastive_loss(all_image, all_text, logit_scale)
    if torch.isfinite(loss):
        scaler.scale(loss).backward()
    return loss


def _rng_snapshot(device):
    return torch.get_rng_state(), (torch.cuda.get_rng_state(device) if device.type == "cuda" else None)


def _rng_restore(state, device):
    torch.set_rng_state(state[0])
    if state[1] is not None:
        torch.cuda.set_rng_state(state[1], device)


def grad_cache_step(model, images, input_ids, device, dtype, scaler, chunk_size, replay_rng=True):
    """Gradient cache (Gao et al. 2021): the full-batch contrastive gradient in memory for one chunk.

    1. Embed the batch in chunks of ``chunk_size`` without a graph, remembering the RNG state per chunk.
    2. Compute the loss on all (gathered) embeddings and its gradient w.r.t. every local embedding.
    3. Re-embed each chunk with a graph, replaying its RNG state so dropout draws the same masks, and
       back-propagate the cached embedding gradients. Parameter gradients accumulate over chunks; under DDP
       they are all-reduced once, on the last chunk.
    BatchNorm layers normalise with each chunk's statistics (not the batch's) and update their running
    statistics once per chunk, in the first pass; the replay leaves them as they are.
    Returns the loss tensor (non-finite: returned before any backward).
    """
    chunks = list(zip(images.split(chunk_size), input_ids.split(chunk_size)))
    states, image_parts, text_parts = [], [], []
    with torch.no_grad():
        for chunk_images, chunk_ids in chunks:
            states.append(_rng_snapshot(device))
            image_part, text_part, logit_scale = _forward(model, chunk_images, chunk_ids, device, dtype)
            image_parts.append(image_part)
            text_parts.append(text_part)
    image_features = torch.cat(image_parts).requires_grad_()
    text_features = torch.cat(text_parts).requires_grad_()
    scale = logit_scale.detach().requires_grad_()
    all_image, all_text = gather_features(image_features, text_features)
    loss = contrastive_loss(all_image, all_text, scale)
    if not torch.isfinite(loss):
        return loss
    scaler.scale(loss).backward()
    image_grads = image_features.grad.split(chunk_size)
    text_grads = text_features.grad.split(chunk_size)
    after = _rng_snapshot(device)
    # torch.compile wraps the DDP module: its no_sync is on the module inside.
    ddp = getattr(model, "_orig_mod", model)
    is_ddp = isinstance(ddp, DistributedDataParallel)
    for index, (chunk_images, chunk_ids) in enumerate(chunks):
        last = index == len(chunks) - 1
        with ddp.no_sync() if is_ddp and not last else nullcontext(), frozen_batch_norm_statistics(model):
            if replay_rng:
                _rng_restore(states[index], device)
            image_part, text_part, logit_scale = _forward(model, chunk_images, chunk_ids, device, dtype)
            outputs, grads = [image_part, text_part], [image_grads[index], text_grads[index]]
            if last and logit_scale.requires_grad:
                outputs.append(logit_scale)
                grads.append(scale.grad)
            torch.autograd.backward(outputs, grads)
    _rng_restore(after, device)
    return loss
