"""Text/image queries against an index folder: the one search path behind search.py and serve.py."""
from retrieval.encoder import load_encoder
from retrieval.gallery import Gallery
from retrieval.vector_search import SearchSettings, stored_or_built
from utils.errors import UserError


class Searcher:
    """Holds an encoder, a gallery and a vector index over its image embeddings.

    search_text(str, k) / search_image(PIL image, k) -> [{"id", "score", "file", "name", "captions"}], best
    first ("file": absolute path on this machine; "name": relative to the indexed folder).
    """

    def __init__(self, index_dir, model_path=None, onnx_dir=None, device="cpu", settings=None):
        """settings: how to search (a SearchSettings; default exact)."""
        self.gallery = Gallery.load(index_dir)
        model_path = model_path or self.gallery.meta["model-path"]
        self.encoder = load_encoder(model_path, onnx_dir, device)
        if self.encoder.fingerprint != self.gallery.meta.get("fingerprint"):
            raise UserError(f"index '{index_dir}' was built with another model than {model_path}")
        self.vector_index = stored_or_built(index_dir, self.gallery.meta, self.gallery.image_features,
                                            settings or SearchSettings())

    def _results(self, query, k):
        scores, rows = self.vector_index.search(query[None, :], k)
        items = self.gallery.items
        return [{**items[row], "score": float(score)} for score, row in zip(scores[0], rows[0]) if row >= 0]

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
