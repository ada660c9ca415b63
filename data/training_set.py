"""What a layout hands the trainer: the training data of one run, as a map-style dataset of images or a stream
of whole batches, with the numbers and notices the run logs."""
import logging
from dataclasses import dataclass

from torch.utils.data import Dataset

from data.caption_table import CaptionTable
from utils.errors import UserError

logger = logging.getLogger(__name__)


@dataclass
class TrainingOptions:
    """The train.py settings a layout builds its training data from."""
    seed: int
    strict: bool
    image_size: int  # decode JPEGs at reduced size down to this side (PIL draft)
    captions_per_image: int
    compositional_negatives: bool
    batching: str  # random, hard-negatives or groups; the last two need any image in any batch (map-style)
    num_samples: int | None  # samples per epoch of a stream (train-num-samples)
    resampled: bool
    data_weights: str | None  # resampled: one weight per '::' source
    num_workers: int  # data-loading workers per process (a stream splits itself over them)

    @property
    def any_order(self):
        return self.batching != "random"

    @classmethod
    def from_config(cls, config, spec):
        return cls(config["seed"], config["strict"], spec.image_size, config["captions-per-image"],
                   config["compositional-negatives"], config["batching"],
                   config["train-num-samples"], config["resampled"], config["train-data-weights"],
                   config["num-workers"])


@dataclass
class TrainingSet:
    """dataset: map-style (item: image [3,S,S] and its caption(s)) when ``table`` is given, else an iterable of
    whole batches for this rank that splits itself over ranks and workers and has ``set_epoch(epoch,
    first_batch)`` and ``bad_samples()``. groups: with ``batching: groups``, the table's image groups
    (data/groups.py). what: "320 images, 1600 captions" and the like; notices: lines to
    log before it (augmentation first)."""
    dataset: Dataset
    table: CaptionTable | None
    batch_size: int
    local_batch: int
    steps_per_epoch: int
    what: str
    notices: list
    groups: list | None = None  # batching groups: lists of image rows of ``table`` that share a batch


def global_batch(requested, dataset_size, world_size):
    """(global batch, per-process batch): the requested batch, capped at the dataset, split over ranks."""
    batch_size = min(requested, dataset_size)
    if batch_size < requested:
        logger.info(f"batch-size {requested} > {dataset_size} training images; using {batch_size}")
    if batch_size % world_size:
        raise UserError(f"batch-size {batch_size} is the global batch and must divide evenly over "
                        f"{world_size} processes")
    return batch_size, batch_size // world_size
