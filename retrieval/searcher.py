"""Text/image queries against an index folder: the one search path behind search.py and serve.py."""
import os

import numpy as np

from retrieval.encoder import load_encoder
from retrieval.gallery import Gallery
from retrieval.vector_search import SearchSettings, VectorIndex, stored_or_built
from utils.errors import UserError


def _normalised(query, dim):
    """``query`` as float32 [dim], L2-normalised; UserError for a wrong size or a zero or non-finite vector."""
    vector = np.asarray(query, dtype=np.float32).reshape(-1)
    if vector.shape[0] != dim:
        raise UserError(f"the embedding has {vector.shape[0]} values; this model's have {dim}")
    norm = float(np.linalg.norm(vector))
    if not np.isfinite(norm) or norm == 0:
        raise UserError("the embedding must be finite and non-zero")
    return vector / norm


class Searcher:
    """Holds an encoder, a gallery and a vector index over its image embeddings.

    search_text(str, k) / search_image(PIL image, k) -> [{"id", "score", "file", "name", "captions"}], best
    first ("file": absolute path on this machine; "name": relative to the indexed folder).
    """

    def __init__(self, index_dir, model_path=None, onnx_dir=None, device="cpu", settings=None):
        """settings: how to search (a SearchSettings; default exact)."""
        self.gallery = Gallery.load(index_dir)
        self.index_name = os.path.basename(os.path.normpath(os.path.abspath(index_dir)))
        model_path = model_path or self.gallery.meta["model-path"]
        self.encoder = load_encoder(model_path, onnx_dir, device)
        if self.encoder.fingerprint != self.gallery.meta.get("fingerprint"):
            raise UserError(f"index '{index_dir}' was built with another model than {model_path}")
        self.vector_index = stored_or_built(index_dir, self.gallery.meta, self.gallery.image_features,
                                            settings or SearchSettings())
        self._caption_index = None

    def _results(self, query, k):
        scores, rows = self.vector_index.search(query[None, :], k)
        items = self.gallery.items
        return [{**items[row], "score": float(score)} for score, row in zip(scores[0], rows[0]) if row >= 0]

    def search_vector(self, query, k):
        """Items nearest to an embedding ``query`` float32 [D] (L2-normalised here), best first."""
        return self._results(_normalised(query, self.encoder.embed_dim), k)

    def search_captions(self, query, k):
        """The gallery's captions nearest to an embedding ``query`` [D], best first: [{"row", "score",
        "caption", "item"}] (item: the caption's gallery item, as in search_text). Exact search over the
        memory-mapped caption embeddings."""
        if self._caption_index is None:
            self._caption_index = VectorIndex(self.gallery.text_features)
        scores, rows = self._caption_index.search(_normalised(query, self.encoder.embed_dim)[None, :], k)
        text_item = self.gallery.text_item
        results = []
        for score, row in zip(scores[0], rows[0]):
            if row < 0:
                continue
            item = self.gallery.items[int(text_item[row])]
            first = int(np.searchsorted(text_item, text_item[row]))  # an item's captions are consecutive rows
            results.append({"row": int(row), "score": float(score), "caption": item["captions"][row - first],
                            "item": item})
        return results

    def search_text(self, text, k):
        if not text or not text.strip():
            raise UserError("empty query")
        return self._results(self.encoder.encode_texts([text.strip()])[0], k)

    def search_image(self, image, k):
        return self._results(self.encoder.encode_images([image])[0], k)


def format_results(results):
    lines = []
    for rank, result in enumerate(results, 1):
        caption = result["captions"][0] if result["captions"] else ""
        lines.append(f"{rank:>3}. {result['score']:.4f}  {result['file']}" + (f"  — {caption}" if caption else ""))
    return "\n".join(lines)
