"""Chinese-CLIP's dataset split (*_imgs.tsv + *_texts.jsonl) as data for train.py, eval.py and index.py, the
converter both ways, and eval.py's prediction files scored by Chinese-CLIP's own evaluation scripts (cn_clip 1.6.0)."""
import base64
import csv
import io
import json

import pytest

from data.sources import open_source
from tests.helpers import png_bytes, run_script


def _split(tiny_dataset, out):
    result = run_script("scripts/chinese_clip_data.py", "from-folder", "--data", str(tiny_dataset / "valid"),
                        "--out", str(out), "--split", "valid")
    assert result.returncode == 0, result.stderr
    return out / "valid"


def test_a_split_reads_as_its_folder_and_converts_back(tiny_dataset, tmp_path):
    prefix = _split(tiny_dataset, tmp_path / "cn")
    folder = open_source(str(tiny_dataset / "valid")).validation_table(False)
    split = open_source(str(prefix)).validation_table(False)
    assert [r.captions for r in split.images] == [r.captions for r in folder.images]
    assert type(open_source(str(prefix) + "_imgs.tsv")) is type(open_source(str(prefix)))  # either file names it
    back = run_script("scripts/chinese_clip_data.py", "to-folder", "--split", str(prefix), "--out",
                      str(tmp_path / "back"))
    assert back.returncode == 0, back.stderr
    again = open_source(str(tmp_path / "back")).validation_table(False)
    assert [r.captions for r in again.images] == [r.captions for r in folder.images]
    assert [open(r.path, "rb").read() for r in again.images] == [open(r.path, "rb").read() for r in folder.images]
    refused = run_script("scripts/chinese_clip_data.py", "to-folder", "--split", str(prefix), "--out",
                         str(tmp_path / "back"))
    assert refused.returncode == 2 and "--overwrite" in refused.stderr


def test_bad_lines_are_reported_and_string_ids_kept(tmp_path):
    from PIL import Image

    image = base64.urlsafe_b64encode(png_bytes(Image.new("RGB", (8, 8), (200, 10, 10)))).decode()
    (tmp_path / "x_imgs.tsv").write_text(
        f"img-a\t{image}\n7\t{image}\nno tab here\n7\t{image}\n8\t!!not base64!!\n\n007\t{image}\n"
        f"IMG-A\t{image}\n", encoding="utf-8")
    lines = [{"text_id": "t-1", "text": "一个红色的方块", "image_ids": ["img-a", 7]}, "not json",
             {"text_id": 2, "image_ids": [7]}, {"text_id": 3, "text": "红色", "image_ids": [99, 7]},
             {"text_id": 4, "text": "没有图片", "image_ids": []}, {"text_id": "t-1", "text": "again", "image_ids": [7]},
             {"text_id": 5, "text": "零零七", "image_ids": ["007", "IMG-A"]}]
    (tmp_path / "x_texts.jsonl").write_text("\n".join(json.dumps(line, ensure_ascii=False) if isinstance(line, dict)
                                                      else line for line in lines) + "\n", encoding="utf-8")
    source = open_source(str(tmp_path / "x"))
    table = source.validation_table(False)
    assert [(r.filename, r.captions) for r in table.images] == [
        ("img-a", ["一个红色的方块"]), ("7", ["一个红色的方块", "红色"]), ("007", ["零零七"]), ("IMG-A", ["零零七"])]
    told = "\n".join(table.skipped)
    for words in ("x_imgs.tsv:3: skipped: not 'image_id<TAB>base64'", "x_imgs.tsv:4: skipped: image_id 7 again",
                  "x_imgs.tsv:5: skipped: the image is not base64", "x_texts.jsonl:2: skipped: not a JSON object",
                  "x_texts.jsonl:3: skipped: needs text_id and text", "x_texts.jsonl:4: image_ids not in",
                  "x_texts.jsonl:6: skipped: text_id t-1 again"):
        assert words in told, words
    from utils.errors import UserError

    with pytest.raises(UserError, match="problem"):
        source.validation_table(True)
    result = run_script("scripts/chinese_clip_data.py", "to-folder", "--split", str(tmp_path / "x"), "--out",
                        str(tmp_path / "folder"))
    assert result.returncode == 0, result.stderr
    with open(tmp_path / "folder" / "captions.csv", encoding="utf-8") as handle:
        rows = [(row["filename"], row["caption"]) for row in csv.DictReader(handle)]
    assert rows == [("img-a.png", "一个红色的方块"), ("7.png", "一个红色的方块"), ("7.png", "红色"),
                    ("007.png", "零零七")]  # "007" stays itself; IMG-A would share img-a's file on some disks
    assert "image IMG-A: skipped: its file name differs from another only in case" in result.stderr


