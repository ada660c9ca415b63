"""The web API on a tiny model and index: results, hostile input, concurrency."""
import io
import os
from concurrent.futures import ThreadPoolExecutor

import pytest
from fastapi.testclient import TestClient
from PIL import Image

from retrieval.searcher import Searcher
from service.app import create_app
from tests.helpers import png_bytes, serve_in_thread, truncated_png_bytes

MAX_UPLOAD = 200_000


@pytest.fixture(scope="module")
def client(tiny_index):
    app = create_app(Searcher(str(tiny_index)), max_upload_bytes=MAX_UPLOAD, max_k=20, thumbnail_size=48)
    return TestClient(app)


def test_health_and_text_search(client):
    health = client.get("/api/health").json()
    assert health["status"] == "ok" and health["items"] == 16 and health["captions"] == 80
    body = client.get("/api/search/text", params={"q": "a big red circle", "k": 5}).json()
    results = body["results"]
    assert len(results) == 5
    assert [r["score"] for r in results] == sorted((r["score"] for r in results), reverse=True)
    assert set(results[0]) == {"id", "score", "file", "captions", "thumbnail"}
    assert not os.path.isabs(results[0]["file"])  # no server paths leak
    thumbnail = client.get(results[0]["thumbnail"])
    assert thumbnail.status_code == 200 and thumbnail.headers["content-type"] == "image/jpeg"
    assert max(Image.open(io.BytesIO(thumbnail.content)).size) <= 48


def test_image_search_finds_the_same_image_first(client, tiny_dataset):
    data = (tiny_dataset / "valid" / "images" / "000003.png").read_bytes()
    results = client.post("/api/search/image", files={"image": ("q.png", data, "image/png")},
                          data={"k": "3"}).json()["results"]
    assert results[0]["file"] == "000003.png" and results[0]["score"] > 0.999


def test_classify_returns_sorted_probabilities(client, tiny_dataset):
    data = (tiny_dataset / "valid" / "images" / "000001.png").read_bytes()
    response = client.post("/api/classify", files={"image": ("q.png", data, "image/png")},
                           data={"labels": "red, blue ,green", "templates": "a picture of a {}.\n{} shapes"})
    labels = response.json()["labels"]
    assert {l["label"] for l in labels} == {"red", "blue", "green"}
    assert abs(sum(l["probability"] for l in labels) - 1) < 1e-5
    assert labels[0]["probability"] >= labels[-1]["probability"]


@pytest.mark.parametrize("method, url, kwargs, status, words", [
    ("post", "/api/search/image", {"files": {"image": ("x.txt", b"hello", "text/plain")}}, 400, "not a usable image"),
    ("post", "/api/search/image", {"files": {"image": ("t.png", truncated_png_bytes(), "image/png")}}, 400,
     "cannot decode"),
    ("post", "/api/search/image", {"files": {"image": ("b.png", png_bytes(Image.new("1", (10_000, 9_000))),
                                                        "image/png")}}, 400, "too large"),
    ("post", "/api/search/image", {"files": {"image": ("e.png", b"", "image/png")}}, 400, "empty upload"),
    ("post", "/api/search/image", {"files": {"image": ("big.bin", b"\0" * (MAX_UPLOAD + 100_000), "image/png")}},
     413, "larger than"),
    ("post", "/api/search/image", {}, 422, "image"),
    ("post", "/api/classify", {"files": {"image": ("x.png", png_bytes(Image.new("RGB", (8, 8))), "image/png")}},
     422, "labels"),
    ("post", "/api/classify", {"files": {"image": ("x.png", png_bytes(Image.new("RGB", (8, 8))), "image/png")},
                               "data": {"labels": "cat"}}, 400, "at least two"),
    ("post", "/api/classify", {"files": {"image": ("x.png", png_bytes(Image.new("RGB", (8, 8))), "image/png")},
                               "data": {"labels": "cat,dog", "templates": "no placeholder"}}, 400, "{}"),
    ("get", "/api/search/text?q=red&k=0", {}, 422, "greater than or equal"),
    ("get", "/api/search/text?q=red&k=21", {}, 422, "less than or equal"),
    ("get", "/api/search/text?q=red&k=abc", {}, 422, "integer"),
    ("get", "/api/search/text?q=%20%20", {}, 400, "empty query"),
    ("get", "/api/search/text", {}, 422, "q"),
    ("get", "/api/items/16/thumbnail", {}, 404, "no item 16"),
    ("get", "/api/items/-1/thumbnail", {}, 422, "greater than or equal"),
    ("get", "/api/items/..%2F..%2Fetc%2Fpasswd/thumbnail", {}, 404, "Not Found"),
    ("get", "/api/items/%2Fetc%2Fpasswd/thumbnail", {}, 404, "Not Found"),
])
def test_hostile_input_gets_a_4xx_with_a_message(client, method, url, kwargs, status, words):
    response = getattr(client, method)(url, **kwargs)
    assert response.status_code == status, response.text
    assert words in response.text


