"""What index.py embeds: whatever data/sources.py opens (a dataset folder, a plain folder of images, webdataset
shards), as a list of units (images, or shards) cut into contiguous shares, one per process, so the shares
concatenated in rank order are exactly what one process would embed, in the same order.

An entry is (image, file, name, captions): image is a path or an EncodedImage; file is what the gallery
records to find the image again (a path, or "<shard URL>#<member>"); name is what web clients see.
"""
from data.shard_source import DEFAULT_TIMEOUT
from data.sources import open_source


class GallerySource:
    """The units of ``data`` (listed, and checked, on construction); share(rank, world, lookup) -> entries."""

    def __init__(self, data, caption_key="txt", timeout=DEFAULT_TIMEOUT):
        self.source = open_source(data, caption_key, timeout)
        self.units = self.source.gallery_units()

    def share(self, rank, world_size, lookup):
        """(entries of process ``rank`` of ``world_size``, how many images ``lookup`` already holds that no
        process will see): a contiguous block of the units. Units whose images are known before reading (a
        folder's) are left out when already indexed, before the split, so an appending run spreads the new ones
        over every process."""
        units, present = self.units, 0
        files = self.source.unit_files(units)
        if files is not None:
            known = lookup.contains(files)
            units = [unit for unit, seen in zip(units, known) if not seen]
            present = len(known) - len(units)
        count = len(units)
        share = units[rank * count // world_size:(rank + 1) * count // world_size]
        return self.source.gallery_entries(share), present if rank == 0 else 0
