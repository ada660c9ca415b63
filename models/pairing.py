"""Which texts of a batch are positives of which images: each text's owner, and optionally equal texts.

owner [T]: the image row of each text, or -1 for an extra negative (a compositional negative: no query, and
no image's positive). keys [T] (optional): texts with equal keys are the same caption. With keys, a text is a
positive of every image that owns a text with its key: "a photo of a dog" under two images is a positive of
both, not a false negative of the other (classification-style captions, repeated alt-texts).
"""
import torch

_MODULI = (2_147_483_629, 2_147_483_587)  # primes below 2^31: each partial product stays below 2^63
_BASES = (1_000_003, 999_983)


def text_keys(input_ids, pad_token_id):
    """LongTensor[T] of a hash of each row's tokens, padding left out: equal captions (equal token rows, as
    tokenized and truncated) get equal keys whatever the batch's padded width, on every rank."""
    tokens = input_ids.long() + 1  # 0 stays free for padding
    tokens = tokens.masked_fill(input_ids == pad_token_id, 0)
    keys = []
    for modulus, base in zip(_MODULI, _BASES):
        value = torch.zeros(input_ids.shape[0], dtype=torch.long, device=input_ids.device)
        for column in tokens.unbind(dim=1):
            value = torch.where(column > 0, (value * base + column) % modulus, value)
        keys.append(value)
    return keys[0] * _MODULI[1] + keys[1]


class Pairing:
    """The positives of a batch: owner [T] and optionally keys [T] (see the module's docstring)."""

    def __init__(self, owner, keys=None):
        self.owner = owner
        self.keys = keys
        self._image_keys = None

    @property
    def queries(self):
        """BoolTensor[T]: the texts that are captions (a text->image query), not extra negatives."""
        return self.owner >= 0

    def image_keys(self, images):
        """LongTensor[images, k]: each image's own texts' keys, padded with a value no key takes."""
        if self._image_keys is None or self._image_keys.shape[0] != images:
            owned = self.owner >= 0
            rows, order = torch.sort(self.owner[owned], stable=True)
            counts = torch.bincount(rows, minlength=images)
            slots = torch.arange(len(rows), device=rows.device) - (torch.cumsum(counts, 0) - counts)[rows]
            table = torch.full((images, max(int(counts.max().item()) if len(rows) else 0, 1)),
                               torch.iinfo(torch.long).min, dtype=torch.long, device=rows.device)
            table[rows, slots] = self.keys[owned][order]
            self._image_keys = table
        return self._image_keys

    def block(self, images, start=0, stop=None):
        """BoolTensor[images, stop - start]: whether text j (start <= j < stop) is a positive of image i."""
        stop = self.owner.shape[0] if stop is None else stop
        rows = torch.arange(images, device=self.owner.device)[:, None]
        positive = self.owner[None, start:stop] == rows
        if self.keys is not None:
            positive = positive | (self.image_keys(images)[:, :, None] == self.keys[None, None, start:stop]).any(dim=1)
        return positive


def as_pairing(owner_or_pairing):
    """A Pairing from an owner tensor (or the Pairing itself)."""
    return owner_or_pairing if isinstance(owner_or_pairing, Pairing) else Pairing(owner_or_pairing)
