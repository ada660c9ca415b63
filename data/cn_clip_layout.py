"""Chinese-CLIP's dataset split: ``{split}_imgs.tsv`` (each line ``image_id<TAB>base64 image``, urlsafe base64)
and ``{split}_texts.jsonl`` (each line ``{"text_id": 8428, "text": "...", "image_ids": [1076345, 517602]}``).

A data value names the split by its prefix (``datasets/MUGE/valid``) or by either file. A text with several
image ids is a caption of each of them (as Chinese-CLIP's LMDB pairs hold it); images no text names are kept
for retrieval scoring (they are the distractors of MUGE's valid split) but not trained or recalled on. Ids may
be integers or strings. Bad lines are skipped and reported with their line numbers (strict: refused).
"""
import base64
import binascii
import io
import json
import os
import pickle
from dataclasses import dataclass, field

from data.caption_table import ImageRecord, collected_table
from data.folder_layout import FolderSource
from data.image_file import EncodedImage
from data.sources import register_layout
from utils.errors import UserError

IMAGES_SUFFIX, TEXTS_SUFFIX = "_imgs.tsv", "_texts.jsonl"


def split_files(value):
    """(images .tsv, texts .jsonl) of the split ``value`` names."""
    for suffix in (IMAGES_SUFFIX, TEXTS_SUFFIX):
        if value.endswith(suffix):
            value = value[:-len(suffix)]
    return value + IMAGES_SUFFIX, value + TEXTS_SUFFIX


def is_chinese_clip_split(value):
    images, texts = split_files(value)
    return os.path.isfile(images) and os.path.isfile(texts)


def decode_image(text):
    """The image bytes of a tsv cell: urlsafe base64, as Chinese-CLIP writes it (standard base64 accepted)."""
    text = text.strip()
    padded = text + "=" * (-len(text) % 4)
    try:
        return base64.urlsafe_b64decode(padded.replace("+", "-").replace("/", "_"))
    except (binascii.Error, ValueError):
        raise ValueError("the image is not base64") from None


@dataclass
class ChineseClipSplit:
    """images: {image_id: encoded bytes} in file order; texts: [(text_id, text, [image_id])]; problems: one
    line per skipped line."""
    images: dict = field(default_factory=dict)
    texts: list = field(default_factory=list)
    problems: list = field(default_factory=list)


def read_split(value):
    """The ChineseClipSplit of ``value``; UserError when a file cannot be read at all."""
    images_path, texts_path = split_files(value)
    split = ChineseClipSplit()
    try:
        with open(images_path, encoding="utf-8") as handle:
            for number, line in enumerate(handle, 1):
                if not line.strip():
                    continue
                image_id, tab, data = line.rstrip("\n").partition("\t")
                try:
                    if not tab or not image_id.strip():
                        raise ValueError("not 'image_id<TAB>base64'")
                    image_id = _id(image_id)
                    if image_id in split.images:
                        raise ValueError(f"image_id {image_id} again")
                    split.images[image_id] = decode_image(data)
                except ValueError as problem:
                    split.problems.append(f"{images_path}:{number}: skipped: {problem}")
        split.texts = read_texts(texts_path, set(split.images), split.problems)
    except OSError as error:
        raise UserError(f"cannot read Chinese-CLIP split '{value}': {error}") from None
    except UnicodeDecodeError as error:
        raise UserError(f"Chinese-CLIP split '{value}': not UTF-8 ({error.reason})") from None
    return split


