"""Write a dataset folder (images/ + captions.csv) as webdataset tar shards in img2dataset's layout.

    python scripts/make_shards.py --data datasets/train --out datasets/train-shards --samples-per-shard 1000

Each image is one sample: KEY.<its extension> (the file's own bytes), KEY.txt (its first caption) and KEY.json
({"key", "filename", "caption", "captions": every caption of the image, "width", "height"}). open_clip's
reader takes jpg, png, jpeg and webp; readers that ask for the ``jpg`` key alone (``to_tuple("jpg", "txt")``)
want ``--image-format jpg``: JPEG files as they are, every other image re-encoded as JPEG (quality 95, which
changes its pixels a little; the default keeps each file's own bytes, so shards and folder give equal recall). Beside the shards:
NNNNN_stats.json as img2dataset writes them (count, successes, ...) and sizes.json ({"NNNNN.tar": samples}), so
the number of samples per epoch is known without reading the tars. Images that fail to decode are left out and
counted. Each shard is written to a temporary name and renamed when complete.
"""
import argparse
import io
import logging
import os
import re
import sys
import time

from data.caption_table import read_caption_table
from data.image_file import ImageProblem, open_image_rgb
from scripts.dataset_writer import fail, item_logger, setup_script_logging
from utils.atomic_file import atomic_write, atomic_write_json

logger = logging.getLogger(__name__)
SHARD_FILE = re.compile(r"^\d{5}(\.tar|_stats\.json)$|^sizes\.json$")  # what this script (and img2dataset) writes
EXTENSIONS = {".jpeg": "jpg", ".jpg": "jpg", ".png": "png", ".webp": "webp", ".gif": "gif", ".bmp": "bmp",
              ".tif": "tiff", ".tiff": "tiff"}


def as_jpeg(image):
    """``image`` (PIL, RGB) encoded as JPEG at quality 95."""
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=95)
    return buffer.getvalue()


def shard_samples(table, image_format="keep"):
    """(sample dict for webdataset's TarWriter, None) per usable image, or (None, reason) for one left out.
    image_format: keep (each file's own bytes and extension) or jpg (other formats re-encoded as JPEG)."""
    for record in table.images:
        extension = EXTENSIONS.get(os.path.splitext(record.filename)[1].lower())
        if extension is None:
            yield None, (record.filename, "extension not one webdataset decoders know")
            continue
        try:
            with open(record.path, "rb") as handle:
                data = handle.read()
            image = open_image_rgb(io.BytesIO(data))
        except (ImageProblem, OSError) as error:
            yield None, (record.filename, str(error))
            continue
        width, height = image.size
        if image_format == "jpg" and extension != "jpg":
            extension, data = "jpg", as_jpeg(image)
        yield {extension: data, "txt": record.captions[0],
               "json": {"filename": record.filename, "caption": record.captions[0],
                        "captions": list(record.captions), "width": width, "height": height}}, None


def write_shard(path, samples, shard_index):
    """Write ``samples`` to the tar ``path`` atomically; keys follow img2dataset: shard number + position."""
    import webdataset

    def write(stream):
        with webdataset.TarWriter(stream) as writer:
            for position, sample in enumerate(samples):
                key = f"{shard_index:05d}{position:04d}"
                writer.write({"__key__": key, **sample, "json": {"key": key, **sample["json"]}})

    atomic_write(path, write)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True, help="dataset folder: images/ + captions.csv")
    parser.add_argument("--out", required=True, help="folder for the shards")
    parser.add_argument("--samples-per-shard", type=int, default=1000)
    parser.add_argument("--overwrite", action="store_true", help="write into an --out that already has shards")
    parser.add_argument("--quiet", action="store_true", help="no line per image left out")
    parser.add_argument("--image-format", choices=("keep", "jpg"), default="keep",
                        help="keep: each image's own bytes; jpg: non-JPEG images re-encoded, for jpg-only readers")
    args = parser.parse_args(argv)
    setup_script_logging(args.quiet)
    if not 1 <= args.samples_per_shard <= 10_000:
        fail("--samples-per-shard: give 1 to 10000 (img2dataset's keys hold 4 digits of position)")
    if os.path.exists(args.out) and not os.path.isdir(args.out):
        fail(f"--out {args.out} is a file, not a folder")
    existing = sorted(name for name in (os.listdir(args.out) if os.path.isdir(args.out) else [])
                      if SHARD_FILE.match(name))
    if existing and not args.overwrite:
        fail(f"{args.out} already holds shards ({existing[0]}, ...); pass --overwrite to replace them")
    table = read_caption_table(args.data)
    if not table.images:
        fail(f"{args.data}: no usable image")
    os.makedirs(args.out, exist_ok=True)
    sizes, left_out, shard, started = {}, [], [], time.time()

    def flush():
        index = len(sizes)
        name = f"{index:05d}.tar"
        write_shard(os.path.join(args.out, name), shard, index)
        atomic_write_json(os.path.join(args.out, f"{index:05d}_stats.json"), {
            "count": len(shard), "successes": len(shard), "failed_to_download": 0, "failed_to_resize": 0,
            "start_time": started, "end_time": time.time()})
        sizes[name] = len(shard)
        shard.clear()

    for sample, problem in shard_samples(table, args.image_format):
        if problem:
            left_out.append(problem)
            item_logger.warning(f"left out {problem[0]}: {problem[1]}")
            continue
        shard.append(sample)
        if len(shard) == args.samples_per_shard:
            flush()
    if shard:
        flush()
    if not sizes:
        fail(f"{args.data}: every image failed to decode; no shard written")
    # --overwrite with fewer shards than before: a pattern must not find the old ones
    for name in existing:
        if name.endswith(".tar") and name not in sizes or name.endswith("_stats.json") and \
                name.replace("_stats.json", ".tar") not in sizes:
            os.remove(os.path.join(args.out, name))
    atomic_write_json(os.path.join(args.out, "sizes.json"), sizes)
    last = len(sizes) - 1
    logger.info(f"wrote {args.out}: {sum(sizes.values())} samples in {len(sizes)} shard(s), "
                f"pattern '{os.path.join(args.out, '{00000..%05d}.tar' % last)}'"
                + (f"; {len(left_out)} image(s) left out" if left_out else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
