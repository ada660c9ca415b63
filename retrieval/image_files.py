"""Image files for the retrieval tools: found in folders, decoded in batches.

A file that cannot be decoded is logged as a warning and left out; it never stops a run.
"""
import io
import logging
import os
import sys
import tarfile
from functools import lru_cache
from itertools import islice

from tqdm import tqdm

from data.image_file import ImageProblem, image_files, open_image_rgb
from utils.errors import UserError

logger = logging.getLogger(__name__)


def image_folder(root):
    """(class names, [(path, class index)]) from an ImageFolder-layout directory: one sub-folder per class,
    nested folders included."""
    if not os.path.isdir(root):
        raise UserError(f"--data '{root}' is not a directory")
    classes = sorted(name for name in os.listdir(root) if os.path.isdir(os.path.join(root, name)))
    if len(classes) < 2:
        raise UserError(f"--data '{root}' needs at least two class sub-folders")
    samples = [(path, target) for target, name in enumerate(classes) for path in image_files(os.path.join(root, name))]
    if not samples:
        raise UserError(f"--data '{root}' holds no images in its class folders")
    return classes, samples


def decoded_batches(entries, batch_size, progress=None):
    """Yield (RGB images, their entries) for each run of ``batch_size`` entries, in order.

    entries: an iterable of tuples whose first element is an image path or an EncodedImage. Images that
    cannot be decoded are logged and left out (with their entries); a run with none decodable yields nothing.
    progress: a description for a progress bar over the runs (None: no bar).
    """
    total = -(-len(entries) // batch_size) if hasattr(entries, "__len__") else None
    iterator = iter(entries)
    with tqdm(total=total, desc=progress, disable=None if progress else True, file=sys.stdout) as bar:
        while run := list(islice(iterator, batch_size)):
            bar.update(1)
            images, kept = [], []
            for entry in run:
                source = entry[0]
                try:
                    images.append(open_image_rgb(io.BytesIO(source) if isinstance(source, bytes) else source))
                    kept.append(entry)
                except ImageProblem as problem:
                    logger.warning(f"skipped {getattr(source, 'label', source)}: {problem}")
            if images:
                yield images, kept


def open_image_argument(path):
    """The image named by ``--image``, decoded to RGB; UserError when it cannot be used."""
    try:
        return open_image_rgb(path)
    except ImageProblem as problem:
        raise UserError(f"--image {path}: {problem}") from None


def open_gallery_image(file, draft_size=None):
    """An indexed item's image from its gallery ``file``: a path, "<shard>#<member>" for an image inside
    a local webdataset shard (read with tarfile), or "<file.parquet>#<row>" for a row of image bytes. Raises
    ImageProblem when it is gone or remote."""
    for marker, read, kept in (("_imgs.tsv#", _tsv_image, "_imgs.tsv"), ("/imgs#", _lmdb_image, "/imgs/data.mdb")):
        location, separator, image_id = file.partition(marker)  # Chinese-CLIP's ids may hold a '#'
        if separator and os.path.isfile(location + kept):
            return open_image_rgb(io.BytesIO(read(location + marker[:-1], image_id)), draft_size=draft_size)
    shard, separator, member = file.rpartition("#")
    if separator and shard.endswith(".parquet"):
        return open_image_rgb(io.BytesIO(_parquet_image(shard, member)), draft_size=draft_size)
    if not (separator and shard.endswith(".tar")):
        return open_image_rgb(file, draft_size=draft_size)
    if shard.startswith("file://"):
        shard = shard[len("file://"):]
    elif "://" in shard:
        raise ImageProblem("the image is inside a remote shard; images are shown from local files and shards")
    try:
        with tarfile.open(shard) as tar:
            data = tar.extractfile(member).read()
    except (OSError, KeyError, AttributeError, tarfile.TarError) as error:
        raise ImageProblem(f"cannot read {member} from {shard}: {error}") from None
    return open_image_rgb(io.BytesIO(data), draft_size=draft_size)


def _parquet_image(path, row):
    """The image bytes of row ``row`` (a string of digits) of a local parquet file (data/parquet_layout.py)."""
    import pyarrow.parquet as pq

    from data.parquet_layout import IMAGE_COLUMNS

    try:
        names = pq.read_schema(path).names
        column = next(name for name in IMAGE_COLUMNS if name in names)
        table = pq.read_table(path, columns=[column])
        return bytes(table.column(column)[int(row)].as_py())
    except (OSError, StopIteration, ValueError, IndexError, TypeError) as error:
        raise ImageProblem(f"cannot read row {row} of {path}: {error or type(error).__name__}") from None


@lru_cache(maxsize=4)
def _tsv_offsets(path, modified):
    """{image id: byte offset of its line} of a Chinese-CLIP ``*_imgs.tsv``: one scan, then each thumbnail is
    one seek (``modified``: the file's mtime, so a rewritten file is scanned again)."""
    offsets, position = {}, 0
    with open(path, "rb") as handle:
        for line in handle:
            offsets.setdefault(line.split(b"\t", 1)[0].strip().decode("utf-8", "replace"), position)
            position += len(line)
    return offsets


def _tsv_image(path, image_id):
    """The image of ``image_id`` in a Chinese-CLIP ``*_imgs.tsv`` (data/cn_clip_layout.py)."""
    from data.cn_clip_layout import decode_image

    try:
        offset = _tsv_offsets(path, os.path.getmtime(path)).get(image_id)
        if offset is None:
            raise ImageProblem(f"no image {image_id} in {path}")
        with open(path, "rb") as handle:
            handle.seek(offset)
            return decode_image(handle.readline().decode("utf-8").rstrip("\n").partition("\t")[2])
    except (OSError, UnicodeDecodeError, ValueError) as error:
        raise ImageProblem(f"cannot read image {image_id} from {path}: {error}") from None


def _lmdb_image(path, image_id):
    """The image of ``image_id`` in a Chinese-CLIP LMDB ``imgs`` environment (data/cn_clip_layout.py)."""
    import lmdb

    from data.cn_clip_layout import decode_image

    try:
        with lmdb.open(path, readonly=True, lock=False, subdir=True) as env, env.begin() as txn:
            data = txn.get(image_id.encode("utf-8"))
        if data is None:
            raise ImageProblem(f"no image {image_id} in {path}")
        return decode_image(data.decode("ascii"))
    except (lmdb.Error, UnicodeDecodeError, ValueError) as error:
        raise ImageProblem(f"cannot read image {image_id} from {path}: {error}") from None