def test_upload_over_the_limit_is_refused_from_content_length_alone(tiny_index):
    app = create_app(Searcher(str(tiny_index)), max_upload_bytes=10 * 2 ** 20)
    client = TestClient(app)
    response = client.post("/api/search/image", content=b"x" * 10, headers={"content-length": "99999999",
                                                                          "content-type": "multipart/form-data; boundary=z"})
    assert response.status_code == 413
    assert response.json()["detail"] == "upload larger than the service's limit of 10 MB (max-upload-mb)"
    over = TestClient(create_app(Searcher(str(tiny_index)), max_upload_bytes=1000)).post(
        "/api/search/image", files={"image": ("a.png", b"x" * 5000, "image/png")})  # under the framing allowance
    assert over.status_code == 413 and "limit of 1,000 bytes (max-upload-mb)" in over.json()["detail"]


@pytest.mark.parametrize("declared", [True, False])
def test_a_client_that_sends_the_whole_body_first_still_reads_the_413(tiny_index, declared):
    """Python's http.client (as urllib and requests) writes the whole body before reading the reply."""
    import http.client
    from urllib.parse import urlparse

    body = b"--z\r\nContent-Disposition: form-data; name=image; filename=a.png\r\n\r\n" + b"x" * 3_000_000
    with serve_in_thread(create_app(Searcher(str(tiny_index)), max_upload_bytes=100_000)) as url:
        connection = http.client.HTTPConnection(urlparse(url).hostname, urlparse(url).port, timeout=30)
        headers = {"Content-Type": "multipart/form-data; boundary=z"}
        if declared:
            connection.request("POST", "/api/search/image", body=body, headers=headers)
        else:  # chunked: the limit is found while counting
            connection.request("POST", "/api/search/image", body=iter([body[i:i + 65536] for i in
                                                                        range(0, len(body), 65536)]),
                               headers=headers, encode_chunked=True)
        response = connection.getresponse()
        assert response.status == 413 and b"upload larger than" in response.read()
        connection.close()


def test_a_client_that_expects_100_continue_gets_the_413_without_uploading(tiny_index):
    import socket
    from urllib.parse import urlparse

    with serve_in_thread(create_app(Searcher(str(tiny_index)), max_upload_bytes=100_000)) as url:
        with socket.create_connection((urlparse(url).hostname, urlparse(url).port), timeout=5) as connection:
            connection.sendall(b"POST /api/search/image HTTP/1.1\r\nHost: x\r\nContent-Length: 50000000\r\n"
                               b"Content-Type: multipart/form-data; boundary=z\r\nExpect: 100-continue\r\n\r\n")
            reply = b""  # no body was sent: the answer must come anyway, and at once
            while b"larger than" not in reply and (chunk := connection.recv(4096)):
                reply += chunk
    assert reply.startswith(b"HTTP/1.1 413") and b"upload larger than" in reply


def test_concurrent_requests_all_succeed(client, tiny_dataset):
    data = (tiny_dataset / "valid" / "images" / "000002.png").read_bytes()

    def request(i):
        if i % 2:
            return client.get("/api/search/text", params={"q": f"a small blue square {i}", "k": 3}).status_code
        return client.post("/api/search/image", files={"image": ("q.png", data, "image/png")}).status_code

    with ThreadPoolExecutor(max_workers=16) as pool:
        codes = list(pool.map(request, range(64)))
    assert codes == [200] * 64