def read_texts(texts_path, image_ids=None, problems=None):
    """[(text_id, text, [image_id])] of a _texts.jsonl; bad lines and repeated text ids are skipped, image ids
    not in ``image_ids`` (when given) dropped, each reported into ``problems``."""
    texts, seen, problems = [], set(), [] if problems is None else problems
    with open(texts_path, encoding="utf-8") as handle:
        for number, line in enumerate(handle, 1):
            if not line.strip():
                continue
            try:
                text_id, text, ids = _text_line(line)
                if text_id in seen:
                    raise ValueError(f"text_id {text_id} again")
            except ValueError as problem:
                problems.append(f"{texts_path}:{number}: skipped: {problem}")
                continue
            seen.add(text_id)
            if image_ids is not None:
                unknown = [image_id for image_id in ids if image_id not in image_ids]
                if unknown:
                    problems.append(f"{texts_path}:{number}: image_ids not in the images (or skipped there): "
                                    f"{unknown[:5]}; kept with the others")
                ids = [image_id for image_id in ids if image_id in image_ids]
            texts.append((text_id, text, ids))
    return texts


class _PlainData(pickle.Unpickler):
    """Unpickles numbers, strings and tuples only: a pairs record that names any class or function (which
    pickle would import and call) is refused, so an LMDB from anywhere cannot run code here."""

    def find_class(self, module, name):
        raise pickle.UnpicklingError(f"{module}.{name}: a pairs record may hold only ids and text")


def is_lmdb_split(value):
    """A folder with Chinese-CLIP's LMDB pair: imgs/ and pairs/ (build_lmdb_dataset.py's lmdb/{split})."""
    return all(os.path.isfile(os.path.join(value, name, "data.mdb")) for name in ("imgs", "pairs"))


def _numeric_order(record):
    """LMDB keeps keys in byte order ("10" before "2"); Chinese-CLIP writes numbers: read them in number order."""
    key = record[0]
    return (0, int(key), b"") if key.isdigit() else (1, 0, key)


def _lmdb_records(path):
    """(key, value) bytes of every record of the LMDB environment ``path``, read-only, in key number order."""
    try:
        import lmdb
    except ImportError:
        raise UserError("reading Chinese-CLIP's LMDB needs the lmdb package: pip install lmdb (or read the "
                        "split's _imgs.tsv and _texts.jsonl, which the LMDB was built from)") from None
    try:
        with lmdb.open(path, readonly=True, lock=False, readahead=False, subdir=True) as env:
            with env.begin() as txn:
                records = list(txn.cursor())
    except lmdb.Error as error:
        raise UserError(f"cannot read the LMDB at {path}: {error}") from None
    return sorted(records, key=_numeric_order)


def read_lmdb_texts(value, image_ids=None, problems=None):
    """[(text_id, text, [image_id])] of an LMDB split's pairs/ (str(i) -> pickle((image_id, text_id, text)),
    read with _PlainData), in the order the texts first appear; image ids not in ``image_ids`` (when given) are
    dropped. Problems are appended to ``problems``."""
    texts, problems = {}, [] if problems is None else problems
    for key, data in _lmdb_records(os.path.join(value, "pairs")):
        if key == b"num_samples":
            continue
        try:
            record = _PlainData(io.BytesIO(data)).load()
            if not (isinstance(record, tuple) and len(record) == 3 and isinstance(record[2], str)):
                raise ValueError("not (image_id, text_id, text)")
            image_id, text_id, text = _id(record[0]), _id(record[1]), " ".join(record[2].split())
        except (pickle.UnpicklingError, ValueError, EOFError, TypeError) as problem:
            problems.append(f"{value}/pairs {key[:40]!r}: skipped: {problem}")
            continue
        if image_ids is not None and image_id not in image_ids:
            problems.append(f"{value}/pairs {key[:40]!r}: image_id {image_id} not in imgs; skipped")
            continue
        texts.setdefault(text_id, (text, []))[1].append(image_id)
    return [(text_id, text, ids) for text_id, (text, ids) in texts.items()]


def read_lmdb_split(value):
    """The ChineseClipSplit of an LMDB split folder (imgs/: str(image_id) -> base64; pairs/: see
    read_lmdb_texts)."""
    split = ChineseClipSplit()
    for key, data in _lmdb_records(os.path.join(value, "imgs")):
        if key == b"num_images":
            continue
        try:
            split.images[_id(key.decode("utf-8"))] = decode_image(data.decode("ascii"))
        except (ValueError, UnicodeDecodeError) as problem:
            split.problems.append(f"{value}/imgs {key[:40]!r}: skipped: {problem}")
    split.texts = read_lmdb_texts(value, set(split.images), split.problems)
    return split


