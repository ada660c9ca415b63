"""Top-k inner-product search over stored embeddings: exact (a matmul) or a FAISS index."""
import numpy as np
import torch

from utils.errors import UserError

KINDS = ("exact", "faiss-flat", "faiss-hnsw", "faiss-ivf")


class VectorSearch:
    """search(queries float32 [Q, D], k) -> (scores [Q, k], rows [Q, k]), best first.

    exact: one matrix product per query batch, chunked over the gallery for bounded memory.
    faiss-*: FAISS indexes with inner-product metric (embeddings are L2-normalised, so this is cosine).
    """

    def __init__(self, features, kind="exact", hnsw_m=32, hnsw_ef_search=128, ivf_nlist=1024, ivf_nprobe=32):
        if kind not in KINDS:
            raise UserError(f"search kind '{kind}' unknown; choose one of {', '.join(KINDS)}")
        self.features = np.ascontiguousarray(features, dtype=np.float32)
        self.kind = kind
        self.index = None
        if kind != "exact" and len(self.features):
            import faiss

            dim = self.features.shape[1]
            if kind == "faiss-flat":
                self.index = faiss.IndexFlatIP(dim)
            elif kind == "faiss-hnsw":
                self.index = faiss.IndexHNSWFlat(dim, hnsw_m, faiss.METRIC_INNER_PRODUCT)
                self.index.hnsw.efSearch = hnsw_ef_search
            else:
                nlist = max(1, min(ivf_nlist, len(self.features) // 39))  # FAISS wants ~39 points per list
                self.index = faiss.IndexIVFFlat(faiss.IndexFlatIP(dim), dim, nlist, faiss.METRIC_INNER_PRODUCT)
                self.index.train(self.features)
                self.index.nprobe = min(ivf_nprobe, nlist)
            self.index.add(self.features)

    def __len__(self):
        return len(self.features)

    def search(self, queries, k):
        queries = np.ascontiguousarray(queries, dtype=np.float32)
        k = min(k, len(self.features))
        if k == 0:
            return np.zeros((len(queries), 0), np.float32), np.zeros((len(queries), 0), np.int64)
        if self.index is not None:
            scores, rows = self.index.search(queries, k)
            return scores, rows
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


def recall_against_exact(search, queries, k=10):
    """Fraction of the exact top-k rows that ``search`` also returns (1.0 for exact search)."""
    exact = VectorSearch(search.features, "exact")
    _, truth = exact.search(queries, k)
    _, found = search.search(queries, k)
    hits = sum(len(set(t.tolist()) & set(f.tolist())) for t, f in zip(truth, found))
    return hits / max(1, truth.size)
