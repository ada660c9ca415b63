"""A dataset with every kind of bad input the issue lists: usable images used, the rest skipped with a reason."""
import logging
import os

import numpy as np
import pytest
import torch
from PIL import Image

from data.caption_table import read_caption_table
from data.datasets import PairCollate, TrainImages
from data.image_file import ImageProblem, open_image_rgb
from data.transforms import eval_transform, train_transform
from tests.helpers import png_bytes, snapshot, truncated_png_bytes
from utils.errors import UserError

GOOD = ["good.png", "gray.png", "cmyk.jpg", "sixteen.png", "palette.png", "alpha.png", "exif.jpg", "tiny.png",
        "wide.png", "ünïcode 图片.png", "truncated.png"]


def build_bad_dataset(root):
    images = root / "images"
    images.mkdir(parents=True)
    Image.new("RGB", (20, 20), (200, 10, 10)).save(images / "good.png")
    Image.new("L", (20, 20), 128).save(images / "gray.png")
    Image.new("CMYK", (20, 20), (0, 255, 255, 0)).save(images / "cmyk.jpg")
    Image.fromarray(np.full((20, 20), 65535, dtype=np.uint16)).save(images / "sixteen.png")
    palette = Image.new("P", (20, 20), 0)
    palette.putpalette([0, 0, 255] * 256)
    palette.info["transparency"] = 0
    palette.save(images / "palette.png", transparency=0)
    Image.new("RGBA", (20, 20), (0, 0, 0, 0)).save(images / "alpha.png")
    exif_image = Image.new("RGB", (40, 20), (0, 200, 0))
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: rotate 90 degrees clockwise to display
    exif_image.save(images / "exif.jpg", exif=exif)
    Image.new("RGB", (1, 1), (0, 0, 0)).save(images / "tiny.png")
    Image.new("RGB", (3000, 2), (9, 9, 9)).save(images / "wide.png")
    Image.new("RGB", (8, 8), (1, 2, 3)).save(images / "ünïcode 图片.png")
    (images / "truncated.png").write_bytes(truncated_png_bytes())
    (images / "corrupt.jpg").write_bytes(b"\xff\xd8\xff\xe0" + os.urandom(200))
    (images / "empty.jpg").write_bytes(b"")
    (images / "notimage.jpg").write_text("hello, I am text")
    Image.new("1", (10_000, 9_000)).save(images / "bomb.png")
    (root / "outside.png").write_bytes(png_bytes(Image.new("RGB", (4, 4))))
    rows = ["filename,caption,source"]
    rows += [f'"{name}",a picture of {name.split(".")[0]},test' for name in GOOD]
    rows += [
        "good.png,a picture of good,test",             # duplicate row
        "good.png,a second caption for the red image,",  # extra column left empty: fine
        "good.png",                                     # short row
        "gray.png,,test",                               # empty caption
        'gray.png,"   ",test',                          # blank caption
        "gray.png," + "x" * 20_000 + ",test",           # overlong caption
        "corrupt.jpg,corrupt,test",
        "empty.jpg,empty,test",
        "notimage.jpg,text file,test",
        "bomb.png,bomb,test",
        "missing.jpg,missing,test",
        "../outside.png,escape,test",
        "/etc/passwd,absolute,test",
        "sub/../../outside.png,escape again,test",
    ]
    # BOM and CRLF line endings, as Excel writes them.
    (root / "captions.csv").write_bytes(("\ufeff" + "\r\n".join(rows) + "\r\n").encode("utf-8"))
    return root


def read_logged(caplog, root):
    """read_caption_table(root) and the lines it logs, in order."""
    caplog.set_level(logging.INFO, logger="data.caption_table")
    table = read_caption_table(root)
    return table, [record.getMessage() for record in caplog.records]


@pytest.fixture()
def bad_dataset(tmp_path):
    return build_bad_dataset(tmp_path / "bad")


