"""Training batches streamed from webdataset tar shards, the same on every run for a (seed, epoch).

webdataset reads the tars (``tar_file_expander`` + ``group_by_keys``); this module decides who reads what.
Each (rank, worker role) "slot" yields whole batches, and every rank yields exactly ``batches`` batches per
epoch, whatever the shard sizes and however many samples are bad, so no rank ever waits on another.

When every shard's size is known (sizes.json, img2dataset's *_stats.json), an epoch is one pass: the shards
in an order drawn from (seed, epoch) form one stream of sample positions, and each slot reads its own
contiguous range of it, so every sample is used once (the last few that do not fill a global batch are left
for the next epoch's order). A bad or missing sample's place is filled by the samples that follow the range.
With sizes unknown (train-num-samples given instead), each slot reads its own shards, starting them again
when its quota is not reached: about one pass. Resampled shards are drawn with replacement.
"""
import io
import itertools
import json
import logging
import random
import zlib

import torch
from torch.utils.data import IterableDataset, get_worker_info

from data.datasets import draw_captions, item_seed
from data.image_file import ImageProblem, open_image_rgb
from data.shard_source import DEFAULT_TIMEOUT, shard_samples
from utils.errors import UserError

logger = logging.getLogger(__name__)
IMAGE_EXTENSIONS = ("jpg", "jpeg", "png", "webp", "gif", "bmp", "tif", "tiff")
MAX_WORKERS = 256  # per process, whose bad-sample counts are kept apart


def sample_captions(sample, caption_keys):
    """Every caption of a webdataset sample under ``caption_keys`` ("txt": the .txt file, one caption per line,
    as clip_benchmark's retrieval shards hold them; any other name: that key of the .json, a string or a list of
    strings). ValueError if there is none or the JSON is bad."""
    captions, meta = [], None
    for key in caption_keys:
        if key == "txt":
            if "txt" in sample:
                captions += sample["txt"].decode("utf-8").splitlines()
            continue
        if meta is None:
            meta = json.loads(sample["json"]) if "json" in sample else {}
        value = meta.get(key) if isinstance(meta, dict) else None
        if isinstance(value, str):
            captions.append(value)
        elif isinstance(value, list):
            captions += [v for v in value if isinstance(v, str)]
    captions = [caption.strip() for caption in captions if caption and caption.strip()]
    if not captions:
        raise ValueError(f"no caption under {', '.join(caption_keys)}")
    return captions


def image_bytes(sample):
    for extension in IMAGE_EXTENSIONS:
        if extension in sample:
            return sample[extension]
    raise ValueError("no image file in the sample")


def _shuffled(samples, size, rng):
    """A buffer shuffle (as webdataset's), drawing from ``rng`` so the order is a function of its seed."""
    buffer = []
    for sample in samples:
        buffer.append(sample)
        if len(buffer) >= size:
            index = rng.randrange(len(buffer))
            buffer[index], buffer[-1] = buffer[-1], buffer[index]
            yield buffer.pop()
    rng.shuffle(buffer)
    yield from buffer


class ShardProblem:
    """A worker's UserError, sent as an item: raised in a DataLoader worker, the error would be printed with
    the worker's traceback. ``reraise_problems`` raises it in the training process."""

    def __init__(self, message):
        self.message = message


def reraise_problems(batches):
    """``batches`` (a DataLoader over ShardBatches), raising the UserError a worker sent as a ShardProblem."""
    for batch in batches:
        if isinstance(batch, ShardProblem):
            raise UserError(batch.message)
        yield batch


def role_batches(batches, roles, role):
    """How many of ``batches`` (indices 0..batches-1) fall to ``role`` when batch k comes from role k % roles."""
    return batches // roles + (1 if role < batches % roles else 0)


