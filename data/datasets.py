"""PyTorch datasets over a CaptionTable and the collate function that tokenizes captions."""
import logging

import torch
from torch.utils.data import Dataset

from data.image_file import ImageProblem, open_image_rgb

logger = logging.getLogger(__name__)


def _load(record, transform, draft_size=None):
    """Transformed image tensor, or None (with a one-line report) if the file cannot be decoded."""
    try:
        return transform(open_image_rgb(record.path, draft_size))
    except ImageProblem as problem:
        logger.warning(f"skipped image '{record.filename}': {problem}")
        return None


class TrainImages(Dataset):
    """One item per image, paired with one of its captions drawn afresh each epoch.

    Iterating over images (not rows) means no image appears twice in a batch, so the diagonal of the
    similarity matrix is the only positive. Item: (image [3,S,S], caption str) or None.
    """

    def __init__(self, table, transform, seed, draft_size=None):
        self.records = table.images
        self.transform = transform
        self.seed = seed
        self.draft_size = draft_size
        self.counts = torch.tensor([len(record.captions) for record in self.records])
        # Shared memory: persistent DataLoader workers see each epoch's new draw without being restarted.
        self.choice = torch.zeros(len(self.records), dtype=torch.long).share_memory_()
        self.epoch = torch.zeros(1, dtype=torch.long).share_memory_()
        self.set_epoch(0)

    def set_epoch(self, epoch):
        """Draw this epoch's caption for every image, reproducibly from (seed, epoch).

        Call before creating the epoch's DataLoader iterator (workers prefetch as soon as it exists).
        """
        self.epoch.fill_(epoch)
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
        self.choice.copy_((torch.rand(len(self.records), generator=generator) * self.counts).long())

    def __len__(self):
        return len(self.records)

    def __getitem__(self, index):
        record = self.records[index]
        # Augmentation randomness is a function of (seed, epoch, index): the same whatever the number of
        # workers, their persistence, or a resume in between.
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed((self.seed * 1_000_003 + int(self.epoch)) * 1_000_003 + index)
            image = _load(record, self.transform, self.draft_size)
        return None if image is None else (image, record.captions[int(self.choice[index])])


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
    """Batch of (image, caption) -> (images [B,3,S,S], input_ids [B,L]); undecodable items dropped."""

    def __init__(self, tokenizer):
        self.tokenizer = tokenizer

    def __call__(self, items):
        items = [item for item in items if item is not None]
        if len(items) < 2:
            return None  # a contrastive batch needs a negative; BatchNorm needs two samples
        images, captions = zip(*items)
        return torch.stack(images), self.tokenizer(list(captions))


def collate_images(items):
    """Batch of (image or None, index) -> (images [B,3,S,S], indices LongTensor[B]) of decodable items."""
    items = [(image, index) for image, index in items if image is not None]
    if not items:
        return None, torch.empty(0, dtype=torch.long)
    images, indices = zip(*items)
    return torch.stack(images), torch.tensor(indices)
