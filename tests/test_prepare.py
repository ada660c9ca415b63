"""COCO / Flickr30k preparation and the merge step, on small fixtures in each official format (quirks included)."""
import csv
import json
import os

from PIL import Image

from data.caption_table import read_caption_table
from tests.helpers import run_script


def rows(folder):
    with open(folder / "captions.csv", encoding="utf-8", newline="") as handle:
        return [(r["filename"], r["caption"]) for r in csv.DictReader(handle)]


def image(path, colour=(10, 20, 30)):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (16, 12), colour).save(path)


def coco_fixture(tmp_path):
    images = tmp_path / "train2017"
    image(images / "000000000009.jpg")
    image(images / "000000000025.jpg", (200, 0, 0))
    image(images / "000000000030.jpg")  # listed but without captions
    image(images / "000000000999.jpg")  # not listed at all
    data = {"images": [{"id": 9, "file_name": "000000000009.jpg"}, {"id": 25, "file_name": "000000000025.jpg"},
                       {"id": 30, "file_name": "000000000030.jpg"}, {"id": 42, "file_name": "000000000042.jpg"}],
            "annotations": [{"id": 1, "image_id": 9, "caption": "  A bowl of   fruit.\n"},
                            {"id": 2, "image_id": 9, "caption": "Fruit in a bowl."},
                            {"id": 3, "image_id": 25, "caption": "A giraffe eating leaves."},
                            {"id": 4, "image_id": 42, "caption": "An image whose file is missing."}]}
    (tmp_path / "captions_train2017.json").write_text(json.dumps(data))
    return images


def test_coco_captions_to_dataset(tmp_path):
    images = coco_fixture(tmp_path)
    out = tmp_path / "coco"
    result = run_script("scripts/prepare_coco.py", "--captions", str(tmp_path / "captions_train2017.json"),
                        "--images", str(images), "--out", str(out))
    assert result.returncode == 0, result.stderr
    assert rows(out) == [("000000000009.jpg", "A bowl of fruit."), ("000000000009.jpg", "Fruit in a bowl."),
                         ("000000000025.jpg", "A giraffe eating leaves.")]
    assert "000000000030.jpg: no captions" in result.stderr and "000000000042.jpg: file not found" in result.stderr
    assert "Karpathy" in result.stderr  # train2017 leakage warning
    assert os.path.islink(out / "images" / "000000000009.jpg")  # linked, not copied
    table = read_caption_table(str(out))
    assert len(table.images) == 2 and table.skipped == []

    one = tmp_path / "one"
    result = run_script("scripts/prepare_coco.py", "--captions", str(tmp_path / "captions_train2017.json"),
                        "--images", str(images), "--out", str(one), "--one-caption", "--copy")
    assert result.returncode == 0 and len(rows(one)) == 2 and not os.path.islink(one / "images" / "000000000009.jpg")
    again = run_script("scripts/prepare_coco.py", "--captions", str(tmp_path / "captions_train2017.json"),
                       "--images", str(images), "--out", str(one))
    assert again.returncode == 2 and "--overwrite" in again.stderr


def karpathy_coco(tmp_path):
    data = {"images": [
        {"filepath": "val2014", "filename": "COCO_val2014_000000000009.jpg", "cocoid": 9, "split": "test",
         "sentences": [{"raw": "A bowl of fruit."}, {"raw": "Fruit."}]},
        {"filepath": "train2014", "filename": "COCO_train2014_000000000025.jpg", "cocoid": 25, "split": "train",
         "sentences": [{"raw": "A giraffe."}]},
        {"filepath": "val2014", "filename": "COCO_val2014_000000000077.jpg", "cocoid": 77, "split": "test",
         "sentences": [{"raw": "Missing file."}]}]}
    (tmp_path / "dataset_coco.json").write_text(json.dumps(data))
    return tmp_path / "dataset_coco.json"


