"""A gallery on disk (the index folder: index.py writes it, search.py and serve.py read it): image (and caption)
embeddings, item metadata and the model's fingerprint. Everything is memory-mapped on open, so opening costs
the same for 1k items as for 10M and memory holds only the pages searches touch.

INDEX_DIR/image_features.npy   float32 [N, D], row = item id
INDEX_DIR/text_features.npy    float32 [M, D], every caption of every item
INDEX_DIR/text_item.npy        int64 [M], the item of each caption
INDEX_DIR/items.arrow          file, name, captions per item (retrieval/item_table.py)
INDEX_DIR/vectors.faiss        optional: a FAISS index built by index.py (retrieval/vector_search.py)
INDEX_DIR/meta.json            format, fingerprint, model path, embedding size, counts; written last
"""
import json
import os

import numpy as np

from retrieval.item_table import ItemTable
from utils.atomic_file import TEMPORARY_PREFIX
from utils.errors import UserError

FORMAT = "contrastive-index/2"
ARRAYS = ("image_features", "text_features", "text_item")


class Gallery:
    """items: ItemTable; image_features [N, D]; text_features [M, D]; text_item [M]; meta: dict."""

    def __init__(self, items, image_features, text_features, text_item, meta):
        self.items = items
        self.image_features = image_features
        self.text_features = text_features
        self.text_item = text_item
        self.meta = meta

    @classmethod
    def empty(cls, fingerprint, model_path, dim):
        meta = {"format": FORMAT, "fingerprint": fingerprint, "model-path": model_path, "embed-dim": dim}
        zeros = np.zeros((0, dim), np.float32)
        return cls(ItemTable.empty(), zeros, zeros.copy(), np.zeros(0, np.int64), meta)

    @classmethod
    def load(cls, directory):
        meta_path = os.path.join(directory, "meta.json")
        if not os.path.isfile(meta_path):
            raise UserError(f"'{directory}' is not an index (no meta.json); build one with index.py")
        try:
            with open(meta_path, encoding="utf-8") as handle:
                meta = json.load(handle)
        except (OSError, ValueError) as error:
            raise UserError(f"index '{directory}' is damaged (meta.json: {error}); rebuild it with index.py "
                            f"into a new folder") from None
        if not isinstance(meta, dict) or meta.get("format") != FORMAT:
            found = meta.get("format") if isinstance(meta, dict) else None
            raise UserError(f"index '{directory}' has format {found!r}, this version reads {FORMAT!r} (items in a "
                            f"memory-mapped items.arrow); rebuild it with index.py into a new folder")
        try:
            # copy-on-write maps: writable arrays (as torch.from_numpy wants) that never change the files
            arrays = [np.load(os.path.join(directory, f"{name}.npy"), mmap_mode="c") for name in ARRAYS]
            items = ItemTable.open(os.path.join(directory, "items.arrow"))
        except Exception as error:  # numpy, pyarrow and OS errors: a missing, damaged or half-written file
            raise UserError(f"index '{directory}' is damaged ({type(error).__name__}: {error}); rebuild it "
                            f"with index.py into a new folder") from None
        gallery = cls(items, *arrays, meta)
        gallery.keep_recorded_rows()
        gallery.check()
        return gallery

    def keep_recorded_rows(self):
        """Use the rows meta.json counts. A merge only ever appends, and replaces meta.json last: when it was
        interrupted after some files were replaced, those hold the recorded rows first and more after them."""
        images, captions = self.meta.get("images"), self.meta.get("captions")
        if isinstance(images, int) and len(self.items) >= images and self.image_features.shape[0] >= images:
            self.items = self.items.head(images)
            self.image_features = self.image_features[:images]
        if isinstance(captions, int) and len(self.text_item) >= captions and self.text_features.shape[0] >= captions:
            self.text_item = self.text_item[:captions]
            self.text_features = self.text_features[:captions]

    def check(self):
        """The files agree with each other and with meta.json (a crash between writes would leave them not)."""
        images, captions = len(self.items), len(self.text_item)
        dim = self.meta.get("embed-dim")
        consistent = (self.image_features.shape == (images, dim) and self.text_features.shape == (captions, dim)
                      and images == self.meta.get("images", images) and captions == self.meta.get("captions", captions)
                      and self.image_features.dtype == np.float32 and self.text_item.dtype == np.int64
                      and (captions == 0 or 0 <= int(self.text_item.min()) <= int(self.text_item.max()) < images))
        if not consistent:
            raise UserError(f"index files disagree ({images} items, {self.image_features.shape[0]} image "
                            f"embeddings, {captions} caption links, {self.text_features.shape[0]} caption "
                            f"embeddings, meta.json: {self.meta.get('images')} images); rebuild it with index.py")


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
    if os.path.isdir(directory) and [name for name in os.listdir(directory)
                                     if name != BUILD_DIR and not name.startswith(TEMPORARY_PREFIX)]:
        raise UserError(f"'{directory}' exists and is not an index; choose an empty or new --out folder")
    try:
        os.makedirs(directory, exist_ok=True)
    except OSError as error:
        raise UserError(f"cannot create --out '{directory}': {error.strerror}") from None
    return Gallery.empty(encoder.fingerprint, encoder.model_path, encoder.embed_dim)


BUILD_DIR = ".building"  # index.py's per-process parts, inside the index folder until merged
