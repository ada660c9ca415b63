"""A folder of images with their captions beside them: img2dataset's ``--output_format files`` (00000/000000.jpg,
000000.txt, 000000.json), or any folder where each image has a .txt (one caption per line) or a .json."""
import os

from data.caption_table import ImageRecord, collected_table
from data.folder_layout import FolderSource
from data.image_file import ImageProblem, check_image_header, image_files, open_image_rgb
from data.shard_dataset import sample_captions
from data.sources import register_layout
from utils.errors import UserError

SIDECARS = ("txt", "json")


def _sidecars(image_path):
    """{"txt": bytes, "json": bytes} of the files beside ``image_path`` that share its stem."""
    stem = os.path.splitext(image_path)[0]
    found = {}
    for extension in SIDECARS:
        if os.path.isfile(f"{stem}.{extension}"):
            with open(f"{stem}.{extension}", "rb") as handle:
                found[extension] = handle.read()
    return found


def has_captioned_files(value):
    """A local folder without captions.csv whose first image has a .txt or .json beside it."""
    if not os.path.isdir(value) or os.path.isfile(os.path.join(value, "captions.csv")):
        return False
    first = next(image_files(value), None)
    return first is not None and bool(_sidecars(first))


@register_layout(has_captioned_files)
class CaptionedFilesSource(FolderSource):
    """Captioned image files (see data/sources.py's Source for the methods); trains, evaluates and indexes as a
    dataset folder does. caption-key: txt (the .txt, one caption per line) or .json keys (img2dataset's
    ``--save_additional_columns '["all_captions"]'`` gives every caption under all_captions)."""

    def __init__(self, value, caption_key="txt", timeout=None):
        super().__init__(value, caption_key, timeout)
        self.caption_keys = [key.strip() for key in caption_key.split(",") if key.strip()]
        if not self.caption_keys:
            raise UserError("caption-key: give txt or one or more .json keys")

    def captioned(self):
        return True

    def _table(self, strict):
        images, skipped = [], []
        for path in image_files(self.value):
            name = os.path.relpath(path, self.value)
            try:
                captions = sample_captions(_sidecars(path), self.caption_keys)
                (open_image_rgb if strict else check_image_header)(path)
            except (ValueError, UnicodeDecodeError, ImageProblem) as problem:
                skipped.append(f"{name}: skipped: {str(problem)[:200]}")
                continue
            images.append(ImageRecord(filename=name, path=path, captions=captions))
        return collected_table(self.value, images, skipped, strict, " (captions beside the images)",
                               f"no usable image: each lacks a caption under caption-key "
                               f"'{','.join(self.caption_keys)}' (a .txt or .json beside it) or cannot be read")