def _id(value):
    """An id as Chinese-CLIP writes it: an integer (a string of digits becomes one), else the string itself."""
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        raise ValueError(f"id {value!r} is neither an integer nor a string")
    if isinstance(value, str):
        value = value.strip()  # digits are the integer they write, unless that would change them ("007")
        return int(value) if value.isdigit() and str(int(value)) == value else value
    return value


def _text_line(line):
    try:
        item = json.loads(line)
    except ValueError:
        raise ValueError("not a JSON object") from None
    if not isinstance(item, dict) or "text_id" not in item or "text" not in item:
        raise ValueError("needs text_id and text")
    text = item["text"]
    if not isinstance(text, str) or not text.strip():
        raise ValueError("empty text")
    ids = item.get("image_ids", [])
    if not isinstance(ids, list):
        raise ValueError("image_ids is not a list")
    return _id(item["text_id"]), " ".join(text.split()), [_id(image_id) for image_id in ids]


@register_layout(is_chinese_clip_split)
class ChineseClipSource(FolderSource):
    """A Chinese-CLIP split (see data/sources.py's Source for the methods); trains, evaluates and indexes as a
    dataset folder does. ``split()`` gives the split itself, for Chinese-CLIP's own scoring (eval.py)."""

    def __init__(self, value, caption_key="txt", timeout=None):
        super().__init__(value, caption_key, timeout)
        self.side_files = None
        self._split = None

    def captioned(self):
        return True

    def split(self):
        if self._split is None:
            self._split = read_split(self.value)
        return self._split

    def images_location(self):
        """Where the gallery finds an image again: "<this>#<image_id>" (retrieval/image_files.py)."""
        return os.path.abspath(split_files(self.value)[0])

    def captions(self, limit):
        """From the texts alone: the images are not read."""
        try:
            return [text for _, text, _ in read_texts(split_files(self.value)[1])][:limit]
        except (OSError, UnicodeDecodeError) as error:
            raise UserError(f"cannot read the texts of Chinese-CLIP split '{self.value}': {error}") from None

    def captions_by_image(self):
        """{image_id: [text of every line that names it]}, every image of the split included."""
        split = self.split()
        captions = {image_id: [] for image_id in split.images}
        for _, text, image_ids in split.texts:
            for image_id in image_ids:
                captions[image_id].append(text)
        return captions

    def _table(self, strict):
        split, captions = self.split(), self.captions_by_image()
        images_path = self.images_location()
        images = [ImageRecord(filename=str(image_id), path=f"{images_path}#{image_id}",
                              captions=captions[image_id], data=data)
                  for image_id, data in split.images.items() if captions[image_id]]
        return collected_table(self.value, images, list(split.problems), strict,
                               f" ({len(split.images) - len(images)} more images named by no text)",
                               "no image that a text names")

    def gallery_units(self):
        split, named = self.split(), self.captions_by_image()
        images_path = self.images_location()
        return [(EncodedImage(data, str(image_id)), f"{images_path}#{image_id}", str(image_id), named[image_id])
                for image_id, data in split.images.items()]


@register_layout(is_lmdb_split)
class ChineseClipLmdbSource(ChineseClipSource):
    """Chinese-CLIP's LMDB form of a split (lmdb/{split}/imgs and pairs), read as the split it was built from."""

    def split(self):
        if self._split is None:
            self._split = read_lmdb_split(self.value)
        return self._split

    def images_location(self):
        return os.path.join(os.path.abspath(self.value), "imgs")

    def captions(self, limit):
        return [text for _, text, _ in read_lmdb_texts(self.value)][:limit]