def test_usable_images_are_kept_and_each_bad_row_is_skipped_with_a_reason(bad_dataset, caplog):
    table, lines = read_logged(caplog, str(bad_dataset))
    assert [record.filename for record in table.images] == GOOD
    assert table.images[0].captions == ["a picture of good", "a second caption for the red image"]
    reasons = "\n".join(table.skipped)
    for expected in ["duplicate of line 2", "short row", "empty caption", "longer than 10000",
                     "'corrupt.jpg': cannot open", "'empty.jpg': empty file", "'notimage.jpg': not an image",
                     "'bomb.png': image too large", "'missing.jpg': file not found", "escapes images/",
                     "absolute file name"]:
        assert expected in reasons, expected
    assert len(table.skipped) == 13
    assert lines[-1].endswith("skipped 13 rows (1 duplicate row, 1 short row, 2 empty caption, 1 overlong caption, "
                              "5 bad image, 3 unsafe file name)")


def test_strict_fails_listing_every_problem(bad_dataset):
    with pytest.raises(UserError) as error:
        read_caption_table(str(bad_dataset), strict=True)
    message = str(error.value)
    assert "14 problem(s)" in message  # the 13 above plus the truncated PNG, which strict decodes fully
    assert "truncated.png" in message and "missing.jpg" in message


def test_usable_images_decode_to_rgb_with_exif_and_transparency_applied(bad_dataset):
    images = bad_dataset / "images"
    for name in GOOD[:-1]:
        assert open_image_rgb(str(images / name)).mode == "RGB", name
    assert open_image_rgb(str(images / "exif.jpg")).size == (20, 40)
    assert open_image_rgb(str(images / "sixteen.png")).getpixel((0, 0)) == (255, 255, 255)
    assert open_image_rgb(str(images / "alpha.png")).getpixel((0, 0)) == (255, 255, 255)
    assert open_image_rgb(str(images / "palette.png")).getpixel((0, 0)) == (255, 255, 255)
    assert open_image_rgb(str(images / "cmyk.jpg")).getpixel((5, 5))[0] > 200  # CMYK red stays red
    wide = eval_transform(16)(open_image_rgb(str(images / "wide.png")))
    assert wide.shape == (3, 16, 16)


def _epoch_batches(dataset, collate, workers):
    loader = torch.utils.data.DataLoader(dataset, batch_size=4, collate_fn=collate, num_workers=workers,
                                         persistent_workers=workers > 0)
    return [(images.clone(), ids.clone()) for images, ids in loader]


def test_a_file_that_fails_mid_epoch_is_replaced_the_same_way_whatever_the_workers(bad_dataset, tiny_text_tower,
                                                                                   caplog):
    from models.tokenizer import CaptionTokenizer, load_hf_tokenizer

    before = snapshot(bad_dataset)
    table = read_caption_table(str(bad_dataset))
    names = [record.filename for record in table.images]
    assert "truncated.png" in names  # the header is fine: only decoding the pixels fails, mid-epoch
    collate = PairCollate(CaptionTokenizer(load_hf_tokenizer(str(tiny_text_tower)), 16))
    runs = {}
    for workers in (0, 2):
        dataset = TrainImages(table, train_transform(16, 0.5, flip=True, color=True), seed=0)
        with caplog.at_level("WARNING"):
            caplog.clear()
            runs[workers] = _epoch_batches(dataset, collate, workers)
        if workers == 0:  # worker processes log through their own handlers, not pytest's capture
            reports = [r.getMessage() for r in caplog.records if "truncated.png" in r.getMessage()]
            assert len(reports) == 1 and "replaced by the next decodable image" in reports[0]
    for workers, batches in runs.items():
        assert [images.shape[0] for images, _ in batches] == [4] * (len(names) // 4) + (
            [len(names) % 4] if len(names) % 4 else []), workers  # every batch keeps its size
    for (a_images, a_ids), (b_images, b_ids) in zip(runs[0], runs[2]):
        assert torch.equal(a_images, b_images) and torch.equal(a_ids, b_ids)
    assert snapshot(bad_dataset) == before


def test_replacement_is_the_next_decodable_image_with_its_caption(bad_dataset):
    table = read_caption_table(str(bad_dataset))
    names = [record.filename for record in table.images]
    broken = names.index("truncated.png")
    dataset = TrainImages(table, train_transform(16, 0.5, flip=False, color=False), seed=0)
    image, caption = dataset[broken]
    replacement = table.images[(broken + 1) % len(names)]
    assert caption in replacement.captions and image.shape == (3, 16, 16)