def test_coco_karpathy_split_finds_2017_file_names_and_exclusion_avoids_leakage(tmp_path):
    images = coco_fixture(tmp_path)
    split = karpathy_coco(tmp_path)
    out = tmp_path / "test"
    result = run_script("scripts/prepare_coco.py", "--karpathy", str(split), "--split", "test", "--images",
                        str(images), "--out", str(out))
    assert result.returncode == 0, result.stderr
    assert rows(out) == [("000000000009.jpg", "A bowl of fruit."), ("000000000009.jpg", "Fruit.")]
    assert "COCO_val2014_000000000077.jpg: file not found" in result.stderr
    train = tmp_path / "train"
    result = run_script("scripts/prepare_coco.py", "--captions", str(tmp_path / "captions_train2017.json"),
                        "--images", str(images), "--out", str(train), "--exclude-karpathy", str(split))
    assert result.returncode == 0 and "excluded 1 Karpathy" in result.stdout
    assert [name for name, _ in rows(train)] == ["000000000025.jpg"]


def test_flickr30k_kaggle_results_with_its_quirks(tmp_path):
    images = tmp_path / "flickr30k_images"
    for name in ("1000092795.jpg", "2199200615.jpg"):
        image(images / name)
    (tmp_path / "results.csv").write_text(
        "image_name| comment_number| comment\n"
        "1000092795.jpg| 0| Two young guys with shaggy hair look at their hands .\n"
        "1000092795.jpg|1|  Two young , White males are outside near many bushes .  \n"
        "2199200615.jpg| 4 A dog runs across the grass .\n"   # the known row with a missing pipe
        "garbage line without pipes\n"
        "404.jpg| 0| An image that is not there .\n", encoding="utf-8")
    out = tmp_path / "flickr"
    result = run_script("scripts/prepare_flickr30k.py", "--results", str(tmp_path / "results.csv"), "--images",
                        str(images), "--out", str(out))
    assert result.returncode == 0, result.stderr
    assert rows(out) == [("1000092795.jpg", "Two young guys with shaggy hair look at their hands ."),
                         ("1000092795.jpg", "Two young , White males are outside near many bushes ."),
                         ("2199200615.jpg", "A dog runs across the grass .")]
    assert "results.csv:5: skipped" in result.stderr and "404.jpg: file not found" in result.stderr


def test_flickr30k_karpathy_split(tmp_path):
    images = tmp_path / "imgs"
    image(images / "1000092795.jpg")
    image(images / "10002456.jpg")
    data = {"images": [{"filename": "1000092795.jpg", "split": "test", "sentences": [{"raw": "Two guys."}]},
                       {"filename": "10002456.jpg", "split": "train", "sentences": [{"raw": "Workers."}]}]}
    (tmp_path / "dataset_flickr30k.json").write_text(json.dumps(data))
    out = tmp_path / "f-test"
    result = run_script("scripts/prepare_flickr30k.py", "--karpathy", str(tmp_path / "dataset_flickr30k.json"),
                        "--split", "test", "--images", str(images), "--out", str(out))
    assert result.returncode == 0, result.stderr
    assert rows(out) == [("1000092795.jpg", "Two guys.")]


def test_merge_builds_one_training_set_and_warns_about_overlap(tmp_path):
    images = coco_fixture(tmp_path)
    coco, held_out = tmp_path / "coco-train", tmp_path / "karpathy-test"
    assert run_script("scripts/prepare_coco.py", "--captions", str(tmp_path / "captions_train2017.json"),
                      "--images", str(images), "--out", str(coco)).returncode == 0
    assert run_script("scripts/prepare_coco.py", "--karpathy", str(karpathy_coco(tmp_path)), "--split", "test",
                      "--images", str(images), "--out", str(held_out)).returncode == 0
    flickr = tmp_path / "flickr30k"
    image(flickr / "images" / "1.jpg")
    (flickr / "captions.csv").write_text("filename,caption\n1.jpg,A dog.\n1.jpg,A brown dog.\n")
    out = tmp_path / "train"
    result = run_script("scripts/merge_datasets.py", "--inputs", str(coco), str(flickr), "--out", str(out),
                        "--check-against", str(held_out))
    assert result.returncode == 0, result.stderr
    assert "1 images of" in result.stderr and "would leak" in result.stderr
    table = read_caption_table(str(out))
    assert [r.filename for r in table.images] == ["coco-train/000000000009.jpg", "coco-train/000000000025.jpg",
                                                  "flickr30k/1.jpg"]
    assert table.images[2].captions == ["A dog.", "A brown dog."]
