"""A gallery on disk (the index folder: index.py writes it, search.py and serve.py read it): image (and caption)
embeddings, item metadata and the model's fingerprint.

INDEX_DIR/embeddings.safetensors  image_features [N, D], text_features [M, D], text_item [M]
INDEX_DIR/items.json              [{"id", "file", "captions"}], id = row in image_features
INDEX_DIR/meta.json               fingerprint, model path, embedding size, counts
"""
import json
import logging
import os

import numpy as np
from safetensors.numpy import load_file, save

from data.caption_table import read_caption_table
from data.image_file import ImageProblem, check_image_header
from retrieval.image_files import IMAGE_EXTENSIONS, decoded_batches, image_files
from utils.atomic_file import atomic_write, atomic_write_json
from utils.errors import UserError

logger = logging.getLogger(__name__)


class Gallery:
    def __init__(self, items, image_features, text_features, text_item, meta):
        self.items = items
        self.image_features = image_features
        self.text_features = text_features
        self.text_item = text_item
        self.meta = meta

    @classmethod
    def empty(cls, fingerprint, model_path, dim):
        meta = {"format": "contrastive-index/1", "fingerprint": fingerprint, "model-path": model_path,
                "embed-dim": dim}
        zeros = np.zeros((0, dim), np.float32)
        return cls([], zeros, zeros.copy(), np.zeros(0, np.int64), meta)

    @classmethod
    def load(cls, directory):
        paths = [os.path.join(directory, name) for name in ("meta.json", "items.json", "embeddings.safetensors")]
        if not all(os.path.isfile(path) for path in paths):
            raise UserError(f"'{directory}' is not an index (expected meta.json, items.json and "
                            f"embeddings.safetensors); build one with index.py")
        try:
            with open(paths[0], encoding="utf-8") as handle:
                meta = json.load(handle)
            with open(paths[1], encoding="utf-8") as handle:
                items = json.load(handle)
            arrays = load_file(paths[2])
            gallery = cls(items, arrays["image_features"], arrays["text_features"], arrays["text_item"], meta)
            gallery.check()
        except UserError:
            raise
        except Exception as error:  # json, safetensors and key errors: a damaged or half-written index
            raise UserError(f"index '{directory}' is damaged ({type(error).__name__}: {error}); rebuild it "
                            f"with index.py into a new folder") from None
        return gallery

    def check(self):
        """The three files agree (a crash between their writes would leave them disagreeing)."""
        images, captions = len(self.items), len(self.text_item)
        consistent = (self.image_features.shape[0] == images == self.meta.get("images", images)
                      and self.text_features.shape[0] == captions == self.meta.get("captions", captions)
                      and [item["id"] for item in self.items] == list(range(images))
                      and (captions == 0 or 0 <= int(self.text_item.min()) <= int(self.text_item.max()) < images))
        if not consistent:
            raise UserError(f"index files disagree ({images} items, {self.image_features.shape[0]} image "
                            f"embeddings, {captions} caption links, {self.text_features.shape[0]} caption "
                            f"embeddings)")

    def save(self, directory):
        os.makedirs(directory, exist_ok=True)
        arrays = {"image_features": np.ascontiguousarray(self.image_features, np.float32),
                  "text_features": np.ascontiguousarray(self.text_features, np.float32),
                  "text_item": np.ascontiguousarray(self.text_item, np.int64)}
        # Embeddings first, then items, then meta: meta.json is the last file to change, and all three
        # are replaced atomically.
        atomic_write(os.path.join(directory, "embeddings.safetensors"), lambda s: s.write(save(arrays)))
        atomic_write_json(os.path.join(directory, "items.json"), self.items)
        self.meta.update(images=len(self.items), captions=int(len(self.text_item)))
        atomic_write_json(os.path.join(directory, "meta.json"), self.meta)


def find_sources(data_dir):
    """[(path, name, captions)] from a dataset folder (images/ + captions.csv) or a plain folder of images.

    name: the file's name relative to the folder, the only form shown to web clients. Unusable images are
    logged and left out.
    """
    if os.path.isfile(os.path.join(data_dir, "captions.csv")):
        table = read_caption_table(data_dir)
        return [(os.path.abspath(record.path), record.filename, record.captions) for record in table.images]
    if not os.path.isdir(data_dir):
        raise UserError(f"data folder '{data_dir}' not found")
    sources = []
    for path in image_files(data_dir):
        try:
            check_image_header(path)
            sources.append((os.path.abspath(path), os.path.relpath(path, data_dir), []))
        except ImageProblem as problem:
            logger.warning(f"skipped {path}: {problem}")
    if not sources:
        raise UserError(f"no images found in '{data_dir}' (looked for {', '.join(IMAGE_EXTENSIONS)})")
    return sources


def add_to_gallery(gallery, encoder, sources, batch_size):
    """Embed the sources not yet in ``gallery`` (by absolute path); returns how many were added.

    Images that cannot be decoded are logged and left out.
    """
    known = {item["file"] for item in gallery.items}
    pending = [source for source in sources if source[0] not in known]
    new_items, image_parts, text_parts, text_item = [], [], [], []
    for images, kept in decoded_batches(pending, batch_size, progress="embedding"):
        image_parts.append(encoder.encode_images(images))
        for path, name, captions in kept:
            item_id = len(gallery.items) + len(new_items)
            new_items.append({"id": item_id, "file": path, "name": name, "captions": captions})
            text_item += [item_id] * len(captions)
        captions = [caption for _, _, captions in kept for caption in captions]
        for caption_start in range(0, len(captions), batch_size):
            text_parts.append(encoder.encode_texts(captions[caption_start:caption_start + batch_size]))
    if new_items:
        gallery.items += new_items
        gallery.image_features = np.concatenate([gallery.image_features, *image_parts])
        if text_parts:
            gallery.text_features = np.concatenate([gallery.text_features, *text_parts])
            gallery.text_item = np.concatenate([gallery.text_item, np.asarray(text_item, np.int64)])
    return len(new_items)


def open_or_create(directory, encoder):
    """The gallery in ``directory`` (which must come from the same model), or a new empty one."""
    if os.path.isfile(os.path.join(directory, "meta.json")):
        gallery = Gallery.load(directory)
        if gallery.meta.get("fingerprint") != encoder.fingerprint:
            raise UserError(f"index '{directory}' was built with another model "
                            f"({gallery.meta.get('model-path')}); refusing to mix embeddings. "
                            f"Use a new --out folder")
        return gallery
    if os.path.exists(directory) and not os.path.isdir(directory):
        raise UserError(f"--out '{directory}' is a file; choose a folder")
    if os.path.isdir(directory) and os.listdir(directory):
        raise UserError(f"'{directory}' exists and is not an index; choose an empty or new --out folder")
    try:
        os.makedirs(directory, exist_ok=True)
    except OSError as error:
        raise UserError(f"cannot create --out '{directory}': {error.strerror}") from None
    return Gallery.empty(encoder.fingerprint, encoder.model_path, encoder.embed_dim)
