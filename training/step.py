"""One optimisation step's forward and backward: plain, or through the gradient cache.

Both compute the configured objective (models/loss.py) over the global batch (all ranks' features gathered with
gradient), so the gradient equals that of one process holding the whole batch. A batch holds B images and
B x k captions (k = captions-per-image), image-major: image i's captions are rows i*k .. i*k+k-1.
"""
from contextlib import nullcontext

import torch
from torch.nn.parallel import DistributedDataParallel

from models.batch_norm import frozen_batch_norm_statistics
from models.loss import INFONCE
from models.pairing import text_keys
from training.gradients import gradients_allocated_first
from utils.device import autocast
from utils.distributed import gather_features, gather_tensor
from utils.memory import release_free_heap


def _forward(model, images, input_ids, device, dtype):
    """(image [b,D], text [t,D], logit_scale, logit_bias or None), in float32."""
    with autocast(device, dtype):
        outputs = model(images, input_ids)
    image_features, text_features, logit_scale = (output.float() for output in outputs[:3])
    return image_features, text_features, logit_scale, outputs[3].float() if len(outputs) > 3 else None


def _all_keys(model, input_ids, objective):
    """Every rank's text keys [T] in rank order, for an objective whose equal captions are positives; else None."""
    if not objective.same_caption_positives:
        return None
    inner = getattr(model, "_orig_mod", model)  # torch.compile's wrapper, then DDP's
    inner = getattr(inner, "module", inner)
    return gather_tensor(text_keys(input_ids, inner.pad_token_id))


def plain_step(model, images, input_ids, device, dtype, scaler, objective=INFONCE):
    """Forward the whole local batch with a graph; backward the (scaled) loss. Returns the loss tensor.

    A non-finite loss is returned before any backward so that the caller can stop cleanly.
    """
    image_features, text_features, logit_scale, logit_bias = _forward(model, images, input_ids, device, dtype)
    all_image, all_text = gather_features(image_features, text_features)
    loss = objective(all_image, all_text, logit_scale, logit_bias, keys=_all_keys(model, input_ids, objective))
    if torch.isfinite(loss):
        scaler.scale(loss).backward()
    return loss


def _rng_snapshot(device):
    return torch.get_rng_state(), (torch.cuda.get_rng_state(device) if device.type == "cuda" else None)


def _rng_restore(state, device):
    torch.set_rng_state(state[0])
    if state[1] is not None:
        torch.cuda.set_rng_state(state[1], device)


def _leaf(value):
    return None if value is None else value.detach().requires_grad_()


def grad_cache_step(model, images, input_ids, device, dtype, scaler, chunk_size, replay_rng=True,
                    objective=INFONCE):
    """Gradient cache (Gao et al. 2021): the full-batch contrastive gradient in memory for one chunk.

    1. Embed the batch in chunks of ``chunk_size`` images (with their captions) without a graph,
       remembering the RNG state per chunk.
    2. Compute the loss on all (gathered) embeddings and its gradient w.r.t. every local embedding (and the
       logit scale and bias).
    3. Re-embed each chunk with a graph, replaying its RNG state so dropout draws the same masks, and
       back-propagate the cached embedding gradients. Parameter gradients accumulate over chunks (on a CPU
       in buffers allocated before step 1: training/gradients.py); under DDP they are all-reduced once, on
       the last chunk.
    BatchNorm layers normalise with each chunk's statistics (not the batch's) and update their running
    statistics once per chunk, in the first pass; the replay leaves them as they are.
    Returns the loss tensor (non-finite: returned before any backward).
    """
    captions_per_image = input_ids.shape[0] // images.shape[0]
    chunks = list(zip(images.split(chunk_size), input_ids.split(chunk_size * captions_per_image)))
    with gradients_allocated_first(model, device):
        states, image_parts, text_parts = [], [], []
        with torch.no_grad():
            for chunk_images, chunk_ids in chunks:
                states.append(_rng_snapshot(device))
                image_part, text_part, logit_scale, logit_bias = _forward(model, chunk_images, chunk_ids, device, dtype)
                image_parts.append(image_part)
                text_parts.append(text_part)
        image_features = torch.cat(image_parts).requires_grad_()
        text_features = torch.cat(text_parts).requires_grad_()
        scale, bias = _leaf(logit_scale), _leaf(logit_bias)
        all_image, all_text = gather_features(image_features, text_features)
        loss = objective(all_image, all_text, scale, bias, keys=_all_keys(model, input_ids, objective))
        if not torch.isfinite(loss):
            return loss
        scaler.scale(loss).backward()
        image_grads = image_features.grad.split(chunk_size)
        text_grads = text_features.grad.split(chunk_size * captions_per_image)
        after = _rng_snapshot(device)
        release_free_heap(device)
        # torch.compile wraps the DDP module: its no_sync is on the module inside.
        ddp = getattr(model, "_orig_mod", model)
        is_ddp = isinstance(ddp, DistributedDataParallel)
        for index, (chunk_images, chunk_ids) in enumerate(chunks):
            last = index == len(chunks) - 1
            with ddp.no_sync() if is_ddp and not last else nullcontext(), frozen_batch_norm_statistics(model):
                if replay_rng:
                    _rng_restore(states[index], device)
                image_part, text_part, logit_scale, logit_bias = _forward(model, chunk_images, chunk_ids, device, dtype)
                outputs, grads = [image_part, text_part], [image_grads[index], text_grads[index]]
                if last:  # the scale and bias gradients are the batch's: given once
                    for output, leaf in ((logit_scale, scale), (logit_bias, bias)):
                        if output is not None and output.requires_grad and leaf.grad is not None:
                            outputs.append(output)
                            grads.append(leaf.grad)
                torch.autograd.backward(outputs, grads)
        _rng_restore(after, device)
        return loss
