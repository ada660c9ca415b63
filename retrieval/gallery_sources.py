"""What index.py embeds: a dataset folder (images/ + captions.csv), a plain folder of images, or webdataset
shards. Each is a list of units (images, or shards) cut into contiguous shares, one per process, so the shares
concatenated in rank order are exactly what one process would embed, in the same order.

An entry is (image, file, name, captions): image is a path or an EncodedImage; file is what the gallery
records to find the image again (a path, or "<shard URL>#<member>"); name is what web clients see.
"""
import logging
import os

from data.caption_table import read_caption_table
from data.image_file import ImageProblem, check_image_header
from data.shard_dataset import IMAGE_EXTENSIONS as SHARD_IMAGE_EXTENSIONS
from data.shard_dataset import sample_captions
from data.shard_source import DEFAULT_TIMEOUT, URL_SCHEMES, checked_shards, is_shard_source, shard_samples
from retrieval.image_files import IMAGE_EXTENSIONS, EncodedImage, image_files
from utils.errors import UserError, first_line

logger = logging.getLogger(__name__)


def find_sources(data_dir):
    """[(path, name, captions)] from a dataset folder (images/ + captions.csv) or a plain folder of images.

    name: the file's name relative to the folder, the only form shown to web clients. Unusable images are
    logged and left out.
    """
    if os.path.isfile(os.path.join(data_dir, "captions.csv")):
        table = read_caption_table(data_dir)
        return [(os.path.abspath(record.path), record.filename, record.captions) for record in table.images]
    if not os.path.isdir(data_dir):
        raise UserError(f"data folder '{data_dir}' not found")
    sources = []
    for path in image_files(data_dir):
        try:
            check_image_header(path)
            sources.append((os.path.abspath(path), os.path.relpath(path, data_dir), []))
        except ImageProblem as problem:
            logger.warning(f"skipped {path}: {problem}")
    if not sources:
        raise UserError(f"no images found in '{data_dir}' (looked for {', '.join(IMAGE_EXTENSIONS)})")
    return sources


class GallerySource:
    """units: folder sources [(path, name, captions)] or shard URLs; share(rank, world) -> entries iterator."""

    def __init__(self, data, caption_key="txt", timeout=DEFAULT_TIMEOUT):
        self.data, self.timeout = data, timeout
        self.shards = is_shard_source(data)
        if self.shards:
            self.units = checked_shards(data, timeout)
            self.caption_keys = [key.strip() for key in caption_key.split(",") if key.strip()]
            if not self.caption_keys:
                raise UserError("caption-key: give txt or one or more .json keys")
        else:
            self.units = find_sources(data)

    def share(self, rank, world_size, lookup):
        """(entries of process ``rank`` of ``world_size``, how many images ``lookup`` already holds that no
        process will see): a contiguous block of the units. A folder's images already indexed are left out
        before the split, so an appending run spreads the new ones over every process."""
        units, present = self.units, 0
        if not self.shards:
            known = lookup.contains([path for path, _, _ in units])
            units = [unit for unit, seen in zip(units, known) if not seen]
            present = len(known) - len(units)
        count = len(units)
        units = units[rank * count // world_size:(rank + 1) * count // world_size]
        if not self.shards:
            return [(path, path, name, captions) for path, name, captions in units], present if rank == 0 else 0
        return (entry for url in units for entry in self._shard_entries(url)), 0

    def _shard_entries(self, url):
        # local shards by absolute path: the service, or a later index.py run, may start in another folder
        location = url if url.startswith(URL_SCHEMES) else os.path.abspath(url)

        def unreadable(error):
            logger.warning(f"{url}: read error, rest of the shard skipped: {first_line(error)[:200]}")
            return True

        try:
            for sample in shard_samples(url, unreadable, self.timeout):
                extension = next((ext for ext in SHARD_IMAGE_EXTENSIONS if ext in sample), None)
                name = f"{os.path.basename(url)}/{sample['__key__']}"
                if extension is None:
                    logger.warning(f"skipped {name}: no image file in the sample")
                    continue
                try:
                    captions = sample_captions(sample, self.caption_keys)
                except (ValueError, UnicodeDecodeError):
                    captions = []  # a gallery item needs no caption
                member = sample["__members__"][extension]  # the tar's own name: IMG_1.JPG, not IMG_1.jpg
                yield EncodedImage(sample[extension], name), f"{location}#{member}", name, captions
        except (OSError, UserError) as error:  # the shard could not be opened
            logger.warning(f"skipped shard {url}: {first_line(error) or type(error).__name__}")
