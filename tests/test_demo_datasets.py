"""The generated demo domains: deterministic, and every caption describes its own image."""
import csv
import re

import numpy as np
from PIL import Image

from scripts.demo_glyphs import BACKGROUNDS, COLORS
from scripts.make_demo_dataset import main


def _rows(directory):
    with open(directory / "captions.csv", encoding="utf-8", newline="") as handle:
        return list(csv.DictReader(handle))


def test_glyph_captions_name_what_each_image_shows(tmp_path):
    args = ["--kind", "glyphs", "--train", "30", "--valid", "10", "--seed", "5"]
    assert main([*args, "--out", str(tmp_path / "a")]) == 0
    assert main([*args, "--out", str(tmp_path / "b")]) == 0
    for split in ("train", "valid"):
        assert (tmp_path / "a" / split / "captions.csv").read_bytes() == (tmp_path / "b" / split /
                                                                           "captions.csv").read_bytes()
    assert (tmp_path / "a/valid/images/000003.png").read_bytes() == (tmp_path / "b/valid/images/000003.png").read_bytes()

    rows = _rows(tmp_path / "a" / "train")
    by_image = {}
    for row in rows:
        by_image.setdefault(row["filename"], []).append(row["caption"])
    assert len(by_image) == 30 and all(len(captions) == 5 for captions in by_image.values())
    pattern = re.compile(r"^an? \w+ \w+ (\w+) letter ([A-Z]) on an? (\w+) background$")
    for filename, captions in by_image.items():
        ink, letter, ground = pattern.match(captions[0]).groups()
        assert ink != ground
        for caption in captions:  # every paraphrase names the same letter and both colors
            words = set(re.findall(r"\w+", caption))
            assert {ink, letter, ground} <= words, caption
        pixels = np.asarray(Image.open(tmp_path / "a" / "train" / "images" / filename).convert("RGB")).astype(int)
        corner = pixels[0, 0]
        assert np.abs(corner - BACKGROUNDS[ground]).max() <= 15, (filename, ground)
        near_ink = (np.abs(pixels - COLORS[ink]).max(axis=2) <= 15).sum()
        assert near_ink >= 20, (filename, ink)  # the letter is drawn in the named color


def test_asking_for_more_scenes_than_a_kind_has_is_an_error_not_a_hang(tmp_path, capsys):
    assert main(["--kind", "glyphs", "--train", "20000", "--valid", "10", "--out", str(tmp_path / "x")]) == 2
    assert "too few distinct scenes" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()
