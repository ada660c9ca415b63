"""Top-k inner-product search over stored embeddings: a vector index, exact (a matmul) or FAISS.

"Vector index" is the in-memory search structure; the "index folder" (retrieval/gallery.py) is what
index.py writes to disk.
"""
import numpy as np
import torch

from utils.errors import UserError

KINDS = ("exact", "faiss-flat", "faiss-hnsw", "faiss-ivf")


def vector_index_settings(config):
    """The vector index keys of a config (search, hnsw-*, ivf-*), as VectorIndex keyword arguments."""
    return {"kind": config["search"], "hnsw_m": config["hnsw-m"], "hnsw_ef_search": config["hnsw-ef-search"],
            "ivf_nlist": config["ivf-nlist"], "ivf_nprobe": config["ivf-nprobe"]}


class VectorIndex:
    """search(queries float32 [Q, D], k) -> (scores [Q, k], rows [Q, k]), best first.

    exact: one matrix product per query batch, chunked over the gallery for bounded memory.
    faiss-*: a FAISS index with inner-product metric (embeddings are L2-normalised, so this is cosine).
    """

    def __init__(self, features, kind="exact", hnsw_m=32, hnsw_ef_search=128, ivf_nlist=1024, ivf_nprobe=32):
        if kind not in KINDS:
            raise UserError(f"search kind '{kind}' unknown; choose one of {', '.join(KINDS)}")
        self.features = np.ascontiguousarray(features, dtype=np.float32)
        self.kind = kind
        self.faiss_index = None
        if kind != "exact" and len(self.features):
            import faiss

            dim = self.features.shape[1]
            if kind == "faiss-flat":
                self.faiss_index = faiss.IndexFlatIP(dim)
            elif kind == "faiss-hnsw":
                self.faiss_index = faiss.IndexHNSWFlat(dim, hnsw_m, faiss.METRIC_INNER_PRODUCT)
                self.faiss_index.hnsw.efSearch = hnsw_ef_search
            else:
                nlist = max(1, min(ivf_nlist, len(self.features) // 39))  # FAISS wants ~39 points per list
                self.faiss_index = faiss.IndexIVFFlat(faiss.IndexFlatIP(dim), dim, nlist, faiss.METRIC_INNER_PRODUCT)
                self.faiss_index.train(self.features)
                self.faiss_index.nprobe = min(ivf_nprobe, nlist)
            self.faiss_index.add(self.features)

    def __len__(self):
        return len(self.features)

    def search(self, queries, k):
        queries = np.ascontiguousarray(queries, dtype=np.float32)
        k = min(k, len(self.features))
        if k == 0:
            return np.zeros((len(queries), 0), np.float32), np.zeros((len(queries), 0), np.int64)
        if self.faiss_index is not None:
            return self.faiss_index.search(queries, k)
        gallery = torch.from_numpy(self.features)
        query = torch.from_numpy(queries)
        best_scores, best_rows = None, None
        chunk = max(1, 2 ** 24 // max(1, len(queries)))
        for start in range(0, len(gallery), chunk):
            block = query @ gallery[start:start + chunk].t()
            top = block.topk(min(k, block.shape[1]), dim=1)
            scores, rows = top.values, top.indices + start
            if best_scores is not None:
                scores, rows = torch.cat([best_scores, scores], 1), torch.cat([best_rows, rows], 1)
                keep = scores.topk(min(k, scores.shape[1]), dim=1)
                scores, rows = keep.values, rows.gather(1, keep.indices)
            best_scores, best_rows = scores, rows
        return best_scores.numpy(), best_rows.numpy()


def recall_against_exact(vector_index, queries, k=10):
    """Fraction of the exact top-k rows that ``vector_index`` also returns (1.0 for exact search)."""
    _, truth = VectorIndex(vector_index.features, "exact").search(queries, k)
    _, found = vector_index.search(queries, k)
    hits = sum(len(set(t.tolist()) & set(f.tolist())) for t, f in zip(truth, found))
    return hits / max(1, truth.size)


def exact_recall_notice(vector_index, sample=200, k=10):
    """The vector index's recall@k against exact search, on up to ``sample`` gallery items as queries."""
    features = vector_index.features
    queries = features[np.linspace(0, len(features) - 1, min(sample, len(features))).astype(int)]
    return recall_against_exact(vector_index, queries, k)
