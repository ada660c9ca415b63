"""Writing galleries without holding them in memory: each process streams its new items into a part folder,
then one process merges the old gallery and the parts, in order, into the index folder's files.

A part folder holds image.f32 [n, D] and text.f32 [m, D] (raw float32 rows), text_item.i64 [m] (the item of
each caption, counted within the part), items.arrow and count.json.
"""
import json
import os

import numpy as np

from retrieval.gallery import ARRAYS, FORMAT, Gallery
from retrieval.item_table import ItemTable, ItemWriter, item_batch
from utils.atomic_file import atomic_write, atomic_write_json

COPY_ROWS = 65_536  # rows copied at a time while merging: bounds memory whatever the gallery's size


class PartWriter:
    """add(rows [(file, name, captions)], image_features [b, D], text_features [sum of captions, D])."""

    def __init__(self, directory, dim):
        os.makedirs(directory, exist_ok=True)
        self.directory, self.dim = directory, dim
        self.images = self.captions = 0
        self.files = {name: open(os.path.join(directory, name), "wb")
                      for name in ("image.f32", "text.f32", "text_item.i64")}
        self.item_writer = ItemWriter(os.path.join(directory, "items.arrow"))
        self.pending = []

    def add(self, rows, image_features, text_features):
        owners = [self.images + index for index, (_, _, captions) in enumerate(rows) for _ in captions]
        self.files["image.f32"].write(np.ascontiguousarray(image_features, np.float32).tobytes())
        self.files["text.f32"].write(np.ascontiguousarray(text_features, np.float32).reshape(-1, self.dim).tobytes())
        self.files["text_item.i64"].write(np.asarray(owners, np.int64).tobytes())
        self.pending += rows
        self.images += len(rows)
        self.captions += len(owners)
        if len(self.pending) >= 4096:
            self._flush_items()

    def _flush_items(self):
        self.item_writer.write(item_batch(self.pending))
        self.pending = []

    def close(self):
        self._flush_items()
        self.item_writer.close()
        for handle in self.files.values():
            handle.close()
        with open(os.path.join(self.directory, "count.json"), "w", encoding="utf-8") as handle:
            json.dump({"images": self.images, "captions": self.captions, "dim": self.dim}, handle)


def read_part(directory):
    """A closed part folder as a Gallery (memory-mapped; meta is empty)."""
    with open(os.path.join(directory, "count.json"), encoding="utf-8") as handle:
        count = json.load(handle)
    images, captions, dim = count["images"], count["captions"], count["dim"]

    def rows(name, dtype, shape):
        if not shape[0]:
            return np.zeros(shape, dtype)
        return np.memmap(os.path.join(directory, name), dtype=dtype, mode="c", shape=shape)

    return Gallery(ItemTable.open(os.path.join(directory, "items.arrow")), rows("image.f32", np.float32, (images, dim)),
                   rows("text.f32", np.float32, (captions, dim)), rows("text_item.i64", np.int64, (captions,)), {})


def _write_npy(path, chunks, shape, dtype):
    """An .npy file of ``shape`` from the arrays ``chunks`` yields in order, written atomically."""
    def write(stream):
        np.lib.format.write_array_header_1_0(stream, {"descr": np.lib.format.dtype_to_descr(np.dtype(dtype)),
                                                      "fortran_order": False, "shape": shape})
        for chunk in chunks:
            stream.write(np.ascontiguousarray(chunk, dtype).tobytes())
    atomic_write(path, write)


def _rows(array, offset=0):
    for start in range(0, len(array), COPY_ROWS):
        yield np.asarray(array[start:start + COPY_ROWS]) + offset


def write_gallery(directory, meta, parts):
    """Concatenate ``parts`` (Galleries: the existing one first, then new parts in order) into the index files
    of ``directory``; meta.json last. Returns the meta written."""
    dim = meta["embed-dim"]
    images = sum(len(part.items) for part in parts)
    captions = sum(len(part.text_item) for part in parts)
    offsets = np.cumsum([0] + [len(part.items) for part in parts[:-1]])
    sources = {
        "image_features": ((r for part in parts for r in _rows(part.image_features)), (images, dim), np.float32),
        "text_features": ((r for part in parts for r in _rows(part.text_features)), (captions, dim), np.float32),
        "text_item": ((r for part, offset in zip(parts, offsets) for r in _rows(part.text_item, int(offset))),
                      (captions,), np.int64),
    }
    for name in ARRAYS:
        _write_npy(os.path.join(directory, f"{name}.npy"), *sources[name])

    def write_items(stream):
        writer = ItemWriter(stream)
        for part in parts:
            for batch in part.items.batches():
                writer.write(batch)
        writer.close()
    atomic_write(os.path.join(directory, "items.arrow"), write_items)
    meta = {**meta, "format": FORMAT, "images": images, "captions": captions}
    atomic_write_json(os.path.join(directory, "meta.json"), meta)
    return meta
