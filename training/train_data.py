"""The training data of a run, from whatever layout train-data names (data/sources.py), behind one loader."""
import itertools
import logging
import re
from dataclasses import dataclass, fields

import torch
from torch.utils.data import DataLoader, DistributedSampler, RandomSampler, Sampler

from data.datasets import PairCollate
from data.shard_dataset import reraise_problems
from data.sources import open_source
from data.training_set import TrainingOptions
from data.transforms import augmentation_policy, normalization, preprocess_for, train_transform
from training.grouped_batches import GroupedOrder
from training.hard_batches import HardNegativeMiner, MinedOrder
from utils.errors import UserError

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class DataSettings:
    """The train keys the training data reads, each field named for its key (train_data: train-data, ...);
    ``options``: what the data layout itself needs (data.training_set.TrainingOptions)."""
    train_data: str
    caption_key: str
    shard_timeout: float
    num_workers: int
    seed: int
    batch_size: int
    batching: str
    hard_negative_group: int
    captions_per_image: int
    use_augment: bool
    augment_flip: str
    augment_color: str
    augment_crop_scale: float
    options: TrainingOptions

    @classmethod
    def from_config(cls, config, spec):
        keys = {field.name: config[field.name.replace("_", "-")] for field in fields(cls) if field.name != "options"}
        return cls(**keys, options=TrainingOptions.from_config(config, spec))


def _transform(settings, spec, captions, source):
    """The training transform and a line saying what augmentation is on (auto decided from ``captions``)."""
    if not settings.use_augment:
        return preprocess_for(spec), "augmentation: off"
    flip, color, notice = augmentation_policy(captions, settings.augment_flip, settings.augment_color)
    transform = train_transform(spec.image_size, settings.augment_crop_scale, flip, color, *normalization(spec))
    return transform, notice + source


class StartAt(Sampler):
    """``sampler``'s order from its ``skip``-th index on: an epoch resumed after its first batches."""

    def __init__(self, sampler):
        self.sampler, self.skip = sampler, 0

    def __iter__(self):
        return itertools.islice(iter(self.sampler), self.skip, None)

    def __len__(self):
        return len(self.sampler) - self.skip


class ImageEpochs:
    """The epoch order of a map-style dataset: its caption draw and its sampler, started at any batch."""

    def __init__(self, dataset, sampler, seed, local_batch):
        self.dataset, self.sampler, self.seed, self.local_batch = dataset, sampler, seed, local_batch

    def set_epoch(self, epoch, first_batch=0):
        self.dataset.set_epoch(epoch)
        inner = self.sampler.sampler
        if isinstance(inner, (DistributedSampler, GroupedOrder)):
            inner.set_epoch(epoch)
        elif not isinstance(inner, MinedOrder):  # a mined order is set by its miner
            inner.generator.manual_seed(self.seed * 7919 + epoch)
        self.sampler.skip = first_batch * self.local_batch

    def bad_samples(self):
        return 0  # a folder's undecodable images are replaced (and logged) where they are met


class StreamLoader:
    """A DataLoader over a stream of batches whose workers' UserErrors are raised here, as one line (see
    data.shard_dataset.ShardProblem)."""

    def __init__(self, loader):
        self.loader = loader

    def __iter__(self):
        return reraise_problems(self.loader)


class MapLoader:
    """A DataLoader over a map-style dataset whose workers' UserErrors (e.g. no image can be decoded) are
    raised here as their one line, not as PyTorch's "Caught UserError in DataLoader worker" report."""

    def __init__(self, loader):
        self.loader = loader

    def __len__(self):
        return len(self.loader)

    def __iter__(self):
        try:
            yield from self.loader
        except UserError as error:  # PyTorch re-raises it with the worker's traceback as its message
            text = str(error)
            report = re.search(r"^utils\.errors\.\w+: (.*)\Z", text, re.MULTILINE | re.DOTALL)
            if text.startswith("Caught ") and report:
                raise UserError(report.group(1)) from None
            raise


