"""The real img2dataset's output in each of its formats (tests/data/img2dataset, written by
scripts/img2dataset_fixture.py over a loopback server with two 404s and a file that is not an image), read by
train.py, eval.py and index.py as their data."""
import io
import json
import pathlib
import shutil

import pytest

from tests.helpers import run_script

FIXTURE = pathlib.Path(__file__).resolve().parent / "data" / "img2dataset"
FORMATS = {"webdataset": "{00000..00001}.tar", "files": "", "parquet": ""}


def _data(root, output_format):
    return str(root / output_format / FORMATS[output_format]) if FORMATS[output_format] else str(root / output_format)


def _eval(checkpoint, data, out, *extra):
    result = run_script("eval.py", "--config", "configs/demo/eval.yaml", "--model-path", str(checkpoint),
                        "--valid-data", data, "--output", str(out), *extra)
    assert result.returncode == 0, result.stderr[-3000:]
    return result, json.loads(out.read_text())


def test_the_fixture_is_what_img2dataset_wrote_for_each_format():
    for output_format in FORMATS:
        stats = [json.loads(path.read_text()) for path in sorted((FIXTURE / output_format).glob("*_stats.json"))]
        assert sum(s["successes"] for s in stats) == 12 and sum(s["failed_to_download"] for s in stats) == 2
        assert sum(s["failed_to_resize"] for s in stats) == 1  # the file that is not an image
    assert "--processes_count 1" in (FIXTURE / "COMMANDS.txt").read_text()


@pytest.mark.slow
def test_eval_reads_every_format_alike_with_all_captions(tiny_checkpoint, tmp_path):
    """All three formats hold the same 12 images with 2 captions each: the same recall from each."""
    measured = {}
    for output_format in FORMATS:
        result, measured[output_format] = _eval(tiny_checkpoint, _data(FIXTURE, output_format),
                                                tmp_path / f"{output_format}.json", "--caption-key", "all_captions")
        assert "24 pairs over 12 images" in result.stdout, result.stdout
        measured[output_format].pop("valid-data")
    assert measured["files"] == measured["parquet"] == measured["webdataset"]
    _, first_only = _eval(tiny_checkpoint, _data(FIXTURE, "parquet"), tmp_path / "txt.json")  # caption-key txt
    assert first_only["captions"] == 12