class ShardBatches(IterableDataset):
    """Batches (images [b,3,S,S], input_ids [b,L]) of this rank, b = the per-process batch.

    Batch k of an epoch comes from worker role k % W, which is the order DataLoader takes batches from its
    W workers. ``set_epoch(epoch, first_batch)`` starts the next iteration at any batch of the epoch: each
    role skips the batches it made before, and worker i plays role (i + first_batch) % W, so the batches that
    follow are the ones an uninterrupted run would have given.
    """

    def __init__(self, urls, transform, collate, caption_keys, seed, rank, world_size, local_batch, batches,
                 buffer=256, draft_size=None, resampled_weights=None, captions_per_image=1, sizes=None,
                 timeout=DEFAULT_TIMEOUT):
        self.urls, self.transform, self.collate = list(urls), transform, collate
        # one pass per epoch needs every shard's size (samples per shard, in the order of urls)
        exact = not resampled_weights and sizes and None not in sizes and sum(sizes) > 0
        self.sizes, self.timeout = (list(sizes) if exact else None), timeout
        # resampled mode: every slot draws shards with replacement, with these weights (one per URL)
        self.resampled_weights = list(resampled_weights) if resampled_weights else None
        self.caption_keys, self.seed, self.rank, self.world_size = list(caption_keys), seed, rank, world_size
        self.local_batch, self.batches, self.buffer, self.draft_size = local_batch, batches, buffer, draft_size
        self.captions_per_image = captions_per_image
        # Shared memory: persistent workers see the next epoch's settings without being restarted.
        self.position = torch.zeros(2, dtype=torch.long).share_memory_()  # epoch, first batch
        self.bad = torch.zeros(MAX_WORKERS, dtype=torch.long).share_memory_()  # this epoch's bad samples, per worker

    def set_epoch(self, epoch, first_batch=0):
        """Call before creating the epoch's DataLoader iterator."""
        self.position[0], self.position[1] = epoch, first_batch
        self.bad.zero_()

    def bad_samples(self):
        """Bad samples this rank's workers skipped so far in the epoch (undecodable, no caption, bad JSON)."""
        return int(self.bad.sum())

    def _order(self, epoch, pass_number):
        order = list(range(len(self.urls)))
        random.Random(item_seed(self.seed, epoch, pass_number)).shuffle(order)
        return order

    def _samples(self, epoch, slot, slots, start, count, worker, rng):
        """This slot's samples, shuffled within a buffer: with sizes known, the stream positions [start, start +
        count) and then (only when bad samples left the quota short) the positions after them; else pass after
        pass over the slot's own shards. Resampled: shards drawn with replacement by weight, as open_clip's
        --dataset-resampled, from a stream of the slot."""
        def skip_shard(error):
            self.bad[worker] += 1
            logger.warning(f"shard read error, rest of the shard skipped: {str(error)[:200]}")
            return True

        if self.resampled_weights:
            yield from _shuffled(self._resampled(epoch, slot, skip_shard), self.buffer, rng)
        elif self.sizes:
            yield from _shuffled(self._positions(epoch, start, start + count, worker), self.buffer, rng)
            # read only when the range came up short, unshuffled so that a few places take a few reads; what
            # is missing there is counted by the slot it belongs to
            yield from self._positions(epoch, start + count, None, None)
        else:
            yield from self._own_shards(epoch, slot, slots, skip_shard, rng)

    def _positions(self, epoch, start, stop, worker):
        """The samples at positions [start, stop) of the epoch's stream (stop None: on without end), where pass
        p is every shard once, in ``_order(epoch, p)``, each taking as many positions as its size. Missing
        samples are counted and logged for ``worker`` (None: not at all)."""
        total = sum(self.sizes)
        pass_number = start // total
        position = pass_number * total
        fruitless = set()  # shards read whole since the last sample: all of them, and no shard can give one
        while stop is None or position < stop:
            for index in self._order(epoch, pass_number):
                begin = position
                position += self.sizes[index]
                first, last = max(begin, start), position if stop is None else min(position, stop)
                found = False
                if first < last:
                    for sample in self._shard_slice(index, first - begin, last - begin, worker):
                        found = True
                        yield sample
                if stop is not None and position >= stop:
                    return
                if found:
                    fruitless = set()
                elif (first, last) == (begin, position):  # a part of a shard may lack what the rest holds
                    fruitless.add(index)
                if stop is None and len(fruitless) == sum(1 for size in self.sizes if size):
                    raise UserError(f"no sample could be read from any of the {len(self.urls)} shard(s) (rank "
                                    f"{self.rank}); check that they exist and are readable")
            pass_number += 1

    def _shard_slice(self, index, first, last, worker):
        """Samples first..last-1 (counted from 0) of shard ``index``; the places of those it lacks (missing,
        unreadable or shorter than its size says) are counted as bad samples of ``worker`` (None: not counted)."""
        url, read = self.urls[index], 0

        def read_error(error):
            if worker is not None:
                logger.warning(f"{url}: read error, rest of the shard skipped: {str(error)[:200]}")
            return True

        try:
            for sample in shard_samples(url, read_error, self.timeout):
                read += 1
                if read > first:
                    yield sample
                if read >= last:
                    return
        except (OSError, UserError) as error:  # the shard could not be opened
            if worker is not None:
                logger.warning(f"shard {url} skipped: {str(error)[:200] or type(error).__name__}")
        if worker is None:
            return
        missing = last - max(read, first)
        self.bad[worker] += missing
        logger.warning(f"{url}: {missing} of its samples {first}..{last - 1} could not be read; the samples "
                       f"after this slot's range take their places")

    def _own_shards(self, epoch, slot, slots, skip_shard, rng):
        """Sizes unknown: pass after pass over the slot's own shards (or, with fewer shards than slots, every
        slots-th sample of all of them), shuffled within each pass; a slot whose own shards give nothing (empty,
        missing) reads all of them."""
        for pass_number in itertools.count():
            order = self._order(epoch, pass_number)
            split_shards = len(self.urls) >= slots  # else every slot reads all shards, keeping every slots-th
            found = 0
            for sample in _shuffled(self._pass(order[slot::slots] if split_shards else order, split_shards, slot,
                                               slots, skip_shard), self.buffer, rng):
                found += 1
                yield sample
            if found:
                continue
            logger.warning(f"the shards of rank {self.rank} (slot {slot}) gave no sample; reading all shards")
            for sample in _shuffled(self._pass(order, True, slot, slots, skip_shard), self.buffer, rng):
                found += 1
                yield sample
            if not found:
                raise UserError(f"no sample could be read from any of the {len(self.urls)} shard(s) (rank "
                                f"{self.rank}); check that they exist and are readable")

    def _resampled(self, epoch, slot, skip_shard):
        draws = random.Random(item_seed(self.seed, epoch, 2_000_000 + slot))
        empty = 0
        while True:
            index = draws.choices(range(len(self.urls)), weights=self.resampled_weights)[0]
            found = 0
            for sample in self._pass([index], True, slot, 1, skip_shard):
                found += 1
                yield sample
            empty = 0 if found else empty + 1
            if empty > 3 * len(self.urls) + 10:
                raise UserError(f"no sample could be read from the shards drawn for rank {self.rank} (slot {slot})")

    def _pass(self, mine, split_shards, slot, slots, skip_shard):
        """One pass over the shards ``mine`` (indices into urls): every sample of them, or, when all slots
        read all shards, every slots-th sample from the ``slot``-th on."""
        counter = 0
        for index in mine:
            try:
                for sample in shard_samples(self.urls[index], skip_shard, self.timeout):
                    counter += 1
                    if split_shards or (counter - 1) % slots == slot:
                        yield sample
            except (OSError, UserError) as error:  # the shard could not be opened
                skip_shard(error)

    def _decoded(self, sample, epoch, worker):
        """(image [3,S,S], caption or captions_per_image of them) of a sample, augmented from (seed, epoch,
        key); None if it is bad."""
        key = f"{sample.get('__url__', '')}/{sample['__key__']}"
        seed = item_seed(self.seed, epoch, zlib.crc32(key.encode("utf-8")))
        try:
            captions = sample_captions(sample, self.caption_keys)
            with torch.random.fork_rng(devices=[]):
                torch.default_generator.manual_seed(seed)
                image = self.transform(open_image_rgb(io.BytesIO(image_bytes(sample)), self.draft_size))
        except (ImageProblem, ValueError, UnicodeDecodeError) as problem:
            self.bad[worker] += 1
            if int(self.bad[worker]) <= 5:  # rate-limited: the epoch's count is reported after it
                logger.warning(f"skipped sample '{key}': {str(problem)[:200]}")
            return None
        return image, draw_captions(captions, self.captions_per_image, random.Random(seed))


    def _usable(self, sample, worker):
        """Whether ``_decoded`` would use the sample, without transforming it (for batches a resumed run skips:
        they were made before the interruption, only which samples they took matters)."""
        try:
            sample_captions(sample, self.caption_keys)
            open_image_rgb(io.BytesIO(image_bytes(sample)), self.draft_size)
            return True
        except (ImageProblem, ValueError, UnicodeDecodeError):
            self.bad[worker] += 1
            return False

    def __iter__(self):
        try:
            yield from self._batches()
        except UserError as error:
            yield ShardProblem(str(error))

    def _batches(self):
        info = get_worker_info()
        workers, worker = (info.num_workers, info.id) if info else (1, 0)
        worker_cell = worker % MAX_WORKERS
        epoch, first = int(self.position[0]), int(self.position[1])
        role = (worker + first) % workers
        quota = role_batches(self.batches, workers, role)
        done = role_batches(first, workers, role)
        if done >= quota:  # nothing left for this role: open no shard at all
            return
        slot, slots = self.rank * workers + role, self.world_size * workers
        # the slot's stream range: rank by rank, role by role, as many samples as its batches take
        start = (self.rank * self.batches + sum(role_batches(self.batches, workers, r) for r in range(role))) \
            * self.local_batch
        rng = random.Random(item_seed(self.seed, epoch, 1_000_000 + slot))
        made, items, bad_in_a_row = 0, [], 0
        limit = max(1000, 2 * self.batches * self.local_batch)
        for sample in self._samples(epoch, slot, slots, start, quota * self.local_batch, worker_cell, rng):
            skipping = made < done  # batches before ``first`` were made by the interrupted run
            item = self._usable(sample, worker_cell) if skipping else self._decoded(sample, epoch, worker_cell)
            if not item:
                bad_in_a_row += 1
                if bad_in_a_row > limit:  # e.g. a caption-key no sample has: stop instead of reading forever
                    raise UserError(f"{bad_in_a_row} samples in a row were unusable (last: "
                                    f"'{sample.get('__key__')}' of {sample.get('__url__')}); check the shards and "
                                    f"caption-key {','.join(self.caption_keys)}")
                continue
            bad_in_a_row = 0
            items.append(item)
            if len(items) == self.local_batch:
                if not skipping:
                    yield self.collate(items)
                made, items = made + 1, []
                if made == quota:
                    return