def test_training_seeds_up_to_the_schema_maximum_give_valid_item_seeds():
    from data.datasets import item_seed

    for seed in (0, 20240101, 2**31 - 1):
        for epoch, index in ((0, 0), (199, 10**7)):
            value = item_seed(seed, epoch, index)
            assert 0 <= value < 2**63
            torch.Generator().manual_seed(value)  # raised OverflowError before
    assert item_seed(0, 3, 5) == (0 * 1_000_003 + 3) * 1_000_003 + 5  # small seeds keep their streams


def test_missing_folder_and_bad_header_are_clear_errors(tmp_path):
    with pytest.raises(UserError, match="not found"):
        read_caption_table(str(tmp_path / "nope"))
    (tmp_path / "d" / "images").mkdir(parents=True)
    (tmp_path / "d" / "captions.csv").write_text("name,text\na.png,b\n")
    with pytest.raises(UserError, match="'filename' and 'caption'"):
        read_caption_table(str(tmp_path / "d"))
    (tmp_path / "d" / "captions.csv").write_bytes(b"filename,caption\n\xff\xfe,bad\n")
    with pytest.raises(UserError, match="not UTF-8"):
        read_caption_table(str(tmp_path / "d"))


def test_unterminated_quote_and_aliases_of_one_file(tmp_path, caplog):
    root = tmp_path / "d"
    (root / "images").mkdir(parents=True)
    for name in ("a.png", "b.png"):
        Image.new("RGB", (8, 8)).save(root / "images" / name)
    (root / "captions.csv").write_text('\nfilename,caption\na.png,one\n./a.png,two\nb.png,"broken\nb.png,four\n'
                                       'a.png,five\n')
    table, lines = read_logged(caplog, str(root))
    assert [(r.filename, r.captions) for r in table.images] == [("a.png", ["one", "two"])]
    assert any("unterminated quote" in line for line in lines)


def test_an_eps_named_jpg_is_never_opened_as_eps(tmp_path, caplog):
    from PIL import EpsImagePlugin

    root = tmp_path / "d"
    (root / "images").mkdir(parents=True)
    Image.new("RGB", (8, 8)).save(root / "images" / "good.png")
    Image.new("RGB", (8, 8)).save(root / "images" / "good2.png")
    Image.new("RGB", (8, 8)).save(root / "images" / "fake.jpg", format="EPS")  # PostScript, named .jpg
    assert (root / "images" / "fake.jpg").read_bytes().startswith(b"%!PS")
    (root / "captions.csv").write_text("filename,caption\ngood.png,a\ngood2.png,b\nfake.jpg,c\n")
    calls = []
    original = EpsImagePlugin.EpsImageFile._open
    EpsImagePlugin.EpsImageFile._open = lambda self: calls.append(1) or original(self)
    try:
        table, lines = read_logged(caplog, str(root))
        with pytest.raises(ImageProblem, match="not an image file"):
            open_image_rgb(str(root / "images" / "fake.jpg"))
    finally:
        EpsImagePlugin.EpsImageFile._open = original
    assert [r.filename for r in table.images] == ["good.png", "good2.png"]
    assert any("'fake.jpg': not an image file" in line for line in lines)
    assert calls == []  # the EPS parser (and Ghostscript behind it) was never reached


@pytest.mark.slow
def test_a_folder_whose_images_all_fail_to_decode_stops_train_py_with_one_line(tiny_checkpoint, tiny_dataset,
                                                                                tmp_path):
    """The headers pass the scan; every decode fails inside the loader workers (num-workers 2)."""
    import shutil

    from tests.helpers import run_script, train_args

    shutil.copytree(tiny_dataset, tmp_path / "data")
    for image in (tmp_path / "data" / "train" / "images").iterdir():
        image.write_bytes(truncated_png_bytes())
    result = run_script(*train_args(tiny_checkpoint, tmp_path / "data", tmp_path / "run", "--num-workers", "2"))
    assert result.returncode == 2 and "error: no training image can be decoded" in result.stderr
    assert "Traceback" not in result.stderr and "Caught UserError" not in result.stderr