@pytest.mark.slow
def test_a_bad_image_in_files_or_parquet_is_skipped_and_reported(tiny_checkpoint, tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    root = tmp_path / "copy"
    shutil.copytree(FIXTURE, root)
    (root / "files" / "00000" / "000003.jpg").write_bytes(b"not a jpeg")
    (root / "files" / "00001" / "000011.txt").unlink()
    (root / "files" / "00001" / "000011.json").unlink()  # an image without captions
    table = pq.read_table(root / "parquet" / "00000.parquet")
    images = table.column("jpg").to_pylist()
    images[2] = b"not a jpeg"
    pq.write_table(table.set_column(table.schema.get_field_index("jpg"), "jpg", pa.array(images, pa.binary())),
                   root / "parquet" / "00000.parquet")
    files, _ = _eval(tiny_checkpoint, _data(root, "files"), tmp_path / "f.json", "--caption-key", "all_captions")
    assert "20 pairs over 10 images" in files.stdout and "skipped 2" in files.stdout
    assert "000011.jpg: skipped: no caption under all_captions" in files.stderr + files.stdout
    parquet, metrics = _eval(tiny_checkpoint, _data(root, "parquet"), tmp_path / "p.json")
    told = parquet.stderr + parquet.stdout  # img2dataset keeps its failures as rows: each skipped with its reason
    assert "skipped: failed_to_resize" in told and told.count("skipped: failed_to_download (HTTP Error 404") == 2
    assert "12 pairs over 12 images from 2 parquet file(s); skipped 3" in told
    assert metrics["images"] == 11  # the undecodable one is reported at decoding and left out


@pytest.mark.slow
@pytest.mark.parametrize("output_format", list(FORMATS))
def test_train_and_index_from_each_format(tiny_checkpoint, tmp_path, output_format):
    from fastapi.testclient import TestClient
    from PIL import Image

    from retrieval.searcher import Searcher
    from service.app import create_app

    data = _data(FIXTURE, output_format)
    trained = run_script("train.py", "--config", "configs/demo/train.yaml", "--load-path", str(tiny_checkpoint),
                         "--train-data", data, "--valid-data", data, "--caption-key", "all_captions",
                         "--best-path", str(tmp_path / "best.pt"), "--last-path", str(tmp_path / "last.pt"),
                         "--log-dir", str(tmp_path / "logs"), "--batch-size", "4", "--num-workers", "2",
                         "--epochs", "1", "--warmup-steps", "1")
    assert trained.returncode == 0, trained.stderr[-3000:]
    assert (tmp_path / "best.pt").is_file() and "epoch 1/1" in trained.stdout
    indexed = run_script("index.py", "--model-path", str(tmp_path / "best.pt"), "--data", data,
                         "--out", str(tmp_path / "index"), "--caption-key", "all_captions")
    assert indexed.returncode == 0, indexed.stderr[-3000:]
    client = TestClient(create_app(Searcher(str(tmp_path / "index"))))
    found = client.get("/api/search/text", params={"q": "a red circle", "k": 12}).json()["results"]
    assert len(found) == 12 and all(len(result["captions"]) == 2 for result in found)
    thumbnail = client.get(found[0]["thumbnail"])
    assert thumbnail.status_code == 200 and Image.open(io.BytesIO(thumbnail.content)).size[0] > 0



def test_a_txt_with_several_lines_is_several_captions(tmp_path, tiny_dataset):
    """clip_benchmark's retrieval shards hold one caption per line of the .txt."""
    import tarfile

    from data.shard_table import read_shard_table

    images = sorted((tiny_dataset / "valid" / "images").iterdir())[:3]
    with tarfile.open(tmp_path / "0.tar", "w") as tar:
        for number, image in enumerate(images):
            for name, data in ((f"{number:04d}.png", image.read_bytes()),
                               (f"{number:04d}.txt", f"caption {number} a\ncaption {number} b\n\n".encode())):
                member = tarfile.TarInfo(name)
                member.size = len(data)
                tar.addfile(member, io.BytesIO(data))
    table = read_shard_table(str(tmp_path / "0.tar"), ["txt"])
    assert [record.captions for record in table.images] == [[f"caption {n} a", f"caption {n} b"] for n in range(3)]


@pytest.mark.slow
def test_the_tokenizer_step_and_the_recipe_take_img2dataset_output(tmp_path):
    from transformers import AutoTokenizer

    shards = _data(FIXTURE, "webdataset")
    tower = run_script("scripts/make_demo_text_tower.py", "--data", shards, "--caption-key", "all_captions",
                       "--out", str(tmp_path / "tower"), "--vocab-size", "300")
    assert tower.returncode == 0, tower.stderr[-2000:]
    tokenizer = AutoTokenizer.from_pretrained(str(tmp_path / "tower"))
    assert "Ġtriangle" in tokenizer.get_vocab()  # learned from the shards' captions, both of each image
    not_data = run_script("scripts/make_demo_text_tower.py", "--data", str(FIXTURE / "COMMANDS.txt"),
                          "--out", str(tmp_path / "x"))  # no data source at all
    assert not_data.returncode == 2 and "error: dataset folder" in not_data.stderr
    assert "Traceback" not in not_data.stderr

    out = tmp_path / "run"
    recipe = run_script("scripts/recipe.py", "--train-data", _data(FIXTURE, "parquet"), "--valid-data",
                        _data(FIXTURE, "files"), "--caption-key", "all_captions", "--out", str(out),
                        "--samples", "24", "--", "--batch-size", "4", "--num-workers", "0")
    assert recipe.returncode == 0, recipe.stderr[-3000:]
    recall = json.loads((out / "recall.json").read_text())
    assert recall["images"] == 12 and recall["captions"] == 24
