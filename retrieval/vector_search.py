"""Top-k inner-product search over stored embeddings: a vector index, exact (a matmul) or FAISS.

"Vector index" is the in-memory search structure; the "index folder" (retrieval/gallery.py) is what
index.py writes to disk, optionally with the FAISS index itself (vectors.faiss) so that big galleries are
trained and encoded once, not at every start of the service.
"""
import logging
import mmap
import os
import re
import sys
import tempfile
from contextlib import contextmanager

from dataclasses import dataclass, fields

import numpy as np
import torch

from utils.atomic_file import atomic_write_to_path
from utils.errors import UserError

logger = logging.getLogger(__name__)
KINDS = ("exact", "faiss-flat", "faiss-hnsw", "faiss-ivf", "faiss-ivfpq")
TRAIN_POINTS_PER_LIST = 100  # FAISS wants >= 39 per IVF list; more only costs training time and memory
ADD_ROWS = 65_536            # vectors added to a FAISS index at a time, from the memory-mapped embeddings


@dataclass(frozen=True)
class SearchSettings:
    """How a gallery is searched (the ``search`` key and hnsw-*, ivf-*, ivfpq-* of index.py, search.py and
    serve.py). Build settings (hnsw_m, ivf_nlist, ivfpq_m, ivfpq_bits) shape the FAISS index; search-time ones
    (hnsw_ef_search, ivf_nprobe, ivfpq_rerank) only how widely it is searched."""
    kind: str = "exact"
    hnsw_m: int = 32
    hnsw_ef_search: int = 128
    ivf_nlist: int = 1024
    ivf_nprobe: int = 32
    ivfpq_m: int = 64
    ivfpq_bits: int = 8
    ivfpq_rerank: int = 50

    @classmethod
    def from_config(cls, config):
        """kind from the ``search`` key, every other field from its own key (hnsw_m from hnsw-m, ...)."""
        return cls(**{field.name: config["search" if field.name == "kind" else field.name.replace("_", "-")]
                      for field in fields(cls)})

    def build_keys(self, count):
        """The build settings a stored index must have to serve these settings over ``count`` vectors, as
        meta.json's "vector-index" records them."""
        keys = {"kind": self.kind}
        if self.kind == "faiss-hnsw":
            keys["hnsw-m"] = self.hnsw_m
        if self.kind in ("faiss-ivf", "faiss-ivfpq"):
            keys["ivf-nlist"] = ivf_lists(self.ivf_nlist, count)
        if self.kind == "faiss-ivfpq":
            keys.update({"ivfpq-m": self.ivfpq_m, "ivfpq-bits": self.ivfpq_bits})
        return keys


def _random_access(array):
    """Tell the kernel that ``array``'s file is read at random rows (re-ranking reads a few hundred scattered
    rows per query): without it, each row read pulls in the read-ahead window around it too."""
    mapping = getattr(array, "_mmap", None) or getattr(getattr(array, "base", None), "_mmap", None)
    if mapping is not None and hasattr(mmap, "MADV_RANDOM"):
        mapping.madvise(mmap.MADV_RANDOM)


@contextmanager
def _one_line_for_faiss_warnings():
    """FAISS's C++ code writes "WARNING clustering N points to K centroids: please provide at least M training
    points" to the process's stderr once per codebook (ivfpq-m of them): gather them from file descriptor 2 and
    log one line instead. Anything else written there meanwhile is passed on unchanged."""
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as captured:
        os.dup2(captured.fileno(), 2)
        try:
            yield
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            captured.seek(0)
            lines = captured.read().decode("utf-8", "replace").splitlines()
    warned = [match for match in map(_FAISS_FEW_POINTS.match, lines) if match]
    for line in lines:
        if not _FAISS_FEW_POINTS.match(line):
            print(line, file=sys.stderr)
    if warned:
        points, centroids, wanted = warned[0].groups()
        logger.info(f"faiss: {len(warned)} codebook(s) of {centroids} centroids trained on {points} points (FAISS "
                    f"suggests {wanted} or more)")


_FAISS_FEW_POINTS = re.compile(r"WARNING clustering (\d+) points to (\d+) centroids: please provide at least "
                               r"(\d+) training points")