@pytest.mark.slow
def test_eval_py_scores_a_split_as_chinese_clip_does(tiny_checkpoint, tiny_dataset, tmp_path):
    prefix = _split(tiny_dataset, tmp_path / "cn")
    evaluated = run_script("eval.py", "--config", "configs/demo/eval.yaml", "--model-path", str(tiny_checkpoint),
                           "--valid-data", str(prefix), "--predictions", str(tmp_path / "pred"),
                           "--output", str(tmp_path / "ours.json"))
    assert evaluated.returncode == 0, evaluated.stderr[-3000:]
    ours = json.loads((tmp_path / "ours.json").read_text())
    folder = run_script("eval.py", "--config", "configs/demo/eval.yaml", "--model-path", str(tiny_checkpoint),
                        "--valid-data", str(tiny_dataset / "valid"), "--output", str(tmp_path / "folder.json"))
    assert folder.returncode == 0
    plain = json.loads((tmp_path / "folder.json").read_text())
    assert {k: v for k, v in ours.items() if "_r" in k and k != "chinese-clip"} == {
        k: v for k, v in plain.items() if "_r" in k}  # the split is the folder, recall for recall
    assert "Chinese-CLIP score (×100)" in evaluated.stdout and "would refuse" not in evaluated.stderr
    refused = run_script("eval.py", "--config", "configs/demo/eval.yaml", "--model-path", str(tiny_checkpoint),
                         "--valid-data", str(tiny_dataset / "valid"), "--predictions", str(tmp_path / "no"))
    assert refused.returncode == 2 and "is not a Chinese-CLIP split" in refused.stderr
    written = (tmp_path / "pred" / "valid_predictions.jsonl").read_text()
    predictions = [json.loads(line) for line in written.splitlines()]
    assert len(predictions) == len({line for line in (prefix.parent / "valid_texts.jsonl").read_text().splitlines()})
    assert all(len(p["image_ids"]) == 10 == len(set(p["image_ids"])) for p in predictions)

    texts = str(prefix.parent / "valid_texts.jsonl")  # Chinese-CLIP's own scripts, on our prediction files
    theirs = run_script("-m", "cn_clip.eval.evaluation", texts, str(tmp_path / "pred" / "valid_predictions.jsonl"),
                        str(tmp_path / "t2i.json"))
    assert theirs.returncode == 0, theirs.stderr[-2000:]
    assert run_script("-m", "cn_clip.eval.transform_ir_annotation_to_tr", "--input", texts).returncode == 0
    theirs_tr = run_script("-m", "cn_clip.eval.evaluation_tr", texts.replace(".jsonl", ".tr.jsonl"),
                           str(tmp_path / "pred" / "valid_predictions_tr.jsonl"), str(tmp_path / "i2t.json"))
    assert theirs_tr.returncode == 0, theirs_tr.stderr[-2000:]
    for direction, path in (("t2i", "t2i.json"), ("i2t", "i2t.json")):
        score = json.loads((tmp_path / path).read_text())["scoreJson"]
        for k in (1, 5, 10):
            assert ours["chinese-clip"][f"{direction}_r{k}"] == pytest.approx(score[f"r{k}"], abs=1e-9)
    assert ours["chinese-clip"]["mr"] == pytest.approx(sum(ours["chinese-clip"][f"{d}_r{k}"] for d in ("t2i", "i2t")
                                                           for k in (1, 5, 10)) / 6)


@pytest.mark.slow
def test_train_and_index_from_a_split(tiny_checkpoint, tiny_dataset, tmp_path):
    from fastapi.testclient import TestClient
    from PIL import Image

    from retrieval.searcher import Searcher
    from service.app import create_app

    prefix = _split(tiny_dataset, tmp_path / "cn")
    trained = run_script("train.py", "--config", "configs/demo/train.yaml", "--load-path", str(tiny_checkpoint),
                         "--train-data", str(prefix), "--valid-data", str(prefix), "--best-path",
                         str(tmp_path / "best.pt"), "--last-path", str(tmp_path / "last.pt"), "--log-dir",
                         str(tmp_path / "logs"), "--batch-size", "4", "--num-workers", "2", "--epochs", "1")
    assert trained.returncode == 0, trained.stderr[-3000:]
    indexed = run_script("index.py", "--model-path", str(tmp_path / "best.pt"), "--data", str(prefix), "--out",
                         str(tmp_path / "index"))
    assert indexed.returncode == 0, indexed.stderr[-3000:]
    client = TestClient(create_app(Searcher(str(tmp_path / "index"))))
    found = client.get("/api/search/text", params={"q": "a red circle", "k": 3}).json()["results"]
    assert len(found) == 3 and found[0]["captions"]
    thumbnail = client.get(found[0]["thumbnail"])
    assert thumbnail.status_code == 200 and Image.open(io.BytesIO(thumbnail.content)).size[0] > 0


def test_chinese_clips_lmdb_built_by_its_own_script_reads_as_its_split(tiny_dataset, tmp_path):
    import pickle

    import lmdb

    prefix = _split(tiny_dataset, tmp_path / "cn")
    built = run_script("-m", "cn_clip.preprocess.build_lmdb_dataset", "--data_dir", str(tmp_path / "cn"),
                       "--splits", "valid")
    assert built.returncode == 0, built.stderr[-2000:]
    lmdb_split = tmp_path / "cn" / "lmdb" / "valid"
    from_lmdb, from_files = open_source(str(lmdb_split)), open_source(str(prefix))
    assert type(from_lmdb).__name__ == "ChineseClipLmdbSource"
    assert from_lmdb.split().texts == from_files.split().texts and from_lmdb.split().images == from_files.split().images

    ran = tmp_path / "ran"

    class Payload:  # what an untrusted pickle could carry: a call at load time
        def __reduce__(self):
            return (exec, (f"import pathlib; pathlib.Path({str(ran)!r}).touch()",))

    with lmdb.open(str(lmdb_split / "pairs"), map_size=2 ** 24) as env, env.begin(write=True) as txn:
        txn.put(b"80", pickle.dumps(Payload()))
        txn.put(b"81", pickle.dumps(("0", 1, ["not", "text"])))
    split = open_source(str(lmdb_split)).split()
    assert len(split.texts) == 80 and not ran.exists()
    told = "\n".join(split.problems)
    assert "builtins.exec: a pairs record may hold only ids and text" in told
    assert "not (image_id, text_id, text)" in told
