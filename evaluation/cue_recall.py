"""The recall a model would reach knowing only an easy cue of each image (e.g. its colors), ranking everything
that shares the cue in random order: the shortcut's ceiling, to compare a trained model's recall with.

A dataset folder may hold cues.csv (filename, cue); scripts/make_demo_dataset.py writes one for each kind.
"""
import csv
import os
from collections import Counter
from math import comb

from utils.errors import UserError

FILE_NAME = "cues.csv"


def read_cues(data_dir, table):
    """{image row: cue} from ``data_dir``'s cues.csv for images of ``table``; None without such a file."""
    path = os.path.join(data_dir, FILE_NAME)
    if not os.path.isfile(path):
        return None
    rows = {record.filename: index for index, record in enumerate(table.images)}
    try:
        with open(path, encoding="utf-8", newline="") as handle:
            reader = csv.DictReader(handle)
            reader.fieldnames = [name.strip().lower() for name in reader.fieldnames or ()]
            if not {"filename", "cue"} <= set(reader.fieldnames):
                raise UserError(f"{path}: expected the columns filename and cue")
            cues = {rows[row["filename"]]: row["cue"] for row in reader if row["filename"] in rows}
    except (OSError, UnicodeDecodeError, csv.Error) as error:
        raise UserError(f"{path}: cannot be read ({error})") from None
    return cues or None


def cue_only_recall(caption_counts, cues, ks=(1, 5, 10)):
    """Expected R@k of a cue-only ranking (ties in random order), both directions.

    caption_counts: captions of each image [N]; cues: {image row: cue} (images without one are left out).
    image->text: image i's c_i captions among the m captions sharing its cue; hit when one of the top k is
    its own: 1 - C(m - c_i, k) / C(m, k). text->image: its image among the n images sharing the cue:
    min(1, k / n). Returns {"cue-image_to_text_R@k", "cue-text_to_image_R@k"}.
    """
    rows = [row for row in range(len(caption_counts)) if row in cues and caption_counts[row]]
    images = Counter(cues[row] for row in rows)
    captions = Counter()
    for row in rows:
        captions[cues[row]] += caption_counts[row]
    metrics = {}
    def image_hit(row, k):  # every caption sharing the cue fits in the top k: a sure hit
        shared = captions[cues[row]]
        return 1.0 if k >= shared else 1 - comb(shared - caption_counts[row], k) / comb(shared, k)

    for k in ks:
        i2t = [image_hit(row, k) for row in rows]
        t2i = [min(1.0, k / images[cues[row]]) for row in rows for _ in range(caption_counts[row])]
        metrics[f"cue-image_to_text_R@{k}"] = sum(i2t) / len(i2t)
        metrics[f"cue-text_to_image_R@{k}"] = sum(t2i) / len(t2i)
    return metrics


def format_cue_recall(metrics):
    def row(direction):
        return "/".join(f"{metrics[f'cue-{direction}_R@{k}']:.3f}" for k in (1, 5, 10))
    return (f"easy cue alone (cues.csv; everything sharing an image's cue ranked at random) would reach R@1/5/10 "
            f"image → text {row('image_to_text')}, text → image {row('text_to_image')}")
