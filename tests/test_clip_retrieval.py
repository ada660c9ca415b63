"""clip-retrieval's real ClipClient (clip-retrieval 2.45.0) against the service's /knn-service, /indices-list
and /metadata. The client module is loaded from the installed package by its file: the package's __init__
imports its own server's dependencies (flask, faiss-cpu < 2 with numpy < 2, ...), which the client never uses."""
import importlib.util
import json
import os

import numpy as np
import pytest
import requests

from retrieval.searcher import Searcher
from service.app import create_app
from tests.helpers import http_server, run_script, serve_in_thread


def _clip_client_module():
    package = importlib.util.find_spec("clip_retrieval")
    path = os.path.join(os.path.dirname(package.origin), "clip_client.py")
    spec = importlib.util.spec_from_file_location("clip_retrieval_client", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def service(tiny_index):
    searcher = Searcher(str(tiny_index))
    with serve_in_thread(create_app(searcher, max_upload_bytes=2 ** 20, allow_image_url=True)) as url:
        yield url, searcher


def test_the_real_client_searches_by_text_image_url_and_embedding(service, tiny_dataset):
    client_module = _clip_client_module()
    url, searcher = service
    name = requests.get(f"{url}/indices-list", timeout=10).json()
    assert name == [searcher.index_name]
    client = client_module.ClipClient(f"{url}/knn-service", indice_name=name[0], num_images=5)  # its defaults:
    results = client.query(text="a red circle")  # safety model, violence detector, aesthetic score on
    ours = searcher.search_text("a red circle", 5)
    assert [r["id"] for r in results] == [r["id"] for r in ours]
    assert np.allclose([r["similarity"] for r in results], [r["score"] for r in ours], atol=1e-6)
    assert all(set(r) == {"id", "similarity", "url", "caption", "image_path"} for r in results)
    assert results[0]["caption"] == ours[0]["captions"][0] and results[0]["image_path"] == ours[0]["name"]
    assert requests.get(results[0]["url"], timeout=10).headers["content-type"] == "image/jpeg"

    picture = tiny_dataset / "valid" / "images" / searcher.gallery.items[3]["name"]
    by_file = client.query(image=str(picture))  # sent as base64
    assert by_file[0]["id"] == 3 and by_file[0]["similarity"] == pytest.approx(1.0, abs=1e-4)
    with http_server(tiny_dataset / "valid" / "images") as images:  # loopback only
        by_url = client.query(image=f"{images}/{searcher.gallery.items[3]['name']}")
    assert by_url[0]["id"] == 3
    by_vector = client.query(embedding_input=searcher.gallery.image_features[7].tolist())
    assert by_vector[0]["id"] == 7 and by_vector[0]["similarity"] == pytest.approx(1.0, abs=1e-5)

    captions = client_module.ClipClient(f"{url}/knn-service", indice_name=name[0], num_images=3,
                                        modality=client_module.Modality.TEXT)
    caption = searcher.gallery.items[5]["captions"][1]
    found = captions.query(text=caption)
    assert found[0]["caption"] == caption and found[0]["id"] == 5  # its own text; ids are image ids, for /metadata
    described = requests.post(f"{url}/metadata", json={"indice_name": name[0], "ids": [found[0]["id"]]}, timeout=10)
    assert described.json()[0]["metadata"]["image_path"] == searcher.gallery.items[5]["name"]


def test_metadata_results_beyond_num_images_and_refusals(service):
    url, searcher = service
    name = searcher.index_name
    post = lambda path, body: requests.post(f"{url}{path}", json=body, timeout=30)  # noqa: E731
    many = post("/knn-service", {"text": "a blue square", "indice_name": name, "num_images": 2,
                                 "num_result_ids": 6, "modality": "image"}).json()
    assert len(many) == 6 and all("url" in r for r in many[:2]) and not any("url" in r for r in many[2:])
    described = post("/metadata", {"indice_name": name, "ids": [r["id"] for r in many]}).json()
    assert [d["id"] for d in described] == [r["id"] for r in many]
    assert described[0]["metadata"]["caption"] == searcher.gallery.items[many[0]["id"]]["captions"][0]
    for body, words in (({"text": "x", "indice_name": "laion5B"}, "unknown indice_name"),
                        ({"indice_name": name}, "give one of"),
                        ({"embedding_input": [1.0, 2.0], "indice_name": name}, "has 2 values"),
                        ({"image": "***", "indice_name": name}, "not base64"),
                        ({"text": "x", "indice_name": name, "modality": "audio"}, "modality")):
        response = post("/knn-service", body)
        assert response.status_code == 400 and words in response.json()["detail"], body


def test_what_its_front_end_sends_and_uploads_near_the_limit(tiny_index, tiny_dataset):
    import base64
    import http.server

    searcher = Searcher(str(tiny_index))
    picture = (tiny_dataset / "valid" / "images" / searcher.gallery.items[2]["name"]).read_bytes()
    padded = picture + b"\0" * (9000 - len(picture))  # a PNG with trailing bytes: 9,000 of a 10,000 limit
    query = {"text": "", "image": base64.b64encode(padded).decode(), "indice_name": searcher.index_name,
             "aesthetic_score": "", "aesthetic_weight": "0.5", "num_images": 3}

    class Redirect(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(302)
            self.send_header("Location", "ftp://127.0.0.1/a.png")  # a scheme urllib itself would follow
            self.end_headers()

        def log_message(self, *args):
            pass

    app = create_app(searcher, max_upload_bytes=10_000, allow_image_url=True)
    with serve_in_thread(app) as url, http_server(handler=Redirect) as elsewhere:
        found = requests.post(f"{url}/knn-service", json=query, timeout=30)  # its image search sends text ""
        redirected = requests.post(f"{url}/knn-service", timeout=30, json={
            "image_url": f"{elsewhere}/a.png", "indice_name": searcher.index_name})
    assert found.status_code == 200 and found.json()[0]["id"] == 2
    assert redirected.status_code == 400 and "not http(s)" in redirected.json()["detail"]


def test_image_urls_are_refused_unless_allowed(tiny_index, tiny_dataset):
    searcher = Searcher(str(tiny_index))
    with serve_in_thread(create_app(searcher)) as url, http_server(tiny_dataset / "valid" / "images") as images:
        response = requests.post(f"{url}/knn-service", timeout=30, json={
            "image_url": f"{images}/{searcher.gallery.items[0]['name']}", "indice_name": searcher.index_name})
    assert response.status_code == 400 and "--allow-image-url true" in response.json()["detail"]


@pytest.mark.slow
def test_deduplicate_drops_an_image_indexed_twice(tiny_checkpoint, tiny_dataset, tmp_path):
    folder = tmp_path / "photos"
    folder.mkdir()
    images = sorted((tiny_dataset / "valid" / "images").iterdir())[:3]
    for number, image in enumerate(images):
        (folder / f"{number}.png").write_bytes(image.read_bytes())
    (folder / "copy.png").write_bytes(images[0].read_bytes())
    indexed = run_script("index.py", "--model-path", str(tiny_checkpoint), "--data", str(folder),
                         "--out", str(tmp_path / "idx"))
    assert indexed.returncode == 0, indexed.stderr
    searcher = Searcher(str(tmp_path / "idx"))
    with serve_in_thread(create_app(searcher)) as url:
        query = {"embedding_input": searcher.gallery.image_features[0].tolist(), "indice_name": "idx",
                 "num_images": 4}
        kept = requests.post(f"{url}/knn-service", json=query, timeout=30).json()
        every = requests.post(f"{url}/knn-service", json={**query, "deduplicate": False}, timeout=30).json()
    assert len(every) == 4 and len(kept) == 3
    assert {r["image_path"] for r in every[:2]} == {"0.png", "copy.png"}


@pytest.mark.slow
def test_clip_retrievals_own_front_end_searches_this_service(chromium, tiny_index, tmp_path):
    """clip-retrieval's built front end (installed with it under site-packages/front/build), served from another
    origin as its clip_front does, with this service as its back end (cors-origins lets that origin call it)."""
    import shutil

    from playwright.sync_api import sync_playwright

    from scripts.chromium import FLAGS

    build = os.path.join(os.path.dirname(os.path.dirname(importlib.util.find_spec("clip_retrieval").origin)),
                         "front", "build")
    front = tmp_path / "front"
    shutil.copytree(build, front)
    searcher = Searcher(str(tiny_index))
    with http_server(front) as front_url:
        app = create_app(searcher, cors_origins=(front_url,))
        with serve_in_thread(app) as url:
            (front / "config.json").write_text(json.dumps({"defaultBackend": url,
                                                          "defaultIndex": searcher.index_name}))
            with sync_playwright() as playwright:
                browser = playwright.chromium.launch(executable_path=chromium, args=FLAGS)
                page = browser.new_page(viewport={"width": 1200, "height": 900})
                calls = []
                page.on("request", lambda request: calls.append(request.url) if request.url.startswith(url) else None)
                page.goto(front_url)
                page.wait_for_function("() => document.querySelector('clip-front').shadowRoot"
                                       ".querySelector('select option')", timeout=30_000)  # /indices-list read
                page.fill("#searchBar", "a red circle")
                page.press("#searchBar", "Enter")
                page.wait_for_function("() => Array.from(document.querySelector('clip-front').shadowRoot"
                                       ".querySelectorAll('img')).filter(i => i.src.includes('/api/items/')"
                                       " && i.complete && i.naturalWidth > 0).length >= 10", timeout=30_000)
                sources = page.evaluate("() => Array.from(document.querySelector('clip-front').shadowRoot"
                                        ".querySelectorAll('img')).map(i => i.src)")
                browser.close()
    thumbnails = [source for source in sources if "/api/items/" in source]
    assert thumbnails and all(source.startswith(url) for source in thumbnails)
    assert any(call.endswith("/knn-service") for call in calls) and any("/indices-list" in c for c in calls)


def test_cors_origins_are_origins_and_off_by_default(tiny_index):
    from fastapi.testclient import TestClient

    from serve import parse_origins
    from utils.errors import UserError

    assert parse_origins(None) == () and parse_origins("http://127.0.0.1:1235, https://x.org/") == (
        "http://127.0.0.1:1235", "https://x.org")
    with pytest.raises(UserError, match="cors-origins: 'x.org/path' is not an origin"):
        parse_origins("x.org/path")
    asked = {"Origin": "http://elsewhere.example"}
    closed = TestClient(create_app(Searcher(str(tiny_index)))).get("/indices-list", headers=asked)
    assert "access-control-allow-origin" not in closed.headers  # another site's page cannot read the index
    opened = TestClient(create_app(Searcher(str(tiny_index)), cors_origins=("http://elsewhere.example",)))
    assert opened.get("/indices-list", headers=asked).headers["access-control-allow-origin"] == asked["Origin"]
