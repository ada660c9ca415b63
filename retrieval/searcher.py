"""Text/image queries against a gallery: the one search path behind search.py and serve.py."""
import numpy as np

from retrieval.encoder import load_encoder
from retrieval.gallery import Gallery
from retrieval.vector_search import VectorSearch
from utils.errors import UserError


def search_settings(config):
    """The FAISS keys of a config, as VectorSearch keyword arguments."""
    return {"kind": config["search"], "hnsw_m": config["hnsw-m"], "hnsw_ef_search": config["hnsw-ef-search"],
            "ivf_nlist": config["ivf-nlist"], "ivf_nprobe": config["ivf-nprobe"]}


class Searcher:
    """Holds an encoder, a gallery and its vector index.

    search_text(str, k) / search_image(PIL image, k) -> [{"id", "score", "file", "name", "captions"}], best
    first ("file": absolute path on this machine; "name": relative to the indexed folder).
    """

    def __init__(self, index_dir, model_path=None, onnx_dir=None, device="cpu", **search_kwargs):
        self.gallery = Gallery.load(index_dir)
        model_path = model_path or self.gallery.meta["model-path"]
        self.encoder = load_encoder(model_path, onnx_dir, device)
        if self.encoder.fingerprint != self.gallery.meta.get("fingerprint"):
            raise UserError(f"index '{index_dir}' was built with another model than {model_path}")
        self.vectors = VectorSearch(self.gallery.image_features, **search_kwargs)

    def _results(self, query, k):
        scores, rows = self.vectors.search(query[None, :], k)
        items = self.gallery.items
        return [{"id": int(row), "score": float(score), "file": items[row]["file"], "name": items[row]["name"],
                 "captions": items[row]["captions"]} for score, row in zip(scores[0], rows[0]) if row >= 0]

    def search_text(self, text, k):
        if not text or not text.strip():
            raise UserError("empty query")
        return self._results(self.encoder.encode_texts([text.strip()])[0], k)

    def search_image(self, image, k):
        return self._results(self.encoder.encode_images([image])[0], k)

    def embed_image(self, image):
        return self.encoder.encode_images([image])[0]


def format_results(results):
    lines = []
    for rank, result in enumerate(results, 1):
        caption = result["captions"][0] if result["captions"] else ""
        lines.append(f"{rank:>3}. {result['score']:.4f}  {result['file']}" + (f"  — {caption}" if caption else ""))
    return "\n".join(lines)


def exact_recall_notice(vectors, sample=200, k=10):
    """The FAISS index's recall@k against exact search, on up to ``sample`` gallery items as queries."""
    from retrieval.vector_search import recall_against_exact

    queries = vectors.features[np.linspace(0, len(vectors) - 1, min(sample, len(vectors))).astype(int)]
    return recall_against_exact(vectors, queries, k)
