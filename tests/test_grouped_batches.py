"""Grouped batches (batching: groups, a dataset's groups.csv) and the demo's swapped twins that fill them."""
import csv
import json
import logging
import os
import re

import pytest
import torch
from PIL import Image

from data.groups import read_groups
from tests.helpers import ROOT, resumed_inside_an_epoch, run_script, train_args
from training.grouped_batches import GroupedOrder, grouped_order
from utils.errors import UserError


def _batch_of(order, batch_size):
    """{image: its batch number} for a permutation ``order``."""
    return {image: position // batch_size for position, image in enumerate(order.tolist())}


def _random_groups(size, sizes, seed):
    """Disjoint groups of the given sizes over range(size), brute-force drawn."""
    shuffled = torch.randperm(size, generator=torch.Generator().manual_seed(seed)).tolist()
    groups, start = [], 0
    for length in sizes:
        groups.append(shuffled[start:start + length])
        start += length
    return groups


@pytest.mark.parametrize("seed", range(5))
def test_grouped_order_keeps_every_group_in_one_batch(seed):
    groups = _random_groups(100, [2, 3, 5, 2, 4, 2, 3, 2, 5, 2, 3, 2, 4, 2, 2, 3], seed)  # 46 grouped, 54 single
    order = grouped_order(groups, 100, 10, torch.Generator().manual_seed(seed))
    assert sorted(order.tolist()) == list(range(100))
    batch = _batch_of(order, 10)
    for members in groups:
        assert len({batch[image] for image in members}) == 1, (members, order.tolist())


def test_grouped_order_cuts_a_group_larger_than_a_batch_and_pairs_tile_even_batches():
    order = grouped_order([list(range(20))], 30, 8, torch.Generator().manual_seed(0))
    batch = _batch_of(order, 8)
    pieces = [list(range(start, start + 8)) for start in (0, 8)] + [[16, 17, 18, 19]]
    assert sorted(order.tolist()) == list(range(30))
    assert all(len({batch[image] for image in piece}) == 1 for piece in pieces)
    twins = [[2 * i, 2 * i + 1] for i in range(32)]  # only pairs, even batches: no pair can be cut
    for seed in range(3):
        batch = _batch_of(grouped_order(twins, 64, 6, torch.Generator().manual_seed(seed)), 6)
        assert all(batch[a] == batch[b] for a, b in twins)


def test_grouped_order_is_drawn_per_epoch_and_split_over_ranks():
    groups = [[2 * i, 2 * i + 1] for i in range(11)]
    ranks = [GroupedOrder(groups, 22, 8, rank, 2, seed=4) for rank in range(2)]
    first = ranks[0].order.clone()
    for sampler in ranks:
        sampler.set_epoch(1)
    assert torch.equal(ranks[0].order, ranks[1].order) and not torch.equal(ranks[0].order, first)
    ranks[0].set_epoch(0)
    assert torch.equal(ranks[0].order, first)  # a resumed epoch draws the same order again
    ranks[0].set_epoch(1)
    parts = [list(sampler) for sampler in ranks]
    assert [len(part) for part in parts] == [8, 8]
    for batch in range(2):  # each global batch is rank 0's slice then rank 1's: pairs meet in the gathered loss
        together = parts[0][4 * batch:4 * batch + 4] + parts[1][4 * batch:4 * batch + 4]
        assert together == ranks[0].order[8 * batch:8 * batch + 8].tolist()


def _folder(root, count, groups_rows=None, header=("filename", "group")):
    """A dataset folder of ``count`` images, image i captioned "image i", and a groups.csv of ``groups_rows``."""
    (root / "images").mkdir(parents=True)
    for index in range(count):
        Image.new("RGB", (24, 24), (index * 9 % 256, 80, 160)).save(root / "images" / f"{index}.png")
    with open(root / "captions.csv", "w", newline="") as handle:
        csv.writer(handle).writerows([("filename", "caption")] + [(f"{i}.png", f"image {i}") for i in range(count)])
    if groups_rows is not None:
        with open(root / "groups.csv", "w", newline="") as handle:
            csv.writer(handle).writerows([header, *groups_rows])
    return root


def test_read_groups_keeps_known_images_and_names_the_file_when_it_is_wrong(tmp_path, caplog):
    from data.caption_table import read_caption_table

    folder = _folder(tmp_path / "a", 6, [("0.png", "x"), ("1.png", "x"), ("2.png", "y"), ("9.png", "y"),
                                         ("3.png", "y"), ("0.png", "y"), ("4.png", "")])
    table = read_caption_table(str(folder), strict=False)
    rows = {record.filename: index for index, record in enumerate(table.images)}
    with caplog.at_level(logging.WARNING):
        groups = read_groups(str(folder), table)
    assert groups == [[rows["0.png"], rows["1.png"]], [rows["2.png"], rows["3.png"]]]
    assert "2 row(s) name an image the dataset does not have" in caplog.text  # 9.png and the empty group
    assert "1 image(s) named again" in caplog.text
    assert read_groups(str(_folder(tmp_path / "none", 2)), table) is None
    bad = _folder(tmp_path / "bad", 2, [("0.png", "x")], header=("filename", "set"))
    with pytest.raises(UserError, match=r"bad/groups.csv: missing column\(s\) group"):
        read_groups(str(bad), table)


def _identity(captions):
    return list(captions)


@pytest.mark.slow
def test_training_batches_hold_each_group_whole_with_two_workers(tiny_checkpoint, tmp_path):
    """The path train.py takes (config -> DataSettings -> training_data), its loader's workers included."""
    from models.checkpoint import model_from_checkpoint, read_checkpoint
    from training.train_data import DataSettings, training_data
    from utils.config import load_config
    from utils.config_schema import TRAIN
    from utils.distributed import Distributed

    twins = [(f"{i}.png", f"g{i // 2}") for i in range(24)] + [("30.png", "t"), ("31.png", "t"), ("32.png", "t")]
    folder = _folder(tmp_path / "data", 40, twins)
    config = load_config(TRAIN, "configs/demo/train.yaml", ["--train-data", str(folder), "--batching", "groups",
                                                           "--batch-size", "8", "--num-workers", "2"])
    _, spec, _ = model_from_checkpoint(read_checkpoint(str(tiny_checkpoint)))
    data = training_data(DataSettings.from_config(config, spec), spec, _identity, Distributed(), False)
    assert any("13 groups of 27 of 40 images" in line for line in data.notices)
    groups = {}
    for name, group in twins:
        groups.setdefault(group, set()).add(f"image {name[:-4]}")
    for epoch in range(2):
        data.epochs.set_epoch(epoch)
        seen = 0
        for _, captions in data.loader:
            assert len(captions) == 8
            seen += len(captions)
            for members in groups.values():
                assert not members & set(captions) or members <= set(captions), (members, captions)
        assert seen == 40


@pytest.mark.slow
def test_batching_groups_without_a_groups_file_is_a_clear_error(tiny_checkpoint, tiny_dataset, tmp_path):
    result = run_script(*train_args(tiny_checkpoint, tiny_dataset, tmp_path / "run", "--batching", "groups"))
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert f"batching groups: {tiny_dataset / 'train'}/groups.csv not found" in result.stderr
    shards = run_script(*train_args(tiny_checkpoint, tiny_dataset, tmp_path / "bad", "--train-data",
                                    str(tmp_path / "x-{0..1}.tar"), "--batching", "groups"))
    assert shards.returncode == 2 and "batching groups picks any image" in shards.stderr
    assert "Traceback" not in shards.stderr
    one_file = os.path.join(ROOT, "tests", "data", "img2dataset", "parquet", "00000.parquet")  # no folder around it
    parquet = run_script(*train_args(tiny_checkpoint, tiny_dataset, tmp_path / "pq", "--train-data", one_file,
                                     "--batching", "groups"))
    assert parquet.returncode == 2 and "has no such folder" in parquet.stderr and "Traceback" not in parquet.stderr


@pytest.mark.slow
def test_a_negative_that_is_a_group_mates_caption_is_left_out(tiny_checkpoint, tmp_path):
    """A twin's captions are its original's negatives: in one batch with it, they would be false negatives."""
    from models.checkpoint import model_from_checkpoint, read_checkpoint
    from training.train_data import DataSettings, training_data
    from utils.config import load_config
    from utils.config_schema import TRAIN
    from utils.distributed import Distributed

    folder = _folder(tmp_path / "data", 8, [("0.png", "a"), ("1.png", "a"), ("2.png", "b"), ("3.png", "b")])
    with open(folder / "negatives.csv", "w", newline="") as handle:
        csv.writer(handle).writerows([("filename", "caption", "negative"), ("0.png", "image 0", "image 1"),
                                      ("1.png", "image 1", "image 0"), ("2.png", "image 2", "image 7"),
                                      ("4.png", "image 4", "image 5")])
    _, spec, _ = model_from_checkpoint(read_checkpoint(str(tiny_checkpoint)))

    def negatives(batching):
        config = load_config(TRAIN, "configs/demo/train.yaml", ["--train-data", str(folder), "--batching", batching,
                                                               "--compositional-negatives", "true",
                                                               "--batch-size", "4", "--num-workers", "0"])
        data = training_data(DataSettings.from_config(config, spec), spec, _identity, Distributed(), False)
        data.epochs.set_epoch(0)
        return [data.epochs.dataset[index][1][-1] for index in (0, 1, 2, 4)], data.notices

    grouped, notices = negatives("groups")
    assert grouped == ["", "", "image 7", "image 5"]  # image 5 is no mate of image 4: kept
    assert any("2 left out, each a caption of an image in the same group" in line for line in notices)
    assert negatives("random")[0] == ["image 1", "image 0", "image 7", "image 5"]


@pytest.fixture(scope="session")
def twins_dataset(tmp_path_factory):
    from scripts.make_demo_dataset import main

    out = tmp_path_factory.mktemp("twins") / "data"
    assert main(["--out", str(out), "--train", "48", "--valid", "16", "--image-size", "32", "--seed", "3",
                 "--twins"]) == 0
    return out


def _rows(path):
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def test_make_demo_dataset_twins_pair_each_image_with_its_swapped_scene(twins_dataset, tiny_dataset):
    train = twins_dataset / "train"
    groups = _rows(train / "groups.csv")
    pairs = {}
    for row in groups:
        pairs.setdefault(row["group"], []).append(row["filename"])
    assert len(pairs) >= 40 and all(len(names) == 2 and names[1] == names[0][:-4] + "-twin.png"
                                    for names in pairs.values())
    captions = _captions_by_image(train)
    negatives = {(row["filename"], row["caption"]): row["negative"] for row in _rows(train / "negatives.csv")}
    assert sum(name.endswith("-twin.png") for name, _ in negatives) >= 100  # the twins' own negatives
    for first, twin in pairs.values():
        assert (train / "images" / twin).is_file() and captions[first] != captions[twin]
        for caption, swapped in zip(captions[first], captions[twin]):
            # the twin's caption is the original's compositional negative, word for word, and vice versa
            assert negatives.get((first, caption), swapped) == swapped
            assert negatives.get((twin, swapped), caption) == caption
    # the originals and the valid split are those of the dataset without twins (same seed)
    plain = _captions_by_image(tiny_dataset / "train")
    assert {name: text for name, text in captions.items() if not name.endswith("-twin.png")} == plain
    assert _rows(twins_dataset / "valid" / "captions.csv") == _rows(tiny_dataset / "valid" / "captions.csv")
    scenes = {split: {record["filename"]: frozenset(record["facts"]) for record in _json_lines(
        twins_dataset / split / "scenes.jsonl")} for split in ("train", "valid")}
    assert not set(scenes["valid"].values()) & {scenes["train"][twin] for _, twin in pairs.values()}  # all new
    assert all(scenes["train"][first] != scenes["train"][twin] for first, twin in pairs.values())


def test_chinese_twins_are_the_same_scenes_captioned_in_chinese(twins_dataset, tmp_path):
    """make demo-zh trains on --lang zh --twins: the English twins' scenes and pairs, each twin's captions its
    original's Chinese swaps, and a valid split equal to the Chinese dataset's without twins."""
    from scripts.make_demo_dataset import main

    args = ["--train", "48", "--valid", "16", "--image-size", "32", "--seed", "3", "--lang", "zh"]
    assert main(["--out", str(tmp_path / "zh"), *args]) == 0
    assert main(["--out", str(tmp_path / "zh-twins"), *args, "--twins"]) == 0
    zh = tmp_path / "zh-twins"
    assert _rows(zh / "train" / "groups.csv") == _rows(twins_dataset / "train" / "groups.csv")
    for split in ("train", "valid"):
        assert _json_lines(zh / split / "scenes.jsonl") == _json_lines(twins_dataset / split / "scenes.jsonl")
    assert _rows(zh / "valid" / "captions.csv") == _rows(tmp_path / "zh" / "valid" / "captions.csv")
    captions = _captions_by_image(zh / "train")
    negatives = {(row["filename"], row["caption"]): row["negative"] for row in _rows(zh / "train" / "negatives.csv")}
    pairs = [(row["filename"], row["filename"][:-4] + "-twin.png") for row in _rows(zh / "train" / "groups.csv")
             if not row["filename"].endswith("-twin.png")]
    assert len(pairs) >= 40 and sum((first, caption) in negatives for first, _ in pairs
                                    for caption in captions[first]) >= 100
    for first, twin in pairs:
        assert all(re.search("[\u4e00-\u9fff]", text) for text in captions[first] + captions[twin])  # Chinese
        assert captions[first] != captions[twin] and len(captions[first]) == len(captions[twin])
        for caption, swapped in zip(captions[first], captions[twin]):
            assert negatives.get((first, caption), swapped) == swapped
            assert negatives.get((twin, swapped), caption) == caption


def _json_lines(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def _captions_by_image(split):
    captions = {}
    for row in _rows(split / "captions.csv"):
        captions.setdefault(row["filename"], []).append(row["caption"])
    return captions


@pytest.mark.slow
def test_grouped_batches_train_and_resume_inside_an_epoch_bit_for_bit(tiny_checkpoint, twins_dataset, tmp_path):
    def args(out):
        return train_args(tiny_checkpoint, twins_dataset, out, "--epochs", "2", "--num-workers", "2",
                          "--batching", "groups", "--same-caption-positives", "true", "--checkpoint-every-steps", "1")

    result, _, _ = resumed_inside_an_epoch(args, tmp_path)
    assert "batching: groups, " in result.stdout
