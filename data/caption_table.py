"""Read a dataset folder (images/ + captions.csv) into images with their captions, skipping bad rows."""
import csv
import io
import logging
import os
from collections import Counter
from dataclasses import dataclass, field

from data.image_file import ImageProblem, check_image_header, open_image_rgb
from utils.errors import UserError

logger = logging.getLogger(__name__)

MAX_CAPTION_CHARS = 10_000


@dataclass
class ImageRecord:
    """One usable image and every caption that names it."""

    filename: str
    path: str
    captions: list = field(default_factory=list)
    data: bytes = None  # the encoded image, when it comes from a shard rather than a file at ``path``

    def image_source(self):
        """What open_image_rgb reads: the encoded bytes when the record holds them, else the file."""
        return io.BytesIO(self.data) if self.data is not None else self.path


@dataclass
class CaptionTable:
    """A dataset's usable images (in first-seen order) and the reasons rows were skipped."""

    root: str
    images: list
    skipped: list

    @property
    def captions(self):
        """Every caption, image by image: list[str] of length M."""
        return [caption for record in self.images for caption in record.captions]

    @property
    def caption_image_index(self):
        """For each caption in ``captions``, the index of its image: list[int] of length M."""
        return [i for i, record in enumerate(self.images) for _ in record.captions]


def collected_table(root, images, skipped, strict, where="", nothing="no usable sample"):
    """The CaptionTable of ``images`` (ImageRecords) a layout reader collected, with ``skipped`` (one line per
    problem): strict raises UserError listing them, else they are logged (the first 20) with one summary line
    (``where``: e.g. " from 3 shard(s)"). UserError ``nothing`` when no image is usable."""
    if strict and skipped:
        raise UserError(f"{root}: {len(skipped)} problem(s) (strict: true):\n" + "\n".join(skipped))
    for message in skipped[:20]:
        logger.warning(message)
    pairs = sum(len(record.captions) for record in images)
    logger.info(f"{root}: {pairs} pairs over {len(images)} images{where}" + (f"; skipped {len(skipped)}" if skipped
                                                                               else ""))
    if not images:
        raise UserError(f"{root}: {nothing}")
    return CaptionTable(root, images, skipped)


def safe_image_name(name):
    """Return the reason ``name`` may not be used as a path below images/, or None if it is fine."""
    if name != name.strip():
        return "file name has leading or trailing spaces"
    if "\x00" in name:
        return "file name contains a NUL character"
    if os.path.isabs(name) or name.startswith(("/", "\\")) or (len(name) > 1 and name[1] == ":"):
        return "absolute file name (must be relative to images/)"
    parts = name.replace("\\", "/").split("/")
    if ".." in parts:
        return "file name escapes images/ ('..')"
    return None


def _read_rows(csv_path):
    """Yield (first line number, lines spanned, row) from captions.csv, skipping blank lines.

    BOM, CRLF and quoted fields are handled by csv; a row spanning several lines usually means an
    unterminated quote, which the caller reports.
    """
    csv.field_size_limit(max(csv.field_size_limit(), 64 * 1024 * 1024))  # overlong captions are skipped, not fatal
    try:
        with open(csv_path, encoding="utf-8-sig", newline="") as handle:
            reader = csv.reader(handle)
            previous = 0
            for row in reader:
                first, previous = previous + 1, reader.line_num
                if any(cell.strip() for cell in row):
                    yield first, reader.line_num - first + 1, row
    except UnicodeDecodeError as error:
        raise UserError(f"{csv_path}: not UTF-8 text ({error.reason} at byte {error.start})") from None
    except csv.Error as error:
        raise UserError(f"{csv_path}: unreadable CSV ({error})") from None


def read_caption_table(root, strict=False):
    """Read ``root``/captions.csv and check the images it names.

    Args:
        root: dataset folder with images/ and captions.csv.
        strict: raise UserError listing every problem instead of skipping rows.
    Returns:
        CaptionTable. Nothing is ever written into ``root``.
    """
    csv_path = os.path.join(root, "captions.csv")
    images_dir = os.path.join(root, "images")
    if not os.path.isdir(root):
        raise UserError(f"dataset folder '{root}' not found (expected images/ and captions.csv inside)")
    if not os.path.isfile(csv_path):
        raise UserError(f"'{csv_path}' not found (columns: filename,caption)")
    if not os.path.isdir(images_dir):
        raise UserError(f"'{images_dir}' not found: put the images named in captions.csv there")

    rows = _read_rows(csv_path)
    header_line = next(rows, None)
    if header_line is None:
        raise UserError(f"{csv_path}: empty file; the first line must be the header 'filename,caption'")
    header = [name.strip().lower() for name in header_line[2]]
    if "filename" not in header or "caption" not in header:
        raise UserError(f"{csv_path}: header must name the columns 'filename' and 'caption', got {header_line[2]}")
    name_at, caption_at = header.index("filename"), header.index("caption")
    width = max(name_at, caption_at) + 1

    records, seen_pairs, image_problems, skipped, reasons = {}, {}, {}, [], Counter()

    def skip(line, reason, kind):
        skipped.append(f"{csv_path}:{line}: skipped: {reason}")
        reasons[kind] += 1

    for line, spanned, row in rows:
        if spanned > 1 and any("\n" in cell for cell in row):
            skip(line, f"row spans lines {line}-{line + spanned - 1} (unterminated quote?)", "multi-line row")
            continue
        if len(row) < width:
            skip(line, f"short row ({len(row)} field{'s' if len(row) != 1 else ''}, need {width})", "short row")
            continue
        name, caption = row[name_at], " ".join(row[caption_at].split())
        if name.strip() and not safe_image_name(name):
            name = os.path.normpath(name)  # 'a.png', './a.png' and 'sub//a.png' name one file once
        if not name.strip():
            skip(line, "empty file name", "empty file name")
            continue
        if not caption:
            skip(line, f"empty caption for '{name}'", "empty caption")
            continue
        if len(caption) > MAX_CAPTION_CHARS:
            skip(line, f"caption longer than {MAX_CAPTION_CHARS} characters", "overlong caption")
            continue
        unsafe = safe_image_name(name)
        if unsafe:
            skip(line, f"'{name}': {unsafe}", "unsafe file name")
            continue
        if (name, caption) in seen_pairs:
            skip(line, f"duplicate of line {seen_pairs[name, caption]}", "duplicate row")
            continue
        seen_pairs[name, caption] = line
        if name not in records and name not in image_problems:
            path = os.path.join(images_dir, name)
            try:
                (open_image_rgb if strict else check_image_header)(path)
                records[name] = ImageRecord(name, path)
            except ImageProblem as problem:
                image_problems[name] = str(problem)
        if name in image_problems:
            skip(line, f"image '{name}': {image_problems[name]}", "bad image")
            continue
        records[name].captions.append(caption)

    if strict and skipped:
        raise UserError(f"{csv_path}: {len(skipped)} problem(s) (strict: true):\n" + "\n".join(skipped))
    for message in skipped:
        logger.warning(message)
    images = list(records.values())
    pairs = sum(len(record.captions) for record in images)
    summary = f"{csv_path}: {pairs} pairs over {len(images)} images"
    if skipped:
        summary += f"; skipped {len(skipped)} rows (" + ", ".join(f"{n} {k}" for k, n in reasons.items()) + ")"
    logger.info(summary)
    if not images:
        raise UserError(f"{csv_path}: no usable rows")
    return CaptionTable(root, images, skipped)
