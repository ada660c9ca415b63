"""Parquet files whose rows hold the image bytes: img2dataset's ``--output_format parquet`` (a folder of
NNNNN.parquet with a ``jpg`` column), or any .parquet with an image column and caption columns.

The images are read into memory (encoded), as a validation split from shards is: fine for the splits and
sets of some hundred thousand images this layout is used for; for bigger ones write webdataset shards."""
import glob
import os

from data.caption_table import ImageRecord, collected_table
from data.folder_layout import FolderSource
from data.sources import register_layout
from utils.errors import UserError

IMAGE_COLUMNS = ("jpg", "jpeg", "png", "webp", "image")
CAPTION_COLUMN = "caption"  # what caption-key txt means here: img2dataset's --caption_col is saved as "caption"


def _parquet_files(value):
    if os.path.isdir(value):
        return sorted(glob.glob(os.path.join(value, "*.parquet")))
    return sorted(glob.glob(value)) if value.endswith(".parquet") else []


def _image_column(path):
    import pyarrow.parquet as pq

    names = pq.read_schema(path).names
    return next((name for name in IMAGE_COLUMNS if name in names), None)


def has_image_parquet(value):
    """A .parquet file or pattern (refused with its reason when it holds no images), or a folder without
    captions.csv whose first .parquet has an image column (img2dataset's other formats also leave NNNNN.parquet
    files, of metadata only, in their folder)."""
    if value.endswith(".parquet"):
        return True
    if not os.path.isdir(value) or os.path.isfile(os.path.join(value, "captions.csv")):
        return False
    files = _parquet_files(value)
    try:
        return bool(files) and _image_column(files[0]) is not None
    except OSError:
        return False


@register_layout(has_image_parquet)
class ParquetSource(FolderSource):
    """Rows of image bytes and captions (see data/sources.py's Source for the methods); trains, evaluates and
    indexes as a dataset folder does. caption-key: txt (the ``caption`` column) or column names, each a string
    or a list of strings (img2dataset's ``--save_additional_columns '["all_captions"]'``)."""

    def __init__(self, value, caption_key="txt", timeout=None):
        super().__init__(value, caption_key, timeout)
        self.side_files = value if os.path.isdir(value) else None
        self.columns = [CAPTION_COLUMN if key.strip() == "txt" else key.strip() for key in caption_key.split(",")
                        if key.strip()]
        if not self.columns:
            raise UserError("caption-key: give txt (the caption column) or one or more column names")

    def captioned(self):
        return True

    def _table(self, strict):
        import pyarrow.parquet as pq

        files = _parquet_files(self.value)
        if not files:
            raise UserError(f"no .parquet file at '{self.value}'")
        images, skipped = [], []
        for path in files:
            try:
                image_column = _image_column(path)
                names = pq.read_schema(path).names
                if image_column is None:
                    raise UserError(f"no image column ({', '.join(IMAGE_COLUMNS)}) in its {len(names)} columns")
                missing = [column for column in self.columns if column not in names]
                if missing:
                    raise UserError(f"no column {', '.join(missing)} (caption-key); it has {', '.join(names[:12])}")
                wanted = [image_column, *self.columns] + [c for c in ("status", "error_message") if c in names]
                rows = pq.read_table(path, columns=wanted).to_pylist()
            except (OSError, UserError) as error:
                skipped.append(f"{path}: file skipped: {str(error)[:200]}")
                continue
            for row_number, row in enumerate(rows):
                name = f"{os.path.basename(path)}#{row_number}"
                problem = self._problem(row, image_column)
                if problem:
                    skipped.append(f"{name}: skipped: {problem}")
                    continue
                captions = self._captions(row)
                images.append(ImageRecord(filename=name, path=f"{os.path.abspath(path)}#{row_number}",
                                          captions=captions, data=bytes(row[image_column])))
        return collected_table(self.value, images, skipped, strict, f" from {len(files)} parquet file(s)",
                               f"no row with an image and a caption under caption-key {', '.join(self.columns)}")

    def captions(self, limit):
        """From the caption columns alone: the image bytes are not read."""
        import pyarrow.parquet as pq

        captions = []
        for path in _parquet_files(self.value):
            try:
                names = pq.read_schema(path).names
                columns = [column for column in self.columns if column in names]
                rows = pq.read_table(path, columns=columns).to_pylist() if columns else []
            except OSError:
                continue  # a damaged file: the table read reports it
            captions += [caption for row in rows for caption in self._captions(row)]
            if len(captions) >= limit:
                break
        if not captions:
            raise UserError(f"{self.value}: no caption under caption-key {', '.join(self.columns)}")
        return captions[:limit]

    def _captions(self, row):
        captions = []
        for column in self.columns:
            value = row[column]
            captions += [value] if isinstance(value, str) else [v for v in value or [] if isinstance(v, str)]
        return [caption.strip() for caption in captions if caption and caption.strip()]

    def _problem(self, row, image_column):
        """Why a row cannot be used (img2dataset keeps its failed downloads as rows without an image), or None."""
        if row.get("status") not in (None, "success"):
            return f"{row['status']}" + (f" ({row['error_message'][:120]})" if row.get("error_message") else "")
        if not row[image_column]:
            return "no image bytes"
        if not self._captions(row):
            return f"no caption under {', '.join(self.columns)}"
        return None

