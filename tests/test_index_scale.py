"""index.py for big galleries: torchrun shares, webdataset shards, the memory-mapped index folder, IVF-PQ."""
import json
import logging

import numpy as np
import pytest
from fastapi.testclient import TestClient

from retrieval.gallery import Gallery
from retrieval.searcher import Searcher
from retrieval.vector_search import SearchSettings, VectorIndex, recall_against_exact
from scripts.make_shards import main as make_shards
from service.app import create_app
from tests.helpers import http_server, run_script, torchrun, truncated_png_bytes


def _index(tiny_checkpoint, data, out, *extra, port=None):
    args = ("index.py", "--model-path", str(tiny_checkpoint), "--data", str(data), "--out", str(out),
            "--batch-size", "3", *extra)
    result = run_script(*(torchrun(port, *args) if port else args))
    assert result.returncode == 0, result.stderr[-3000:]
    return result


def _contents(out):
    gallery = Gallery.load(str(out))
    items = [gallery.items[row] for row in range(len(gallery.items))]
    return gallery, items


@pytest.mark.parametrize("kind", ["shards"])  # a folder: test_appending_under_torchrun_... (also 2 vs 1 process)
@pytest.mark.slow
def test_two_processes_index_what_one_does_in_the_same_order(tiny_checkpoint, tiny_dataset, tmp_path, kind):
    data = tiny_dataset / "valid"
    if kind == "shards":  # 3 shards, 7 + 7 + 2 samples: the ranks get 1 and 2 shards; one sample undecodable
        import shutil

        folder = tmp_path / "valid"
        shutil.copytree(data, folder)
        (folder / "images" / "000009.png").write_bytes(truncated_png_bytes())
        assert make_shards(["--data", str(folder), "--out", str(tmp_path / "shards"), "--samples-per-shard", "7",
                            "--quiet"]) == 0
        data = str(tmp_path / "shards" / "{00000..00002}.tar")
        extra, shares = ("--caption-key", "captions"), "7, 8"
    else:
        extra, shares = (), "8, 8"
    one = _index(tiny_checkpoint, data, tmp_path / "one", *extra)
    two = _index(tiny_checkpoint, data, tmp_path / "two", *extra, port=29531 if kind == "folder" else 29532)
    assert "distributed: gloo, 2 process(es)" in two.stdout and f"embedded by each process: {shares}" in two.stdout
    (first, first_items), (second, second_items) = _contents(tmp_path / "one"), _contents(tmp_path / "two")
    assert first_items == second_items and len(first_items) == (16 if kind == "folder" else 15)
    assert all(len(item["captions"]) == 5 for item in first_items)
    np.testing.assert_allclose(first.image_features, second.image_features, atol=1e-5)
    np.testing.assert_allclose(first.text_features, second.text_features, atol=1e-5)
    assert np.array_equal(first.text_item, second.text_item) and first.text_item.tolist() == sorted(first.text_item)
    assert not (tmp_path / "two" / ".building").exists()
    if kind == "shards":  # items inside local shards: found by search, shown by the service
        assert first_items[0]["file"].endswith("00000.tar#000000000.png") and first_items[0]["name"] == "00000.tar/000000000"
        client = TestClient(create_app(Searcher(str(tmp_path / "two"))))
        response = client.get("/api/items/14/thumbnail")
        assert response.status_code == 200 and response.headers["content-type"] == "image/jpeg"
        found = client.get("/api/search/text", params={"q": first_items[3]["captions"][0], "k": 15}).json()
        assert {result["file"] for result in found["results"]} == {item["name"] for item in first_items}


def test_a_gallery_streamed_from_shards_over_http(tiny_checkpoint, tiny_dataset, tmp_path, monkeypatch):
    from retrieval.encoder import TorchEncoder
    from retrieval.gallery_build import build_index
    from retrieval.gallery_sources import GallerySource
    from utils.distributed import Distributed

    assert make_shards(["--data", str(tiny_dataset / "valid"), "--out", str(tmp_path / "shards"),
                        "--samples-per-shard", "10", "--quiet"]) == 0
    encoder = TorchEncoder(str(tiny_checkpoint))
    monkeypatch.chdir(tmp_path)  # a relative pattern: items record the shards' absolute paths
    local = build_index(GallerySource("shards/{00000..00001}.tar"), str(tmp_path / "local"), encoder, Distributed(),
                        batch_size=4)
    assert local.items[0]["file"] == f"{tmp_path}/shards/00000.tar#000000000.png"
    with http_server(tmp_path / "shards") as base:
        remote = build_index(GallerySource(base + "/{00000..00001}.tar"), str(tmp_path / "remote"), encoder,
                             Distributed(), batch_size=4)
    np.testing.assert_allclose(remote.image_features, local.image_features, atol=1e-6)
    assert remote.items[15]["file"] == base + "/00001.tar#000010005.png" and remote.items[15]["captions"] == \
        local.items[15]["captions"] and len(local.items[15]["captions"]) == 1
    client = TestClient(create_app(Searcher(str(tmp_path / "remote"))))
    response = client.get("/api/items/3/thumbnail")  # the server is gone; nothing is fetched for a thumbnail
    assert response.status_code == 404 and "no longer available" in response.text
    assert client.get("/api/search/text", params={"q": "a red circle"}).status_code == 200