def test_openapi_docs_and_front_end_are_served(client):
    assert client.get("/docs").status_code == 200
    assert "/api/search/text" in client.get("/openapi.json").json()["paths"]
    page = client.get("/")
    assert page.status_code == 200 and 'id="query"' in page.text
    assert client.get("/static/app.js").status_code == 200


def test_chunked_upload_over_the_limit_is_a_413(client):
    def body():
        for _ in range(40):
            yield b"x" * 10_000

    response = client.post("/api/search/image", content=body(),
                           headers={"content-type": "multipart/form-data; boundary=zzz"})
    assert response.status_code == 413 and "larger than" in response.text


def test_templates_with_stray_braces_and_huge_uploads_are_handled(client, tiny_dataset):
    data = (tiny_dataset / "valid" / "images" / "000001.png").read_bytes()
    response = client.post("/api/classify", files={"image": ("q.png", data, "image/png")},
                           data={"labels": "red,blue", "templates": "a {} {x}\n{}}"})
    assert response.status_code == 200
    many = client.post("/api/classify", files={"image": ("q.png", data, "image/png")},
                       data={"labels": ",".join(f"l{i}" for i in range(100)), "templates": "{}\n" * 30})
    assert many.status_code == 400 and "prompts per request" in many.text
    wide = png_bytes(Image.new("1", (5000, 5000)))  # 25M pixels: fine for a dataset, too big for an upload
    response = client.post("/api/search/image", files={"image": ("w.png", wide, "image/png")})
    assert response.status_code == 400 and "too large" in response.text


def _rewrite_items(directory, edit):
    """Replace items.arrow of an index folder with edit(list of row dicts)'s rows."""
    from retrieval.item_table import ItemTable, ItemWriter, item_batch

    rows = ItemTable.open(str(directory / "items.arrow")).table.to_pylist()
    writer = ItemWriter(str(directory / "items.arrow.new"))
    writer.write(item_batch([(row["file"], row["name"], row["captions"]) for row in edit(rows)]))
    writer.close()
    (directory / "items.arrow.new").replace(directory / "items.arrow")


def test_thumbnail_of_a_deleted_file_is_a_404_without_server_paths(tiny_index, tmp_path):
    import shutil

    copy = tmp_path / "idx"
    shutil.copytree(tiny_index, copy)
    _rewrite_items(copy, lambda rows: [{**rows[0], "file": str(tmp_path / "gone.png")}] + rows[1:])
    response = TestClient(create_app(Searcher(str(copy)))).get("/api/items/0/thumbnail")
    assert response.status_code == 404 and "gone.png" not in response.text and str(tmp_path) not in response.text


def test_a_half_written_index_is_refused(tiny_index, tmp_path):
    import shutil

    from retrieval.gallery import Gallery
    from utils.errors import UserError

    copy = tmp_path / "idx"
    shutil.copytree(tiny_index, copy)
    _rewrite_items(copy, lambda rows: rows[:-1])  # as if killed between two file writes
    with pytest.raises(UserError, match="disagree"):
        Gallery.load(str(copy))
    (copy / "image_features.npy").write_bytes(b"truncated")
    with pytest.raises(UserError, match="damaged"):
        Gallery.load(str(copy))


def test_an_index_of_the_old_format_asks_for_a_rebuild(tiny_index, tmp_path):
    import json
    import shutil

    from retrieval.gallery import Gallery
    from utils.errors import UserError

    copy = tmp_path / "idx"
    shutil.copytree(tiny_index, copy)
    meta = json.loads((copy / "meta.json").read_text())
    (copy / "meta.json").write_text(json.dumps({**meta, "format": "contrastive-index/1"}))
    with pytest.raises(UserError, match="rebuild it with index.py"):
        Gallery.load(str(copy))


def test_chinese_queries_and_labels_work(client, tiny_dataset):
    assert client.get("/api/search/text", params={"q": "一个大的红色圆形", "k": 3}).status_code == 200
    data = (tiny_dataset / "valid" / "images" / "000001.png").read_bytes()
    labels = client.post("/api/classify", files={"image": ("q.png", data, "image/png")},
                         data={"labels": "红色,蓝色", "templates": "一张{}的图片"}).json()["labels"]
    assert {l["label"] for l in labels} == {"红色", "蓝色"}
