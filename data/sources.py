"""Where a dataset is: the one place a train-data / valid-data / index data value is told apart.

``open_source(value)`` decides the layout once (a dataset folder, webdataset shards, ...) and returns its
Source; training, evaluation and index.py then ask the Source, never "is this shards?". A layout is one module
with one class, registered with ``@register_layout(matches)``; data/layouts.py imports every layout module.
The dataset folder registers as the fallback (``matches`` None): it opens whatever no other layout claims.
"""
from typing import Iterator, Protocol

from data.caption_table import CaptionTable
from data.shard_source import DEFAULT_TIMEOUT

_LAYOUTS = []  # (matches(value) -> bool, Source class), in registration order; the fallback's matches is None


def register_layout(matches):
    """Class decorator: the class opens every value for which ``matches(value)`` is true (None: the fallback,
    for values no layout claims). Layouts are tried in registration order, the fallback last."""
    def register(source_class):
        _LAYOUTS.append((matches, source_class))
        return source_class

    return register


def open_source(value, caption_key="txt", timeout=DEFAULT_TIMEOUT):
    """The Source of ``value``. caption_key: where a sample's captions are in layouts that need saying (txt,
    or comma-separated .json keys); timeout: seconds a remote read may stall. Opening reads nothing yet."""
    import data.layouts  # noqa: F401  (registers every layout)

    claimed = [source_class for matches, source_class in _LAYOUTS if matches is not None and matches(value)]
    fallback = [source_class for matches, source_class in _LAYOUTS if matches is None]
    return (claimed + fallback)[0](value, caption_key, timeout)


class Source(Protocol):
    """What every layout gives. Methods raise UserError for data that cannot be used at all.

    value: what it was opened from. order_follows_workers: whether the training order depends on num-workers
    (a resumed run must then keep the count). side_files: the folder that may hold negatives.csv and cues.csv
    (None for layouts without one).
    """
    value: str
    order_follows_workers: bool
    side_files: str | None

    def validation_table(self, strict: bool) -> CaptionTable:
        """Every usable image with all its captions (what R@k is measured on)."""

    def training_set(self, options, transform_for, collate, job, batch_size):
        """The training data as a TrainingSet (data/training_set.py): a map-style dataset of images, or a
        stream of whole batches. ``options``: TrainingOptions; ``transform_for(captions, note)``: (the training
        transform decided from the captions, a line saying what it does); ``collate``: items -> batch, for
        layouts that make their own batches; ``job``: rank and world size; ``batch_size``: the requested
        global batch."""

    def captions(self, limit: int) -> list:
        """Up to ``limit`` of the captions, read as cheaply as the layout allows (what a tokenizer is trained
        on, and augmentation and language are decided from)."""

    def gallery_units(self) -> list:
        """What index.py splits over processes, in order: images or shards."""

    def unit_files(self, units) -> list | None:
        """The gallery file each unit is recorded as, to leave out what an index holds already; None when a
        unit is only known after reading it (a shard)."""

    def gallery_entries(self, units) -> Iterator:
        """(image: a path or an EncodedImage, file: how the gallery finds it again, name: what clients see,
        captions) of every image in ``units``; unreadable ones are logged and left out."""
