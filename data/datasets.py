"""PyTorch datasets over a CaptionTable and the collate function that tokenizes captions."""
import logging

import torch
from torch.utils.data import Dataset, default_collate

from data.image_file import ImageProblem, open_image_rgb
from utils.errors import UserError

logger = logging.getLogger(__name__)


def _load(record, transform, draft_size=None):
    """Transformed image tensor, or None (with a one-line report) if the file cannot be decoded."""
    try:
        return transform(open_image_rgb(record.image_source(), draft_size))
    except ImageProblem as problem:
        logger.warning(f"skipped image '{record.filename}': {problem}")
        return None


def item_seed(seed, epoch, index):
    """The augmentation seed of one item: a function of (seed, epoch, index), below 2**63 for any seed."""
    return ((seed * 1_000_003 + epoch) * 1_000_003 + index) % 2 ** 63


def draw_captions(captions, count, rng):
    """``count`` of ``captions`` drawn with ``rng`` (random.Random): one caption as a str, several as a list,
    distinct while there are enough (an image with fewer captions repeats some)."""
    if count == 1:
        return captions[rng.randrange(len(captions))]
    if len(captions) >= count:
        return rng.sample(captions, count)
    return rng.sample(captions, len(captions)) + [captions[rng.randrange(len(captions))]
                                                  for _ in range(count - len(captions))]


class TrainImages(Dataset):
    """One item per image, paired with one of its captions drawn afresh each epoch (``captions_per_image``
    k > 1: k of them, distinct while the image has k).

    Iterating over images (not rows) means no image appears twice in a batch, so an image's own captions
    are its only positives. Item: (image [3,S,S], caption str, or a list of k captions).

    An image that fails to decode is replaced by the next decodable image in dataset order (with that image's
    caption and this item's augmentation), the same on every rank and worker, and logged once: batches keep
    their size, so every torchrun rank runs the same collectives with the same shapes.
    """

    def __init__(self, table, transform, seed, draft_size=None, captions_per_image=1, negatives=None):
        self.records = table.images
        self.captions_per_image = captions_per_image
        # negatives: per image, {caption: the caption with attributes or roles swapped} (data.negatives);
        # each item then ends with the negative of its first caption (the image's any other, or "")
        self.negatives = negatives
        self.transform = transform
        self.seed = seed
        self.draft_size = draft_size
        self.counts = torch.tensor([len(record.captions) for record in self.records])
        # Shared memory: persistent DataLoader workers see each epoch's new draw without being restarted.
        shape = (len(self.records),) if captions_per_image == 1 else (len(self.records), captions_per_image)
        self.choice = torch.zeros(shape, dtype=torch.long).share_memory_()
        self.epoch = torch.zeros(1, dtype=torch.long).share_memory_()
        # Images found undecodable, by any worker: reported once, then skipped without another attempt.
        self.broken = torch.zeros(len(self.records), dtype=torch.bool).share_memory_()
        self.set_epoch(0)

    def set_epoch(self, epoch):
        """Draw this epoch's caption for every image, reproducibly from (seed, epoch).

        Call before creating the epoch's DataLoader iterator (workers prefetch as soon as it exists).
        """
        self.epoch.fill_(epoch)
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
        if self.captions_per_image == 1:
            self.choice.copy_((torch.rand(len(self.records), generator=generator) * self.counts).long())
            return
        # k distinct captions per image: a random order of its captions (scores past its count sort last),
        # cycled when it has fewer than k
        most = int(self.counts.max())
        scores = torch.rand(len(self.records), most, generator=generator)
        scores[torch.arange(most)[None, :] >= self.counts[:, None]] = 2.0
        order = scores.argsort(dim=1)[:, :min(most, self.captions_per_image)]
        self.choice.copy_(order[:, torch.arange(self.captions_per_image) % order.shape[1]] % self.counts[:, None])

    def __len__(self):
        return len(self.records)

    def _decoded(self, index):
        """Transformed image [3,S,S] of ``index`` or of its replacement, and the replacement's index."""
        for step in range(len(self.records)):
            candidate = (index + step) % len(self.records)
            if self.broken[candidate]:
                continue
            try:
                return self.transform(open_image_rgb(self.records[candidate].image_source(), self.draft_size)), candidate
            except ImageProblem as problem:
                self.broken[candidate] = True
                logger.warning(f"image '{self.records[candidate].filename}' cannot be decoded ({problem}); "
                               f"replaced by the next decodable image in every epoch")
        raise UserError("no training image can be decoded")

    def __getitem__(self, index):
        # Augmentation randomness is a function of (seed, epoch, index): the same whatever the number of
        # workers, their persistence, or a resume in between. Only the CPU generator is reseeded (and
        # restored): under num-workers 0 this runs in the training process, whose CUDA stream must not move.
        with torch.random.fork_rng(devices=[]):
            torch.default_generator.manual_seed(item_seed(self.seed, int(self.epoch), index))
            image, source = self._decoded(index)
        captions = self.records[source].captions
        if self.captions_per_image == 1:
            drawn = captions[int(self.choice[source])]
        else:
            drawn = [captions[int(choice)] for choice in self.choice[source]]
        if self.negatives is None:
            return image, drawn
        swapped = self.negatives[source]
        first = drawn if isinstance(drawn, str) else drawn[0]
        negative = swapped.get(first) or next(iter(swapped.values()), "")
        return image, [*([drawn] if isinstance(drawn, str) else drawn), negative]


class EvalImages(Dataset):
    """Each image once, for embedding. Item: (image [3,S,S] or None, image index)."""

    def __init__(self, table, transform):
        self.records = table.images
        self.transform = transform

    def __len__(self):
        return len(self.records)

    def __getitem__(self, index):
        return _load(self.records[index], self.transform), index


class PairCollate:
    """Batch of (image, caption or list of g texts) -> (images [B,3,S,S], input_ids [B*g,L]), the texts
    image-major (image i's are rows i*g .. i*g+g-1: its captions, then its negatives), as the objectives expect.
    Images are stacked by default_collate: inside a DataLoader worker it writes the batch straight into shared
    memory, which saves a copy of every batch on its way to the main process."""

    def __init__(self, tokenizer):
        self.tokenizer = tokenizer

    def __call__(self, items):
        images, captions = zip(*items)
        flat = [text for caption in captions for text in ([caption] if isinstance(caption, str) else caption)]
        return default_collate(images), self.tokenizer(flat)


def collate_images(items):
    """Batch of (image or None, index) -> (images [B,3,S,S], indices LongTensor[B]) of decodable items."""
    items = [(image, index) for image, index in items if image is not None]
    if not items:
        return None, torch.empty(0, dtype=torch.long)
    images, indices = zip(*items)
    return default_collate(images), torch.tensor(indices)
