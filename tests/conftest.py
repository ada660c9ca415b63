"""Shared fixtures: a tiny generated dataset, a tiny text tower, a tiny joint checkpoint and a tiny index.
Helpers (plain functions) live in tests/helpers.py."""
import os

import pytest

from tests.helpers import run_script

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture(scope="session")
def tiny_dataset(tmp_path_factory):
    """datasets format: train (48 images) and valid (16 images), 32x32, 5 captions each."""
    from scripts.make_demo_dataset import main

    out = tmp_path_factory.mktemp("tiny") / "data"
    assert main(["--out", str(out), "--train", "48", "--valid", "16", "--image-size", "32", "--seed", "3"]) == 0
    return out


@pytest.fixture(scope="session")
def tiny_text_tower(tiny_dataset, tmp_path_factory):
    from scripts.make_demo_text_tower import read_captions, write_text_tower

    out = tmp_path_factory.mktemp("text") / "roberta-tiny"
    write_text_tower(read_captions(str(tiny_dataset / "train")), str(out), vocab_size=300,
                     hidden_size=32, layers=1, heads=2, max_length=32)
    return out


@pytest.fixture(scope="session")
def tiny_checkpoint(tiny_text_tower, tmp_path_factory):
    """A joint checkpoint written by the real init.py."""
    path = tmp_path_factory.mktemp("ckpt") / "pretrain.pt"
    result = run_script("init.py", "--config", "configs/demo/init.yaml", "--text-model", str(tiny_text_tower),
                        "--save-path", str(path), "--image-size", "32", "--max-length", "32", "--embed-dim", "32")
    assert result.returncode == 0, result.stderr
    return path


@pytest.fixture(scope="session")
def tiny_index(tiny_checkpoint, tiny_dataset, tmp_path_factory):
    """An index folder of the tiny valid split (16 images, 80 captions), built with the library call index.py
    makes."""
    from retrieval.encoder import TorchEncoder
    from retrieval.gallery_build import build_index
    from retrieval.gallery_sources import GallerySource
    from utils.distributed import Distributed

    out = tmp_path_factory.mktemp("index") / "idx"
    build_index(GallerySource(str(tiny_dataset / "valid")), str(out), TorchEncoder(str(tiny_checkpoint)),
                Distributed(), batch_size=8)
    return out


@pytest.fixture(scope="session")
def chromium():
    """The found browser; without one the browser tests skip, except under CI=true (CI installs one)."""
    from scripts.chromium import HOW_TO_GET_ONE, find_chromium

    browser = find_chromium()
    if browser is None and os.environ.get("CI") == "true":
        pytest.fail(f"{HOW_TO_GET_ONE} (CI=true: the browser test must run)")
    if browser is None:
        pytest.skip(HOW_TO_GET_ONE)
    return browser