@pytest.mark.slow
def test_an_interrupted_build_leaves_the_index_usable_and_is_cleaned_up(tiny_checkpoint, tiny_dataset, tmp_path):
    out = tmp_path / "idx"
    (out / ".building" / "rank-00000").mkdir(parents=True)  # what a run killed while embedding leaves
    (out / ".building" / "rank-00000" / "image.f32").write_bytes(b"\0" * 128)
    (out / ".tmp-abc.npy").write_bytes(b"half")  # ... and one killed while merging
    _index(tiny_checkpoint, tiny_dataset / "valid", out)
    gallery, items = _contents(out)
    assert len(items) == 16 and sorted(path.name for path in out.iterdir()) == [
        "image_features.npy", "items.arrow", "meta.json", "text_features.npy", "text_item.npy"]
    assert isinstance(gallery.image_features, np.memmap)  # opened without reading the embeddings

    # A merge killed after replacing some files: they hold the recorded rows first, then the new ones.
    longer = np.concatenate([np.asarray(gallery.image_features), np.ones((3, 32), np.float32)])
    np.save(out / "image_features.npy", longer)
    reopened, reopened_items = _contents(out)
    assert reopened_items == items and np.array_equal(reopened.image_features, gallery.image_features)


@pytest.mark.slow
def test_appending_under_torchrun_adds_only_new_images_spread_over_both_processes(tiny_checkpoint, tiny_dataset,
                                                                                   tmp_path):
    import shutil

    data = tmp_path / "valid"
    shutil.copytree(tiny_dataset / "valid", data)
    full = (data / "captions.csv").read_text().splitlines()
    (data / "captions.csv").write_text("\n".join(full[:41]) + "\n")  # the first 8 images' 40 captions
    _index(tiny_checkpoint, data, tmp_path / "grown")
    (data / "captions.csv").write_text("\n".join(full) + "\n")
    grown = _index(tiny_checkpoint, data, tmp_path / "grown", port=29533)
    assert "images embedded by each process: 4, 4" in grown.stdout and "added 8 image(s); 16 images" in grown.stdout
    assert "(8 already present)" in grown.stdout
    _index(tiny_checkpoint, data, tmp_path / "once")
    (appended, appended_items), (once, once_items) = _contents(tmp_path / "grown"), _contents(tmp_path / "once")
    assert appended_items == once_items
    np.testing.assert_allclose(appended.image_features, once.image_features, atol=1e-5)
    np.testing.assert_allclose(appended.text_features, once.text_features, atol=1e-5)
    assert np.array_equal(appended.text_item, once.text_item)  # the new captions point past the old images
    again = _index(tiny_checkpoint, data, tmp_path / "grown")
    assert "added 0 image(s); 16 images" in again.stdout and "(16 already present)" in again.stdout


