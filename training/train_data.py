"""The training data of a run: a dataset folder or webdataset shards, behind one loader interface."""
import itertools
import logging

import torch
from torch.utils.data import DataLoader, DistributedSampler, RandomSampler, Sampler

from data.caption_table import read_caption_table
from data.negatives import FILE_NAME as NEGATIVES_FILE
from data.negatives import read_negatives
from data.datasets import PairCollate, TrainImages
from data.shard_dataset import ShardBatches, first_captions, reraise_problems, shard_notice
from data.shard_source import epoch_samples, is_shard_source, shard_weights
from data.transforms import augmentation_policy, normalization, preprocess_for, train_transform
from training.hard_batches import HardNegativeMiner, MinedOrder
from utils.errors import UserError

logger = logging.getLogger(__name__)


def global_batch(requested, dataset_size, world_size):
    """(global batch, per-process batch): the requested batch, capped at the dataset, split over ranks."""
    batch_size = min(requested, dataset_size)
    if batch_size < requested:
        logger.info(f"batch-size {requested} > {dataset_size} training images; using {batch_size}")
    if batch_size % world_size:
        raise UserError(f"batch-size {batch_size} is the global batch and must divide evenly over "
                        f"{world_size} processes")
    return batch_size, batch_size // world_size


def _transform(config, spec, captions, source):
    """The training transform and a line saying what augmentation is on (auto decided from ``captions``)."""
    if not config["use-augment"]:
        return preprocess_for(spec), "augmentation: off"
    flip, color, notice = augmentation_policy(captions, config["augment-flip"], config["augment-color"])
    transform = train_transform(spec["image-size"], config["augment-crop-scale"], flip, color, *normalization(spec))
    return transform, notice + source


def _negatives(config, table):
    """Per image of ``table``, {caption: its compositional negative}, when compositional-negatives is on."""
    if not config["compositional-negatives"]:
        return None
    negatives = read_negatives(config["train-data"], table)
    if not negatives:
        raise UserError(f"compositional-negatives: {config['train-data']}/{NEGATIVES_FILE} not found or empty "
                        f"(columns filename, caption, negative; scripts/make_demo_dataset.py writes one for the "
                        f"shapes domain)")
    swapped = [{} for _ in table.images]
    for pair in negatives:
        swapped[pair.image][pair.caption] = pair.negative
    covered = sum(1 for entry in swapped if entry)
    logger.info(f"compositional negatives: {len(negatives)} swapped captions for {covered} of {len(table.images)} "
                f"images; one per image joins each batch as an extra negative (an empty caption for images "
                f"without one)")
    return swapped


def _captions_note(config):
    k = config["captions-per-image"]
    return f" images x {k} captions each" if k > 1 else ""


class StartAt(Sampler):
    """``sampler``'s order from its ``skip``-th index on: an epoch resumed after its first batches."""

    def __init__(self, sampler):
        self.sampler, self.skip = sampler, 0

    def __iter__(self):
        return itertools.islice(iter(self.sampler), self.skip, None)

    def __len__(self):
        return len(self.sampler) - self.skip


class ShardLoader:
    """A DataLoader over ShardBatches whose workers' UserErrors are raised here, as one line (see ShardProblem)."""

    def __init__(self, loader):
        self.loader = loader

    def __iter__(self):
        return reraise_problems(self.loader)


class TrainData:
    """What the loop needs of its data: ``loader`` (batches of (images [b,3,S,S], input_ids [b,L]), b the
    per-process batch), ``batch_size`` (global), ``local_batch``, ``steps_per_epoch``, the notices to log, and
    ``set_epoch`` before each epoch's iterator."""

    def __init__(self, dataset, loader, sampler, batch_size, local_batch, steps_per_epoch, notices, seed,
                 miner=None):
        self.dataset, self.loader, self.sampler = dataset, loader, sampler
        self.batch_size, self.local_batch, self.steps_per_epoch = batch_size, local_batch, steps_per_epoch
        self.notices, self.seed, self.miner = notices, seed, miner

    def set_epoch(self, epoch, first_batch=0):
        """Before each epoch's iterator: its order, and the batch it starts at (> 0 when resumed mid-epoch)."""
        if isinstance(self.dataset, ShardBatches):
            self.dataset.set_epoch(epoch, first_batch)
            return
        self.dataset.set_epoch(epoch)
        inner = self.sampler.sampler
        if isinstance(inner, DistributedSampler):
            inner.set_epoch(epoch)
        elif not isinstance(inner, MinedOrder):  # a mined order is set by its miner
            inner.generator.manual_seed(self.seed * 7919 + epoch)
        self.sampler.skip = first_batch * self.local_batch

    def end_of_epoch(self, epoch):
        """Report the epoch's skipped samples (shards only: a folder's bad images are replaced and logged)."""
        if isinstance(self.dataset, ShardBatches) and self.dataset.bad_samples():
            logger.warning(f"epoch {epoch + 1}: {self.dataset.bad_samples()} bad sample(s) skipped on this "
                           f"process (undecodable image, no caption, bad JSON or a truncated shard)")


