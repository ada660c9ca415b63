"""index.py / search.py / classify.py / export.py through the real scripts, and their numerics."""
import json
import shutil

import numpy as np
import pytest
import torch
from PIL import Image

from retrieval.encoder import OnnxEncoder, TorchEncoder
from retrieval.item_table import ItemTable
from retrieval.vector_search import VectorIndex, recall_against_exact
from tests.helpers import run_script


@pytest.mark.slow
def test_index_a_plain_folder_then_add_only_new_images(tiny_checkpoint, tiny_dataset, tmp_path):
    folder = tmp_path / "photos"
    (folder / "sub").mkdir(parents=True)
    for name in ("000000.png", "000001.png"):
        shutil.copy(tiny_dataset / "valid" / "images" / name, folder / name)
    (folder / "sub" / "broken.jpg").write_bytes(b"not a jpeg")
    out = tmp_path / "index"
    first = run_script("index.py", "--model-path", str(tiny_checkpoint), "--data", str(folder), "--out", str(out))
    assert first.returncode == 0, first.stderr
    assert "added 2 image(s)" in first.stdout and "broken.jpg: not an image" in first.stderr
    shutil.copy(tiny_dataset / "valid" / "images" / "000002.png", folder / "sub" / "new.png")
    second = run_script("index.py", "--model-path", str(tiny_checkpoint), "--data", str(folder), "--out", str(out))
    assert second.returncode == 0 and "added 1 image(s); 3 images" in second.stdout
    items = ItemTable.open(str(out / "items.arrow"))
    assert [items[row]["name"] for row in range(len(items))] == ["000000.png", "000001.png", "sub/new.png"]

    found = run_script("search.py", "--index", str(out), "--image", str(folder / "000001.png"), "--k", "2",
                       "--json", "true")
    assert found.returncode == 0, found.stderr
    results = json.loads(found.stdout)["results"]
    assert results[0]["name"] == "000001.png" and results[0]["score"] > 0.999 and len(results) == 2


@pytest.mark.slow
def test_index_refuses_to_mix_models(tiny_checkpoint, tiny_dataset, tmp_path):
    out = tmp_path / "index"
    assert run_script("index.py", "--model-path", str(tiny_checkpoint), "--data", str(tiny_dataset / "valid"),
                      "--out", str(out)).returncode == 0
    other = tmp_path / "other.pt"
    payload = torch.load(tiny_checkpoint, weights_only=True)
    payload["state_dict"]["logit_scale"] = payload["state_dict"]["logit_scale"] + 1
    torch.save(payload, other)
    mixed = run_script("index.py", "--model-path", str(other), "--data", str(tiny_dataset / "valid"), "--out", str(out))
    assert mixed.returncode == 2 and "another model" in mixed.stderr


def test_faiss_index_reports_recall_against_exact():
    generator = np.random.default_rng(0)
    features = generator.normal(size=(3000, 32)).astype(np.float32)
    features /= np.linalg.norm(features, axis=1, keepdims=True)
    queries = features[:100] + 0.1 * generator.normal(size=(100, 32)).astype(np.float32)
    assert recall_against_exact(VectorIndex(features, "faiss-flat"), queries) == 1.0
    assert recall_against_exact(VectorIndex(features, "faiss-hnsw"), queries) > 0.9
    coarse = recall_against_exact(VectorIndex(features, "faiss-ivf", ivf_nlist=32, ivf_nprobe=2), queries)
    assert coarse < recall_against_exact(VectorIndex(features, "faiss-ivf", ivf_nlist=32, ivf_nprobe=32), queries) == 1.0
    exact = VectorIndex(features)
    scores, rows = exact.search(queries[:3], 5)
    brute = queries[:3] @ features.T
    assert np.array_equal(rows, np.argsort(-brute, axis=1)[:, :5])


def test_faiss_lines_per_codebook_become_one_line_of_ours(capfd, caplog):
    import logging

    features = np.random.default_rng(0).standard_normal((600, 64)).astype(np.float32)
    with caplog.at_level(logging.INFO):
        VectorIndex(features, "faiss-ivfpq", ivfpq_m=8, ivf_nlist=4)
    err = capfd.readouterr().err
    assert "WARNING clustering" not in err
    assert caplog.text.count("faiss: 8 codebook(s) of 256 centroids trained on 600 points (FAISS suggests 9984 or "
                             "more)") == 1