def ivf_lists(requested, count):
    """IVF lists used for ``count`` vectors: FAISS wants about 39 training points per list."""
    return max(1, min(requested, count // 39))


class VectorIndex:
    """search(queries float32 [Q, D], k) -> (scores [Q, k], rows [Q, k]), best first.

    features: float32 [N, D], may be memory-mapped (only read in chunks, never copied whole).
    exact: one matrix product per query batch, chunked over the gallery for bounded memory.
    faiss-*: a FAISS index with inner-product metric (embeddings are L2-normalised, so this is cosine).
    faiss-ivfpq: product-quantised codes, ivfpq-m bytes per vector (at ivfpq-bits 8) instead of 4 x D, trained
    on a bounded sample: the memory for a 10M-image gallery at m 64 is about 0.7 GB instead of 20 GB. The best
    k x ivfpq-rerank candidates are re-scored with the stored float vectors (read from the memory-mapped
    file: only those rows), which restores most of the recall the codes lose.
    """

    def __init__(self, features, kind="exact", faiss_index=None, settings=None, **options):
        """kind and ``options`` (SearchSettings' fields), or ``settings`` whole; faiss_index: one already built."""
        settings = settings or SearchSettings(kind, **options)
        kind = settings.kind
        if kind not in KINDS:
            raise UserError(f"search kind '{kind}' unknown; choose one of {', '.join(KINDS)}")
        self.features = features if isinstance(features, np.memmap) else np.ascontiguousarray(features, np.float32)
        self.kind = kind
        self.rerank = settings.ivfpq_rerank if kind == "faiss-ivfpq" else 0
        if self.rerank and isinstance(self.features, np.memmap):
            _random_access(self.features)
        self.build = {"kind": kind}  # what the stored index was built with (meta.json "vector-index")
        self.faiss_index = faiss_index
        if kind != "exact" and faiss_index is None and len(self.features):
            self.faiss_index = self._build(settings.hnsw_m, settings.ivf_nlist, settings.ivfpq_m, settings.ivfpq_bits)
        if self.faiss_index is not None:
            self._set_search_breadth(settings.hnsw_ef_search, settings.ivf_nprobe)

    def _build(self, hnsw_m, ivf_nlist, ivfpq_m, ivfpq_bits):
        import faiss

        count, dim = self.features.shape
        nlist = ivf_lists(ivf_nlist, count)
        if self.kind == "faiss-flat":
            index = faiss.IndexFlatIP(dim)
        elif self.kind == "faiss-hnsw":
            index = faiss.IndexHNSWFlat(dim, hnsw_m, faiss.METRIC_INNER_PRODUCT)
            self.build["hnsw-m"] = hnsw_m
        elif self.kind == "faiss-ivf":
            index = faiss.IndexIVFFlat(faiss.IndexFlatIP(dim), dim, nlist, faiss.METRIC_INNER_PRODUCT)
        else:
            if dim % ivfpq_m:
                raise UserError(f"ivfpq-m {ivfpq_m} must divide the embedding size {dim}")
            if count < 2 ** ivfpq_bits:
                raise UserError(f"faiss-ivfpq with ivfpq-bits {ivfpq_bits} needs at least {2 ** ivfpq_bits} images "
                                f"to train its codebooks (the gallery has {count}); lower ivfpq-bits, or use exact "
                                f"or faiss-ivf for a gallery this small")
            index = faiss.IndexIVFPQ(faiss.IndexFlatIP(dim), dim, nlist, ivfpq_m, ivfpq_bits,
                                     faiss.METRIC_INNER_PRODUCT)
            self.build.update({"ivfpq-m": ivfpq_m, "ivfpq-bits": ivfpq_bits})
        if self.kind in ("faiss-ivf", "faiss-ivfpq"):
            self.build["ivf-nlist"] = nlist
            with _one_line_for_faiss_warnings():
                index.train(self._training_sample(max(TRAIN_POINTS_PER_LIST * nlist, 64 * 2 ** ivfpq_bits)))
        for start in range(0, count, ADD_ROWS):
            index.add(np.ascontiguousarray(self.features[start:start + ADD_ROWS], np.float32))
        return index

    def _training_sample(self, limit):
        """At most ``limit`` rows, spread over the gallery (fixed seed: the same index for the same gallery)."""
        count = len(self.features)
        if count <= limit:
            return np.ascontiguousarray(self.features, np.float32)
        rows = np.sort(np.random.default_rng(0).choice(count, limit, replace=False))
        return np.ascontiguousarray(self.features[rows], np.float32)

    def _set_search_breadth(self, hnsw_ef_search, ivf_nprobe):
        if self.kind == "faiss-hnsw":
            self.faiss_index.hnsw.efSearch = hnsw_ef_search
        elif self.kind in ("faiss-ivf", "faiss-ivfpq"):
            self.faiss_index.nprobe = min(ivf_nprobe, self.faiss_index.nlist)

    def save(self, path):
        """Write the FAISS index to ``path`` with the project's atomic writer (temporary file, fsync, rename)."""
        import faiss

        try:
            atomic_write_to_path(path, lambda temporary: faiss.write_index(self.faiss_index, temporary))
        except RuntimeError as error:  # FAISS's own write errors; an OSError is a UserError already
            raise UserError(f"cannot write '{path}': {error}") from None

    @classmethod
    def load(cls, path, features, settings):
        """The FAISS index index.py stored at ``path`` over ``features``, searched with ``settings``' breadth."""
        import faiss

        try:
            faiss_index = faiss.read_index(path)
        except RuntimeError as error:
            raise UserError(f"'{path}' is damaged ({str(error).splitlines()[0]}); rebuild the index") from None
        if faiss_index.ntotal != len(features):
            raise UserError(f"'{path}' holds {faiss_index.ntotal} vectors, the gallery {len(features)}; rebuild it")
        return cls(features, faiss_index=faiss_index, settings=settings)

    def __len__(self):
        return len(self.features)

    def search(self, queries, k):
        queries = np.ascontiguousarray(queries, dtype=np.float32)
        k = min(k, len(self.features))
        if k == 0:
            return np.zeros((len(queries), 0), np.float32), np.zeros((len(queries), 0), np.int64)
        if self.faiss_index is not None:
            return self._reranked(queries, k) if self.rerank else self.faiss_index.search(queries, k)
        query = torch.from_numpy(queries)
        best_scores, best_rows = None, None
        chunk = max(1, 2 ** 24 // max(1, len(queries)))
        for start in range(0, len(self.features), chunk):
            block = query @ torch.from_numpy(np.ascontiguousarray(self.features[start:start + chunk])).t()
            top = block.topk(min(k, block.shape[1]), dim=1)
            scores, rows = top.values, top.indices + start
            if best_scores is not None:
                scores, rows = torch.cat([best_scores, scores], 1), torch.cat([best_rows, rows], 1)
                keep = scores.topk(min(k, scores.shape[1]), dim=1)
                scores, rows = keep.values, rows.gather(1, keep.indices)
            best_scores, best_rows = scores, rows
        return best_scores.numpy(), best_rows.numpy()


    def _reranked(self, queries, k):
        """FAISS's best k x rerank candidates per query, re-scored exactly; the best k of them."""
        _, candidates = self.faiss_index.search(queries, min(len(self.features), k * self.rerank))
        rows = np.unique(candidates[candidates >= 0])
        if not rows.size:  # the probed lists were all empty
            return np.full((len(queries), 0), -np.inf, np.float32), np.full((len(queries), 0), -1, np.int64)
        vectors = np.asarray(self.features[rows], np.float32)  # [R, D]: only the candidates' rows are read
        gathered = vectors[np.searchsorted(rows, np.maximum(candidates, rows[0]))]  # [Q, C, D]
        scores = np.einsum("qd,qcd->qc", queries, gathered)
        scores[candidates < 0] = -np.inf  # FAISS pads with -1 when a probe finds fewer than C
        order = np.argsort(-scores, axis=1, kind="stable")[:, :k]
        return np.take_along_axis(scores, order, 1), np.take_along_axis(candidates, order, 1)


def recall_against_exact(vector_index, queries, k=10):
    """Fraction of the exact top-k rows that ``vector_index`` also returns (1.0 for exact search)."""
    _, truth = VectorIndex(vector_index.features, "exact").search(queries, k)
    _, found = vector_index.search(queries, k)
    hits = sum(len(set(t.tolist()) & set(f.tolist())) for t, f in zip(truth, found))
    return hits / max(1, truth.size)


def exact_recall_notice(vector_index, sample=200, k=10):
    """The vector index's recall@k against exact search, on up to ``sample`` gallery items as queries."""
    features = vector_index.features
    rows = np.unique(np.linspace(0, len(features) - 1, min(sample, len(features))).astype(int))
    return recall_against_exact(vector_index, np.ascontiguousarray(features[rows], np.float32), k)


def stored_or_built(directory, gallery_meta, features, settings):
    """The vector index for a gallery: index.py's stored vectors.faiss when it is of ``settings``' kind and
    holds these very vectors (its own build settings then apply; search-time ones come from ``settings``),
    else one built now from ``settings`` (a SearchSettings; logged)."""
    kind = settings.kind
    stored = gallery_meta.get("vector-index") or {}
    path = os.path.join(directory, "vectors.faiss")
    if kind == "exact":
        return VectorIndex(features, settings=settings)
    if stored.get("kind") == kind and stored.get("images") == len(features) and os.path.isfile(path):
        built = {key: value for key, value in stored.items() if key not in ("kind", "images", "recall@10")}
        wanted = settings.build_keys(len(features))
        if any(wanted.get(key) != value for key, value in built.items()):
            logger.info(f"{directory}: using the stored {kind} index as index.py built it "
                        f"({', '.join(f'{key} {value}' for key, value in built.items())}), not this config's")
        return VectorIndex.load(path, features, settings)
    logger.info(f"{directory}: no stored {kind} index; building one in memory (index.py --search {kind} stores it)")
    return VectorIndex(features, settings=settings)