def first_captions(urls, caption_keys, limit=2000, timeout=DEFAULT_TIMEOUT):
    """Up to ``limit`` captions from the first shard that has any: what augmentation's auto policy looks at.
    UserError when no shard has a caption under ``caption_keys``."""
    captions = []
    for url in urls[:3]:
        try:
            for sample in shard_samples(url, lambda error: True, timeout):
                try:
                    captions += sample_captions(sample, caption_keys)
                except (ValueError, UnicodeDecodeError):
                    continue
                if len(captions) >= limit:
                    return captions
        except (OSError, UserError):
            continue
        if captions:
            return captions
    raise UserError(f"no sample of the shards ({urls[0]} ...) has a caption under caption-key "
                    f"'{','.join(caption_keys)}' (txt: the .txt file; any other name: a key of the .json)")


def shard_notice(urls, samples, world_size, workers, resampled_weights=None, exact=False):
    """One line on how the shards are split and what an epoch is."""
    slots = world_size * max(workers, 1)
    if resampled_weights:
        split = "resampled: every slot draws shards with replacement" + (
            "" if len(set(resampled_weights)) == 1 else ", weighted by source") + (
            "; an epoch is that many draws, not one pass")
    elif exact:
        split = "one pass per epoch: each slot reads its own range of the shards' samples, each sample once"
    else:
        split = ("shard sizes unknown (no sizes.json or *_stats.json): each slot reads "
                 + ("its own shards" if len(urls) >= slots else f"all {len(urls)} shard(s), keeping its share")
                 + " until its quota, so an epoch is about one pass (samples may repeat or be left out)")
    return (f"shards: {len(urls)} file(s), {samples} samples per epoch, {slots} slot(s) "
            f"(processes x workers); {split}")