@pytest.mark.slow
def test_zero_shot_equals_clip_benchmark(tiny_checkpoint, tiny_dataset, tmp_path):
    from clip_benchmark.metrics.zeroshot_classification import run_classification, zero_shot_classifier

    from models import load_checkpoint
    from retrieval.image_files import image_folder
    from retrieval.zero_shot import score_folder

    root = tmp_path / "folder"
    for index in range(12):
        label = ("circles", "squares", "crosses")[index % 3]
        (root / label).mkdir(parents=True, exist_ok=True)
        shutil.copy(tiny_dataset / "valid" / "images" / f"{index:06d}.png", root / label / f"{index}.png")
    classes, samples = image_folder(str(root))
    templates = ["a picture of {}.", "{} in the center", "there are {}"]
    encoder = TorchEncoder(str(tiny_checkpoint))
    targets, probabilities, _ = score_folder(encoder, classes, templates, samples, batch_size=5)

    model, preprocess, tokenizer = load_checkpoint(str(tiny_checkpoint))
    classifier = zero_shot_classifier(model, tokenizer, classes, [t.replace("{}", "{c}") for t in templates], "cpu",
                                      amp=False)
    images = torch.stack([preprocess(Image.open(path)) for path, _ in samples])
    loader = [(images[i:i + 5], torch.tensor([t for _, t in samples[i:i + 5]])) for i in range(0, len(samples), 5)]
    logits, their_targets = run_classification(model, classifier, loader, "cpu", amp=False)
    assert np.array_equal(their_targets.numpy(), targets)
    assert np.array_equal(logits.argmax(1).numpy(), probabilities.argmax(1))
    theirs = torch.softmax(logits / 100.0 * encoder.logit_scale, dim=1).numpy()
    assert np.allclose(theirs, probabilities, atol=1e-4)


@pytest.mark.slow
def test_classify_script_writes_report_and_confusion_matrix(tiny_checkpoint, tiny_dataset, tmp_path):
    root = tmp_path / "folder"
    for index in range(6):
        label = ("red", "blue")[index % 2]
        (root / label).mkdir(parents=True, exist_ok=True)
        shutil.copy(tiny_dataset / "valid" / "images" / f"{index:06d}.png", root / label / f"{index}.png")
    result = run_script("classify.py", "--model-path", str(tiny_checkpoint), "--data", str(root), "--output",
                        str(tmp_path / "report"), "--json", "true")
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    assert summary["images"] == 6 and 0 <= summary["accuracy"] <= 1 and set(summary["per-class"]) == {"red", "blue"}
    assert (tmp_path / "report" / "confusion.png").stat().st_size > 1000
    one = run_script("classify.py", "--model-path", str(tiny_checkpoint), "--image",
                     str(tiny_dataset / "valid" / "images" / "000000.png"), "--labels", "red,blue,green", "--json", "true")
    labels = json.loads(one.stdout)["labels"]
    assert len(labels) == 3 and abs(sum(l["probability"] for l in labels) - 1) < 1e-5
    bad = run_script("classify.py", "--model-path", str(tiny_checkpoint), "--image", str(tmp_path), "--labels", "a,b")
    assert bad.returncode == 2 and "Traceback" not in bad.stderr


@pytest.mark.slow
def test_onnx_export_matches_pytorch(tiny_checkpoint, tmp_path):
    out = tmp_path / "onnx"
    result = run_script("export.py", "--model-path", str(tiny_checkpoint), "--out", str(out))
    assert result.returncode == 0, result.stderr
    report = json.loads((out / "export.json").read_text())
    assert report["image-max-abs-diff"] <= 1e-4 and report["text-max-abs-diff"] <= 1e-4
    torch_encoder, onnx_encoder = TorchEncoder(str(tiny_checkpoint)), OnnxEncoder(str(tiny_checkpoint), str(out))
    texts = ["a red circle", "a big blue square left of a small green cross", "x"]  # batch and length differ
    assert np.abs(torch_encoder.encode_texts(texts) - onnx_encoder.encode_texts(texts)).max() <= 1e-4
    images = [Image.new("RGB", (40, 20), (200, 30, 30)), Image.new("RGB", (32, 32), (30, 30, 200))]
    assert np.abs(torch_encoder.encode_images(images) - onnx_encoder.encode_images(images)).max() <= 1e-4
    again = run_script("export.py", "--model-path", str(tiny_checkpoint), "--out", str(out))
    assert again.returncode == 2 and "--overwrite true" in again.stderr


@pytest.mark.slow
def test_classify_with_empty_class_folders_is_a_clear_error(tiny_checkpoint, tmp_path):
    (tmp_path / "d" / "cat").mkdir(parents=True)
    (tmp_path / "d" / "dog").mkdir()
    result = run_script("classify.py", "--model-path", str(tiny_checkpoint), "--data", str(tmp_path / "d"))
    assert result.returncode == 2 and "holds no images" in result.stderr and "Traceback" not in result.stderr


@pytest.mark.slow
def test_index_out_that_is_a_file_fails_before_embedding(tiny_checkpoint, tiny_dataset, tmp_path):
    (tmp_path / "out").write_text("x")
    result = run_script("index.py", "--model-path", str(tiny_checkpoint), "--data", str(tiny_dataset / "valid"),
                        "--out", str(tmp_path / "out"))
    assert result.returncode == 2 and "is a file" in result.stderr and "Traceback" not in result.stderr
