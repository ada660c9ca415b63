"""clip_benchmark's real command line on a checkpoint of ours (scripts/clip_benchmark_cli.py), against eval.py on
the same data: clip_benchmark's retrieval webdataset layout (one caption per line of each .txt)."""
import io
import json
import tarfile

import pytest

from data.caption_table import read_caption_table
from tests.helpers import run_script


def _clip_benchmark_retrieval_set(folder, root):
    """``folder``'s images and captions in clip_benchmark's wds layout: test/0.tar, nshards.txt, dataset_type.txt."""
    (root / "test").mkdir(parents=True)
    with tarfile.open(root / "test" / "0.tar", "w") as tar:
        for number, record in enumerate(read_caption_table(str(folder)).images):
            with open(record.path, "rb") as handle:
                image = handle.read()
            captions = "\n".join(record.captions).encode()
            for name, data in ((f"s{number:04d}.png", image), (f"s{number:04d}.txt", captions)):
                member = tarfile.TarInfo(name)
                member.size = len(data)
                tar.addfile(member, io.BytesIO(data))
    (root / "test" / "nshards.txt").write_text("1\n")
    (root / "dataset_type.txt").write_text("retrieval\n")


@pytest.mark.slow
def test_clip_benchmark_command_line_gives_eval_py_numbers_with_no_amp(tiny_checkpoint, tiny_dataset, tmp_path):
    root = tmp_path / "tiny"
    _clip_benchmark_retrieval_set(tiny_dataset / "valid", root)
    result = run_script("-m", "scripts.clip_benchmark_cli", "eval", "--model_type", "contrastive", "--model",
                        "contrastive", "--pretrained", str(tiny_checkpoint), "--dataset", "wds/tiny",
                        "--dataset_root", str(root), "--task", "zeroshot_retrieval", "--no_amp", "--batch_size", "8",
                        "--num_workers", "0", "--recall_k", "1", "5", "10", "--output", str(tmp_path / "theirs.json"))
    assert result.returncode == 0, result.stderr[-3000:]
    theirs = json.loads((tmp_path / "theirs.json").read_text())["metrics"]
    ours = run_script("eval.py", "--config", "configs/demo/eval.yaml", "--model-path", str(tiny_checkpoint),
                      "--valid-data", str(root / "test" / "0.tar"), "--output", str(tmp_path / "ours.json"))
    assert ours.returncode == 0 and "80 pairs over 16 images" in ours.stdout, ours.stdout + ours.stderr
    ours = json.loads((tmp_path / "ours.json").read_text())
    for k in (1, 5, 10):
        # theirs are float32; one rank moved changes a recall by 1/80 or 1/16
        assert theirs[f"image_retrieval_recall@{k}"] == pytest.approx(ours[f"t2i_r{k}"], abs=1e-6)
        assert theirs[f"text_retrieval_recall@{k}"] == pytest.approx(ours[f"i2t_r{k}"], abs=1e-6)

    missing = run_script("-m", "scripts.clip_benchmark_cli", "eval", "--model_type", "contrastive", "--model",
                         "contrastive", "--pretrained", str(tmp_path / "nope.pt"), "--dataset", "wds/tiny",
                         "--dataset_root", str(root), "--task", "zeroshot_retrieval", "--output",
                         str(tmp_path / "x.json"))
    assert missing.returncode == 2 and missing.stderr.startswith("error:") and "Traceback" not in missing.stderr
