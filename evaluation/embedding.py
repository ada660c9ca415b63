"""The one encoding path: embed a dataset's images and captions, and score retrieval on them."""
import logging
import os

import torch
import torch.distributed as dist
from torch.utils.data import DataLoader

from data.caption_table import CaptionTable
from data.datasets import EvalImages, collate_images
from evaluation.compositional import compositional_accuracy
from evaluation.recall import retrieval_recall
from utils.device import autocast
from utils.distributed import all_gather_objects
from utils.errors import UserError

logger = logging.getLogger(__name__)


@torch.no_grad()
def embed_images(model, table, transform, batch_size, num_workers, device, dtype):
    """Returns (features FloatTensor[N', D] on CPU, kept LongTensor[N']): images that failed to decode
    are reported and left out of ``kept``."""
    # more workers than usable CPUs only adds processes (and PyTorch's warning); the features do not change
    num_workers = min(num_workers, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else
                      os.cpu_count() or 1)
    loader = DataLoader(EvalImages(table, transform), batch_size=batch_size, num_workers=num_workers,
                        collate_fn=collate_images, pin_memory=device.type == "cuda")
    features, kept = [], []
    for images, indices in loader:
        if images is None:
            continue
        images = images.to(device, non_blocking=True)
        with autocast(device, dtype):
            features.append(model.encode_image(images).float().cpu())
        kept.append(indices)
    if not features:
        return torch.empty(0, model.embed_dim), torch.empty(0, dtype=torch.long)
    return torch.cat(features), torch.cat(kept)


@torch.no_grad()
def embed_captions(model, tokenizer, captions, batch_size, device, dtype):
    """list[str] of length M -> FloatTensor[M, D] on CPU."""
    features = []
    for start in range(0, len(captions), batch_size):
        input_ids = tokenizer(captions[start:start + batch_size]).to(device)
        with autocast(device, dtype):
            features.append(model.encode_text(input_ids).float().cpu())
    return torch.cat(features) if features else torch.empty(0, model.embed_dim)


def sharded_image_features(model, table, transform, batch_size, num_workers, device, dtype):
    """Under torchrun each rank embeds a contiguous slice of the images; slices are gathered in order."""
    rank, world = (dist.get_rank(), dist.get_world_size()) if dist.is_initialized() else (0, 1)
    if world == 1:
        return embed_images(model, table, transform, batch_size, num_workers, device, dtype)
    positions = torch.arange(len(table.images)).tensor_split(world)[rank].tolist()
    shard = CaptionTable(table.root, [table.images[i] for i in positions], table.skipped)
    features, kept = embed_images(model, shard, transform, batch_size, num_workers, device, dtype)
    parts = all_gather_objects((features, torch.tensor(positions, dtype=torch.long)[kept]))
    return torch.cat([p[0] for p in parts]), torch.cat([p[1] for p in parts])


def sharded_text_features(model, tokenizer, captions, batch_size, device, dtype):
    rank, world = (dist.get_rank(), dist.get_world_size()) if dist.is_initialized() else (0, 1)
    if world == 1:
        return embed_captions(model, tokenizer, captions, batch_size, device, dtype)
    bounds = torch.arange(len(captions)).tensor_split(world)[rank]
    start, stop = (int(bounds[0]), int(bounds[-1]) + 1) if len(bounds) else (0, 0)
    local = embed_captions(model, tokenizer, captions[start:stop], batch_size, device, dtype)
    return torch.cat(all_gather_objects(local))


def evaluate_table(model, tokenizer, table, transform, batch_size, num_workers, device, dtype, negatives=None):
    """Embed every image and caption of ``table`` and return retrieval_recall's dict plus counts (and, given
    ``negatives`` from data.negatives, compositional accuracy on them).

    Under torchrun the work is sharded across ranks and every rank returns the same numbers.
    """
    was_training = model.training
    model.eval()
    image_features, kept = sharded_image_features(model, table, transform, batch_size, num_workers, device,
                                                   dtype)
    text_image_index = torch.tensor(table.caption_image_index, dtype=torch.long)
    captions, image_rows = table.captions, table.caption_image_index
    position = torch.full((len(table.images),), -1, dtype=torch.long)  # image row -> row of its features
    position[kept] = torch.arange(len(kept))
    if len(kept) < len(table.images):
        logger.warning(f"evaluation: {len(table.images) - len(kept)} image(s) could not be decoded; "
                       f"left out with their captions")
        keep = position[text_image_index] >= 0
        captions = [c for c, k in zip(captions, keep.tolist()) if k]
        image_rows = [r for r, k in zip(image_rows, keep.tolist()) if k]
        text_image_index = position[text_image_index][keep]
    text_features = sharded_text_features(model, tokenizer, captions, batch_size, device, dtype)
    pairs = [pair for pair in negatives or [] if position[pair.image] >= 0]
    if pairs:
        # a pair's true caption is one of its image's captions (data.negatives keeps only those): its
        # features are already here, and only the swapped twins need encoding
        row_of = {(int(image), caption): row for row, (image, caption) in enumerate(zip(image_rows, captions))}
        true_twins = text_features[[row_of[(p.image, p.caption)] for p in pairs]]
        swapped_twins = sharded_text_features(model, tokenizer, [p.negative for p in pairs], batch_size, device,
                                              dtype)
    model.train(was_training)
    if len(kept) == 0:
        raise UserError(f"{table.root}: no image could be decoded")
    metrics = retrieval_recall(image_features, text_features, text_image_index)
    metrics.update(images=int(image_features.shape[0]), captions=int(text_features.shape[0]))
    if pairs:
        metrics.update(compositional_accuracy(image_features, true_twins, swapped_twins,
                                              position[[p.image for p in pairs]], [p.swap for p in pairs]))
    return metrics