def training_data(config, spec, tokenizer, job, pin_memory):
    """The run's TrainData from ``train-data``: a folder (images/ + captions.csv) or shards."""
    workers = config["num-workers"]
    loader_options = {"num_workers": workers, "pin_memory": pin_memory, "persistent_workers": workers > 0,
                      "prefetch_factor": 4 if workers else None,
                      # its own generator, not the global one: a resumed run creates its iterator at another
                      # epoch than an uninterrupted run, and a global draw there would shift every later mask
                      "generator": torch.Generator().manual_seed(config["seed"])}
    if is_shard_source(config["train-data"]):
        return _shard_data(config, spec, tokenizer, job, loader_options)
    table = read_caption_table(config["train-data"], strict=config["strict"])
    transform, augmentation = _transform(config, spec, table.captions, "")
    if len(table.images) < 2:
        raise UserError(f"{config['train-data']}: {len(table.images)} usable image(s); contrastive "
                        f"training needs at least 2")
    dataset = TrainImages(table, transform, config["seed"], draft_size=spec["image-size"],
                          captions_per_image=config["captions-per-image"], negatives=_negatives(config, table))
    batch_size, local_batch = global_batch(config["batch-size"], len(dataset), job.world_size)
    miner = None
    if config["batching"] == "hard-negatives":
        sampler = StartAt(MinedOrder(len(dataset), batch_size, job.rank, job.world_size))
        miner = HardNegativeMiner(sampler.sampler, table, preprocess_for(spec), config["hard-negative-group"],
                                  config["seed"], local_batch, workers)
    elif job.enabled:
        sampler = StartAt(DistributedSampler(dataset, job.world_size, job.rank, shuffle=True, seed=config["seed"],
                                             drop_last=True))
    else:
        sampler = StartAt(RandomSampler(dataset, generator=torch.Generator()))
    loader = DataLoader(dataset, batch_size=local_batch, sampler=sampler, drop_last=True,
                        collate_fn=PairCollate(tokenizer), **loader_options)
    steps = len(dataset) // batch_size
    described = (f"training: {len(dataset)} images, {len(table.captions)} captions, global batch {batch_size}"
                 f"{_captions_note(config)}"
                 f"{f' ({job.world_size} processes x {local_batch})' if job.enabled else ''}, {steps} steps/epoch")
    notices = [augmentation, described]
    if miner:
        notices.insert(1, f"batching: hard negatives, groups of {config['hard-negative-group']} neighbours in the "
                          f"image embedding, re-mined before each epoch")
    return TrainData(dataset, loader, sampler, batch_size, local_batch, steps, notices, config["seed"], miner)


def _shard_data(config, spec, tokenizer, job, loader_options):
    if config["compositional-negatives"]:
        raise UserError("compositional-negatives reads negatives.csv of a dataset folder; train-data names shards")
    if config["batching"] == "hard-negatives":
        raise UserError("batching hard-negatives picks any image for any batch, which a dataset folder allows and "
                        "streamed shards do not; train-data names shards (use batching: random)")
    timeout = config["shard-timeout"]
    urls, samples, sizes = epoch_samples(config["train-data"], config["train-num-samples"], timeout)
    caption_keys = [key.strip() for key in config["caption-key"].split(",") if key.strip()]
    if not caption_keys:
        raise UserError("caption-key: give txt or one or more .json keys")
    transform, augmentation = _transform(config, spec, first_captions(urls, caption_keys, timeout=timeout),
                                         " (decided from the first shard's captions)")
    batch_size, local_batch = global_batch(config["batch-size"], samples, job.world_size)
    steps = samples // batch_size
    if samples < 2:
        raise UserError(f"{config['train-data']}: {samples} sample(s); contrastive training needs at least 2")
    weights = None
    if config["train-data-weights"] and not config["resampled"]:
        raise UserError("train-data-weights applies to resampled shards: set resampled true as well")
    if config["resampled"]:
        weights = (shard_weights(config["train-data"], config["train-data-weights"])
                   if config["train-data-weights"] else [1.0] * len(urls))
    dataset = ShardBatches(urls, transform, PairCollate(tokenizer), caption_keys, config["seed"], job.rank,
                           job.world_size, local_batch, steps, draft_size=spec["image-size"],
                           resampled_weights=weights, captions_per_image=config["captions-per-image"], sizes=sizes,
                           timeout=timeout)
    loader = ShardLoader(DataLoader(dataset, batch_size=None, **loader_options))
    described = (f"training: {samples} samples from shards, global batch {batch_size}{_captions_note(config)}"
                 f"{f' ({job.world_size} processes x {local_batch})' if job.enabled else ''}, {steps} steps/epoch")
    notices = [augmentation, shard_notice(urls, samples, job.world_size, loader_options["num_workers"], weights,
                                          exact=dataset.sizes is not None), described]
    return TrainData(dataset, loader, None, batch_size, local_batch, steps, notices, config["seed"])
