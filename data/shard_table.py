"""A validation split from webdataset shards, read into memory as the CaptionTable evaluation takes.

Each sample is one image with every caption under caption-key (the .txt file, or .json keys such as
"captions"), so R@k counts each image's captions as a folder split does. The image bytes stay encoded in
memory; validation splits are small (COCO's 5k images: about 0.8 GB of JPEG).
"""
import logging
import os

from data.caption_table import ImageRecord, collected_table
from data.shard_dataset import image_bytes, sample_captions
from data.shard_source import DEFAULT_TIMEOUT, checked_shards, shard_samples
from utils.errors import UserError

logger = logging.getLogger(__name__)


def read_shard_table(value, caption_keys, strict=False, timeout=DEFAULT_TIMEOUT):
    """CaptionTable of the shards ``value`` (pattern, '::'-joined, URLs). A sample without an image or a
    caption, and the rest of a shard that cannot be read (or stalls ``timeout`` seconds), are skipped and
    counted (strict: UserError listing them); UserError when none is usable."""
    urls = checked_shards(value, timeout)
    images, skipped = [], []

    def unreadable(error):
        skipped.append(f"shard read error: {str(error)[:200]}")
        return True

    for url in urls:
        try:
            samples = list(shard_samples(url, unreadable, timeout))
        except (OSError, UserError) as error:  # the shard could not be opened
            skipped.append(f"{url}: shard skipped: {str(error)[:200] or type(error).__name__}")
            continue
        for sample in samples:
            name = f"{os.path.basename(url)}/{sample['__key__']}"
            try:
                captions = sample_captions(sample, caption_keys)
                data = image_bytes(sample)
            except (ValueError, UnicodeDecodeError) as problem:
                skipped.append(f"{name}: skipped: {str(problem)[:200]}")
                continue
            images.append(ImageRecord(filename=name, path=url, captions=captions, data=data))
    return collected_table(value, images, skipped, strict, f" from {len(urls)} shard(s)",
                           f"no sample with an image and a caption under caption-key '{','.join(caption_keys)}'")
