"""Shards written by scripts/make_shards.py, read by the field's readers: webdataset's to_tuple("jpg", "txt")
and open_clip's training data pipeline (open_clip_train.data.get_wds_dataset)."""
import argparse
import functools

import pytest
import torch
import webdataset

from scripts.make_shards import main as make_shards


def _shards(dataset, out, *extra):
    assert make_shards(["--data", str(dataset), "--out", str(out), "--samples-per-shard", "4", "--quiet",
                        *extra]) == 0
    return str(out / "{00000..00003}.tar")


def test_jpg_only_readers_read_shards_written_with_image_format_jpg(tiny_dataset, tmp_path):
    kept = _shards(tiny_dataset / "valid", tmp_path / "keep")  # the demo's PNGs keep their bytes and key
    with pytest.raises(ValueError, match="jpg"):
        next(iter(webdataset.WebDataset(kept, shardshuffle=False).decode("pil").to_tuple("jpg", "txt")))
    jpg = _shards(tiny_dataset / "valid", tmp_path / "jpg", "--image-format", "jpg")
    pairs = list(webdataset.WebDataset(jpg, shardshuffle=False).decode("pil").to_tuple("jpg", "txt"))
    assert len(pairs) == 16 and all(image.size == (32, 32) and text for image, text in pairs)


@pytest.mark.parametrize("image_format", ["keep", "jpg"])
def test_open_clip_reads_our_shards_for_training_and_evaluation(tiny_dataset, tmp_path, monkeypatch, image_format):
    import open_clip
    import open_clip_train.data as open_clip_data
    from webdataset.tariterators import tar_file_expander

    shards = _shards(tiny_dataset / "valid", tmp_path / image_format, "--image-format", image_format)
    args = argparse.Namespace(train_data=shards, val_data=shards, train_num_samples=None, val_num_samples=16,
                              dataset_resampled=False, seed=0, train_data_upsampling_factors=None, batch_size=4,
                              workers=1, world_size=1)
    tokenizer = open_clip.get_tokenizer("RN50")
    preprocess = lambda image: torch.zeros(3, 8, 8) + image.size[0]  # noqa: E731
    evaluation = open_clip_data.get_wds_dataset(args, preprocess, False, tokenizer=tokenizer)
    images = sum(batch[0].shape[0] for batch in evaluation.dataloader)
    assert images == 16
    # Its training reader with webdataset 1.0.2: each shard ends with an empty EOF sample that open_clip's
    # group_by_keys_nothrow reads as KeyError: 'fname'. The workaround: no EOF marker (eof_value=None).
    with pytest.raises(KeyError, match="fname"):
        next(iter(open_clip_data.get_wds_dataset(args, preprocess, True, tokenizer=tokenizer).dataloader))
    monkeypatch.setattr(open_clip_data, "tar_file_expander", functools.partial(tar_file_expander, eof_value=None))
    training = open_clip_data.get_wds_dataset(args, preprocess, True, tokenizer=tokenizer)  # sizes from sizes.json
    assert training.dataloader.num_samples == 16
    batch = next(iter(training.dataloader))
    assert batch[0].shape == (4, 3, 8, 8) and batch[1].shape == (4, 77)