class TrainData:
    """What the loop needs of its data: ``loader`` (batches of (images [b,3,S,S], input_ids [b,L]), b the
    per-process batch), ``batch_size`` (global), ``local_batch``, ``steps_per_epoch``, the notices to log, and
    ``start_epoch`` before each epoch's iterator. ``epochs`` sets an epoch's order (set_epoch, bad_samples)."""

    def __init__(self, epochs, loader, batch_size, local_batch, steps_per_epoch, notices, miner=None):
        self.epochs, self.loader, self.miner = epochs, loader, miner
        self.batch_size, self.local_batch, self.steps_per_epoch = batch_size, local_batch, steps_per_epoch
        self.notices = notices

    def start_epoch(self, epoch, model, device, dtype, progress=None):
        """Before each epoch's iterator: a mined order (from ``model``, or the interrupted epoch's), then
        ``set_epoch`` at the batch ``progress`` (EpochProgress) had reached."""
        if self.miner:
            if progress and "order" in progress.data_position:
                self.miner.restore(progress.data_position)
            else:
                self.miner.mine(model, epoch, device, dtype)
        self.set_epoch(epoch, progress.batches if progress else 0)

    def position(self):
        """What a checkpoint inside an epoch needs beyond the batch count to see the same batches again."""
        return self.miner.state() if self.miner else {}

    def set_epoch(self, epoch, first_batch=0):
        """Before each epoch's iterator: its order, and the batch it starts at (> 0 when resumed mid-epoch)."""
        self.epochs.set_epoch(epoch, first_batch)

    def end_of_epoch(self, epoch):
        """Report the samples a stream skipped in the epoch (undecodable, no caption, an unreadable shard)."""
        if self.epochs.bad_samples():
            logger.warning(f"epoch {epoch + 1}: {self.epochs.bad_samples()} bad sample(s) skipped on this "
                           f"process (undecodable image, no caption, bad JSON or a truncated shard)")


def training_data(settings, spec, tokenizer, job, pin_memory):
    """The run's TrainData from ``settings.train_data`` (a DataSettings), in whatever layout it names."""
    workers = settings.num_workers
    loader_options = {"num_workers": workers, "pin_memory": pin_memory, "persistent_workers": workers > 0,
                      "prefetch_factor": 4 if workers else None,
                      # its own generator, not the global one: a resumed run creates its iterator at another
                      # epoch than an uninterrupted run, and a global draw there would shift every later mask
                      "generator": torch.Generator().manual_seed(settings.seed)}
    source = open_source(settings.train_data, settings.caption_key, settings.shard_timeout)
    collate = PairCollate(tokenizer)
    training = source.training_set(settings.options,
                                   lambda captions, note: _transform(settings, spec, captions, note), collate, job,
                                   settings.batch_size)
    notices, miner = list(training.notices), None
    if training.table is None:  # a stream of whole batches that splits itself over ranks and workers
        epochs, loader = training.dataset, StreamLoader(DataLoader(training.dataset, batch_size=None, **loader_options))
    else:
        sampler = _sampler(settings, training, job)
        if settings.batching == "hard-negatives":
            miner = HardNegativeMiner(sampler.sampler, training.table, preprocess_for(spec),
                                      settings.hard_negative_group, settings.seed, training.local_batch, workers)
            notices.append(f"batching: hard negatives, groups of {settings.hard_negative_group} neighbours in the "
                           f"image embedding, re-mined before each epoch")
        epochs = ImageEpochs(training.dataset, sampler, settings.seed, training.local_batch)
        loader = MapLoader(DataLoader(training.dataset, batch_size=training.local_batch, sampler=sampler,
                                      drop_last=True, collate_fn=collate, **loader_options))
    k = settings.captions_per_image
    notices.append(f"training: {training.what}, global batch {training.batch_size}"
                   f"{f' images x {k} captions each' if k > 1 else ''}"
                   f"{f' ({job.world_size} processes x {training.local_batch})' if job.enabled else ''}, "
                   f"{training.steps_per_epoch} steps/epoch")
    return TrainData(epochs, loader, training.batch_size, training.local_batch, training.steps_per_epoch, notices,
                     miner)


def _sampler(settings, training, job):
    """The order of a map-style dataset's images: mined, grouped, split over ranks, or random."""
    if settings.batching == "hard-negatives":
        return StartAt(MinedOrder(len(training.dataset), training.batch_size, job.rank, job.world_size))
    if settings.batching == "groups":
        return StartAt(GroupedOrder(training.groups, len(training.dataset), training.batch_size, job.rank,
                                    job.world_size, settings.seed))
    if job.enabled:
        return StartAt(DistributedSampler(training.dataset, job.world_size, job.rank, shuffle=True,
                                          seed=settings.seed, drop_last=True))
    return StartAt(RandomSampler(training.dataset, generator=torch.Generator()))