@pytest.mark.slow
def test_ivfpq_is_built_once_by_index_py_and_used_by_the_service(tiny_checkpoint, tiny_dataset, tmp_path, caplog):
    out = tmp_path / "idx"
    settings = ("--search", "faiss-ivfpq", "--ivfpq-m", "8", "--ivfpq-bits", "2", "--ivf-nlist", "1")
    result = _index(tiny_checkpoint, tiny_dataset / "valid", out, *settings)
    assert "faiss-ivfpq: recall@10 against exact search" in result.stdout and (out / "vectors.faiss").is_file()
    meta = json.loads((out / "meta.json").read_text())["vector-index"]
    assert meta == {"kind": "faiss-ivfpq", "ivfpq-m": 8, "ivfpq-bits": 2, "ivf-nlist": 1, "images": 16,
                    "recall@10": meta["recall@10"]} and 0 < meta["recall@10"] <= 1
    with caplog.at_level(logging.INFO):
        stored = Searcher(str(out), settings=SearchSettings("faiss-ivfpq", ivfpq_m=8, ivfpq_bits=2, ivf_nlist=1))
        assert "building one in memory" not in caplog.text
        assert stored.vector_index.faiss_index.code_size == 2  # 8 codes of 2 bits: 2 bytes per image
        other = Searcher(str(out), settings=SearchSettings("faiss-ivfpq", ivfpq_m=4, ivfpq_bits=2, ivf_nlist=1))  # what index.py built wins
        assert "as index.py built it (ivfpq-m 8" in caplog.text and other.vector_index.faiss_index.code_size == 2
        built_now = Searcher(str(out), settings=SearchSettings("faiss-hnsw"))
        assert "no stored faiss-hnsw index; building one in memory" in caplog.text
        assert built_now.vector_index.faiss_index.ntotal == 16
    query = stored.gallery.image_features[5]
    assert sorted(stored.vector_index.search(query[None], 16)[1][0].tolist()) == list(range(16))  # all reachable
    again = _index(tiny_checkpoint, tiny_dataset / "valid", out)  # nothing new: the stored index still fits
    assert "added 0 image(s)" in again.stdout and (out / "vectors.faiss").is_file()
    assert json.loads((out / "meta.json").read_text())["vector-index"]["images"] == 16

    bad = run_script("index.py", "--model-path", str(tiny_checkpoint), "--data", str(tiny_dataset / "valid"),
                     "--out", str(tmp_path / "bad"), "--search", "faiss-ivfpq", "--ivfpq-m", "5")
    assert bad.returncode == 2 and "ivfpq-m 5 must divide the embedding size 32" in bad.stderr
    assert "Traceback" not in bad.stderr


@pytest.mark.slow
def test_ivfpq_codes_are_m_bytes_and_find_most_exact_neighbours():
    generator = np.random.default_rng(0)
    centres = generator.normal(size=(50, 32))
    features = (centres[generator.integers(0, 50, 10000)] + 0.3 * generator.normal(size=(10000, 32))).astype(np.float32)
    features /= np.linalg.norm(features, axis=1, keepdims=True)
    queries = features[:200]
    def recall(m, rerank):
        index = VectorIndex(features, "faiss-ivfpq", ivf_nlist=16, ivf_nprobe=16, ivfpq_m=m, ivfpq_rerank=rerank)
        assert index.faiss_index.code_size == m and index.build["ivf-nlist"] == 16  # m bytes per vector
        return recall_against_exact(index, queries), index

    fine, rough = recall(32, 0)[0], recall(4, 0)[0]
    assert fine > 0.8 and rough < fine  # more bytes per vector, closer to exact
    reranked, index = recall(4, 10)
    assert reranked > rough + 0.3  # the 40 best by code, re-scored with the stored vectors
    scores, rows = index.search(queries[:5], 10)
    np.testing.assert_allclose(scores, np.take_along_axis(queries[:5] @ features.T, rows, 1), rtol=1e-5)
    assert (np.diff(scores, axis=1) <= 0).all()
    with pytest.raises(Exception, match="needs at least 256 images"):
        VectorIndex(features[:100], "faiss-ivfpq", ivfpq_m=16, ivfpq_bits=8)


def test_thumbnails_of_shard_images_with_upper_case_extensions(tiny_checkpoint, tiny_dataset, tmp_path):
    import io
    import tarfile

    from PIL import Image

    from retrieval.encoder import TorchEncoder
    from retrieval.gallery_build import build_index
    from retrieval.gallery_sources import GallerySource
    from utils.distributed import Distributed

    shard = tmp_path / "camera.tar"
    with tarfile.open(shard, "w") as tar:  # a camera's names: webdataset lower-cases the suffix it groups by
        for i, path in enumerate(sorted((tiny_dataset / "valid" / "images").iterdir())[:3]):
            jpeg = io.BytesIO()
            Image.open(path).convert("RGB").save(jpeg, format="JPEG")
            for name, data in ((f"DCIM/IMG_{i:04d}.JPG", jpeg.getvalue()), (f"DCIM/IMG_{i:04d}.Txt", b"a photo")):
                member = tarfile.TarInfo(name)
                member.size = len(data)
                tar.addfile(member, io.BytesIO(data))
    gallery = build_index(GallerySource(str(shard)), str(tmp_path / "idx"), TorchEncoder(str(tiny_checkpoint)),
                          Distributed(), batch_size=4)
    assert [item["file"] for item in gallery.items] == [f"{shard}#DCIM/IMG_{i:04d}.JPG" for i in range(3)]
    assert gallery.items[0]["captions"] == ["a photo"]
    client = TestClient(create_app(Searcher(str(tmp_path / "idx"))))
    for item in range(3):
        response = client.get(f"/api/items/{item}/thumbnail")
        assert response.status_code == 200 and response.headers["content-type"] == "image/jpeg"
