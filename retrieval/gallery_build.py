"""index.py's work: embed a gallery source into an index folder, alone or as one process of a torchrun job.

Each process embeds its contiguous share of the source into a part folder (INDEX_DIR/.building/rank-R); rank
0 then merges the existing gallery and the parts, in rank order, into the index files, so the result equals
a one-process run's. Memory stays bounded: parts are streamed to disk and merged in fixed-size chunks.
"""
import logging
import os
import shutil
import time
from itertools import islice

import numpy as np

from retrieval.gallery import BUILD_DIR, Gallery, open_or_create
from retrieval.gallery_writer import PartWriter, read_part, write_gallery
from retrieval.image_files import decoded_batches
from retrieval.vector_search import SearchSettings, VectorIndex, exact_recall_notice
from utils.atomic_file import atomic_write_json, remove_temporaries
from utils.distributed import all_gather_objects, barrier
from utils.errors import UserError

logger = logging.getLogger(__name__)
KNOWN_CHECK_ROWS = 4096  # entries looked up in the existing gallery at a time


def _new_entries(entries, lookup, present):
    """The entries whose file ``lookup`` does not hold yet; ``present[0]`` counts the others."""
    iterator = iter(entries)
    while run := list(islice(iterator, KNOWN_CHECK_ROWS)):
        known = lookup.contains([entry[1] for entry in run])
        present[0] += sum(known)
        yield from (entry for entry, seen in zip(run, known) if not seen)


def embed_share(encoder, entries, lookup, part_dir, batch_size, progress=None):
    """Embed the ``entries`` (gallery_sources entries) whose file ``lookup`` lacks into a part folder.

    Returns (added, already present); images that cannot be decoded are logged and left out.
    """
    writer = PartWriter(part_dir, encoder.embed_dim)
    present = [0]
    for images, kept in decoded_batches(_new_entries(entries, lookup, present), batch_size, progress):
        rows = [(file, name, captions) for _, file, name, captions in kept]
        captions = [caption for _, _, captions in rows for caption in captions]
        text_parts = [encoder.encode_texts(captions[start:start + batch_size])
                      for start in range(0, len(captions), batch_size)]
        text = np.concatenate(text_parts) if text_parts else np.zeros((0, encoder.embed_dim), np.float32)
        writer.add(rows, encoder.encode_images(images), text)
    writer.close()
    return writer.images, present[0]


def build_index(source, out, encoder, distributed, batch_size=64, search=None):
    """Extend (or create) the index folder ``out`` with the images of ``source`` (a GallerySource), embedded
    ``batch_size`` at a time; every process of a torchrun job calls this. ``search``: the vector index to store
    (SearchSettings; None: exact search, nothing stored). Returns the
    merged Gallery on rank 0, None elsewhere."""
    search = search or SearchSettings()
    build_dir = os.path.join(out, BUILD_DIR)
    if distributed.is_main:
        gallery = open_or_create(out, encoder)
        _remove_leftovers(out)
    barrier()
    if not distributed.is_main:
        gallery = (Gallery.load(out) if os.path.isfile(os.path.join(out, "meta.json"))
                   else Gallery.empty(encoder.fingerprint, encoder.model_path, encoder.embed_dim))
    lookup = gallery.items.file_lookup()
    entries, present_before = source.share(distributed.rank, distributed.world_size, lookup)
    part_dir = os.path.join(build_dir, f"rank-{distributed.rank:05d}")
    started = time.perf_counter()
    added, present = embed_share(encoder, entries, lookup, part_dir, batch_size,
                                 "embedding" if distributed.is_main else None)
    counts = all_gather_objects((added, present))
    seconds = time.perf_counter() - started  # after the gather: the slowest process's time
    if not distributed.is_main:
        return None
    if distributed.world_size > 1:
        logger.info(f"images embedded by each process: {', '.join(str(count[0]) for count in counts)}")
    added, present = sum(count[0] for count in counts), present_before + sum(count[1] for count in counts)
    if not len(gallery.items) and not added:
        shutil.rmtree(build_dir, ignore_errors=True)
        raise UserError(f"no image in '{source.source.value}' could be decoded; nothing indexed")
    if added:
        parts = [gallery] + [_part(build_dir, rank) for rank in range(distributed.world_size)]
        meta = {key: value for key, value in gallery.meta.items() if key != "vector-index"}
        write_gallery(out, meta, parts)
    shutil.rmtree(build_dir, ignore_errors=True)
    merged = Gallery.load(out)
    logger.info(f"{out}: added {added} image(s); {len(merged.items)} images and {len(merged.text_item)} captions "
                f"indexed ({present} already present); embedding took {seconds:.1f} s, "
                f"{added / max(seconds, 1e-9):.1f} images/s")
    store_vector_index(out, merged, search)
    return merged


def _remove_leftovers(out):
    """What a killed run left in the index folder: its part folders and half-written temporary files (the
    atomic writer's, and vectors.faiss.tmp-PID of versions whose VectorIndex.save did not use it)."""
    shutil.rmtree(os.path.join(out, BUILD_DIR), ignore_errors=True)
    remove_temporaries(out)
    for name in os.listdir(out):
        if name.startswith("vectors.faiss.tmp-"):
            os.remove(os.path.join(out, name))


def _part(build_dir, rank):
    directory = os.path.join(build_dir, f"rank-{rank:05d}")
    if not os.path.isfile(os.path.join(directory, "count.json")):
        raise UserError(f"{directory}: process {rank}'s embeddings are not there; under torchrun on several "
                        f"machines, --out must be on a filesystem they share")
    return read_part(directory)


def store_vector_index(out, gallery, search):
    """Build the FAISS index ``search`` (SearchSettings) asks for, print its recall@10 against
    exact search, store it as vectors.faiss and record its build settings in meta.json. Nothing to do when the
    stored one is of that kind and covers the gallery; with exact search a stored index that no longer covers
    it is removed."""
    path = os.path.join(out, "vectors.faiss")
    stored = gallery.meta.get("vector-index") or {}
    if stored.get("images") == len(gallery.items) and stored.get("kind") == search.kind:
        return
    if search.kind == "exact":
        if os.path.exists(path) and not stored:
            os.remove(path)
        return
    vector_index = VectorIndex(gallery.image_features, settings=search)
    recall = exact_recall_notice(vector_index)
    vector_index.save(path)
    gallery.meta["vector-index"] = {**vector_index.build, "images": len(gallery.items), "recall@10": recall}
    atomic_write_json(os.path.join(out, "meta.json"), gallery.meta)
    logger.info(f"{search.kind}: recall@10 against exact search {recall:.3f} (gallery items as queries); "
                f"stored in {path}")
