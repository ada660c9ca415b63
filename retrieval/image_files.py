"""Image files for the retrieval tools: found in folders, decoded in batches.

A file that cannot be decoded is logged as a warning and left out; it never stops a run.
"""
import logging
import os
import sys

from tqdm import tqdm

from data.image_file import ImageProblem, open_image_rgb
from utils.errors import UserError

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff")

logger = logging.getLogger(__name__)


def image_files(root):
    """Yield the paths below ``root`` whose names end in an image extension, folders and files sorted."""
    for folder, directories, files in os.walk(root):
        directories.sort()
        for name in sorted(files):
            if name.lower().endswith(IMAGE_EXTENSIONS):
                yield os.path.join(folder, name)


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

    entries: a list of tuples whose first element is an image path. Files that cannot be decoded are
    logged and left out (with their entries); a run with no decodable file yields nothing.
    progress: a description for a progress bar over the runs (None: no bar).
    """
    starts = range(0, len(entries), batch_size)
    for start in tqdm(starts, desc=progress, disable=None, file=sys.stdout) if progress else starts:
        images, kept = [], []
        for entry in entries[start:start + batch_size]:
            try:
                images.append(open_image_rgb(entry[0]))
                kept.append(entry)
            except ImageProblem as problem:
                logger.warning(f"skipped {entry[0]}: {problem}")
        if images:
            yield images, kept


def open_image_argument(path):
    """The image named by ``--image``, decoded to RGB; UserError when it cannot be used."""
    try:
        return open_image_rgb(path)
    except ImageProblem as problem:
        raise UserError(f"--image {path}: {problem}") from None
