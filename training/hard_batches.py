"""Hard-negative batches: each batch made of groups of images that are neighbours in the current embedding.

Look-alike pairs then meet in one batch, where the loss must tell them apart; with random batches they
seldom do. The neighbours are re-mined before every epoch with the model as it is, through the kit's own
encoding path (evaluation.embedding) and vector index (retrieval.vector_search).
"""
import logging
import time

import numpy as np
import torch
import torch.distributed as dist
from torch.utils.data import Sampler

from evaluation.embedding import sharded_image_features
from retrieval.vector_search import VectorIndex
from utils.distributed import broadcast_object

logger = logging.getLogger(__name__)

# Above this many images the neighbours come from FAISS HNSW rather than the exact product. Its
# multi-threaded build is not reproducible: rank 0 mines and broadcasts, and a run resumed at an epoch's end
# may then see other batches than an uninterrupted one (below the limit it sees the same).
EXACT_LIMIT = 50_000


def neighbour_groups(features, group, generator):
    """A permutation of the N images in groups of ``group`` near neighbours, the groups in random order.

    features: float32 [N, D], L2-normalised. Seeds are taken in random order; each takes its nearest
    images not yet taken (among its 4 x group nearest); what no seed could take is grouped at random;
    a last group shorter than ``group`` (N not a multiple of it) comes last, so every other group stays whole
    within a batch whose size is a multiple of ``group``. Returns LongTensor [N].
    """
    count = len(features)
    if count == 0:
        return torch.empty(0, dtype=torch.long)
    neighbours_k = min(count, 4 * group)
    index = VectorIndex(features, "exact" if count <= EXACT_LIMIT else "faiss-hnsw")
    _, neighbours = index.search(features, neighbours_k)
    taken = np.zeros(count, dtype=bool)
    groups, loose = [], []
    for seed in torch.randperm(count, generator=generator).tolist():
        if taken[seed]:
            continue
        members = [seed]
        taken[seed] = True
        for other in neighbours[seed]:
            if len(members) == group:
                break
            if other >= 0 and not taken[other]:
                members.append(int(other))
                taken[other] = True
        (groups if len(members) == group else loose).append(members)
    leftovers = [item for members in loose for item in members]
    leftovers = [leftovers[i] for i in torch.randperm(len(leftovers), generator=generator).tolist()]
    groups += [leftovers[start:start + group] for start in range(0, len(leftovers), group)]
    short = [groups.pop()] if len(groups[-1]) < group else []
    order = [groups[i] for i in torch.randperm(len(groups), generator=generator).tolist()] + short
    return torch.tensor([item for members in order for item in members], dtype=torch.long)


class MinedOrder(Sampler):
    """This rank's part of a mined global order: of each global batch, the rank's contiguous slice.

    Its order is set by HardNegativeMiner before every epoch (the placeholder until then is never iterated).
    """

    def __init__(self, size, batch_size, rank, world_size):
        self.size, self.batch_size, self.rank, self.world_size = size, batch_size, rank, world_size
        self.order = torch.randperm(size)

    def __iter__(self):
        local = self.batch_size // self.world_size
        usable = len(self.order) - len(self.order) % self.batch_size
        for start in range(0, usable, self.batch_size):
            first = start + self.rank * local
            yield from self.order[first:first + local].tolist()

    def __len__(self):
        return (self.size // self.batch_size) * (self.batch_size // self.world_size)


class HardNegativeMiner:
    """Re-mines a MinedOrder before each epoch: embed every training image with the model, group neighbours."""

    def __init__(self, sampler, table, transform, group, seed, batch_size, num_workers):
        self.sampler, self.table, self.transform = sampler, table, transform
        self.group, self.seed, self.batch_size, self.num_workers = group, seed, batch_size, num_workers

    def mine(self, model, epoch, device, dtype):
        """Set the sampler's order for ``epoch`` from ``model`` (the same order on every rank)."""
        started = time.perf_counter()
        was_training = model.training
        model.eval()
        features, kept = sharded_image_features(model, self.table, self.transform, self.batch_size,
                                                self.num_workers, device, dtype)
        model.train(was_training)
        order = None
        if not (dist.is_available() and dist.is_initialized()) or dist.get_rank() == 0:
            generator = torch.Generator().manual_seed(self.seed * 7919 + epoch)
            grouped = kept[neighbour_groups(features.numpy(), self.group, generator)]
            missing = torch.ones(self.sampler.size, dtype=torch.bool)
            missing[grouped] = False  # undecodable images: their dataset item stands in with another image
            order = torch.cat([grouped, missing.nonzero().flatten()])
        self.sampler.order = broadcast_object(order)  # one order for every rank, whatever the search's threads
        logger.info(f"hard-negative batches: {len(kept)} images grouped in {self.group}s of neighbours "
                    f"({time.perf_counter() - started:.1f} s)")

    def state(self):
        """What a mid-epoch checkpoint keeps so the resumed epoch sees the same batches."""
        return {"order": self.sampler.order.clone()}

    def restore(self, state):
        self.sampler.order = state["order"]
