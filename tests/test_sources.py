"""open_source: the one place a data value is told apart; every layout gives what Source lists."""
import pytest

from data import sources
from data.folder_layout import FolderSource
from data.shard_layout import ShardSource
from data.sources import Source, open_source, register_layout
from utils.errors import UserError

SOURCE_METHODS = [name for name in dir(Source) if not name.startswith("_")] + ["order_follows_workers", "side_files"]


@pytest.mark.parametrize("value, layout", [("datasets/train", FolderSource), ("shards/{00000..00009}.tar", ShardSource),
                                           ("a/0.tar::b/{0..3}.tar", ShardSource),
                                           ("https://host/shards/00000.tar", ShardSource)])
def test_each_value_opens_its_layout_and_the_layout_gives_every_source_member(value, layout):
    source = open_source(value)
    assert type(source) is layout and source.value == value
    assert all(hasattr(source, name) for name in SOURCE_METHODS), [n for n in SOURCE_METHODS if not hasattr(source, n)]


def test_a_registered_layout_is_tried_before_the_folder(monkeypatch):
    monkeypatch.setattr(sources, "_LAYOUTS", list(sources._LAYOUTS))
    open_source("x")  # the shipped layouts are registered on the first call

    @register_layout(lambda value: value.endswith(".lmdb"))
    class LmdbSource:
        def __init__(self, value, caption_key, timeout):
            self.value = value

    assert type(open_source("data/train.lmdb")) is LmdbSource
    assert type(open_source("datasets/train")) is FolderSource
    from data.parquet_layout import ParquetSource

    assert type(open_source("data/train.parquet")) is ParquetSource  # a shipped layout, registered the same way


def test_the_folder_and_the_shards_agree_on_the_validation_table(tiny_dataset, tmp_path):
    from scripts.make_shards import main as make_shards

    assert make_shards(["--data", str(tiny_dataset / "valid"), "--out", str(tmp_path / "s"), "--samples-per-shard",
                        "6", "--quiet"]) == 0
    folder = open_source(str(tiny_dataset / "valid")).validation_table(strict=False)
    shards = open_source(str(tmp_path / "s" / "{00000..00002}.tar"), "captions").validation_table(strict=False)
    assert [r.captions for r in folder.images] == [r.captions for r in shards.images]
    assert open_source(str(tiny_dataset / "valid")).side_files == str(tiny_dataset / "valid")
    assert open_source(str(tmp_path / "s" / "00000.tar")).side_files is None
    with pytest.raises(UserError, match="caption-key"):
        open_source(str(tmp_path / "s" / "00000.tar"), " , ")
