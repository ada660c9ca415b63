"""End to end in real headless Chromium (Debian's, driven by Playwright): type a query, upload an image,
classify, switch language."""
import csv
import os

import pytest

from retrieval.searcher import Searcher
from service.app import create_app
from tests.conftest import serve_in_thread

CHROMIUM = "/usr/bin/chromium"
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-quic",
         "--no-first-run", "--disable-component-update", "--disable-sync"]


@pytest.fixture(scope="module")
def server_url(tiny_index):
    with serve_in_thread(create_app(Searcher(str(tiny_index)))) as url:
        yield url


def test_search_upload_and_classify_in_chromium(server_url, tiny_dataset, tmp_path):
    from playwright.sync_api import sync_playwright

    assert os.path.exists(CHROMIUM), "make test installs Debian's chromium (apt-get install chromium)"
    with open(tiny_dataset / "valid" / "captions.csv", encoding="utf-8") as handle:
        first_caption = next(row["caption"] for row in csv.DictReader(handle) if row["filename"] == "000004.png")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        page = browser.new_page(viewport={"width": 1200, "height": 900})
        errors = []
        page.on("pageerror", lambda error: errors.append(str(error)))
        page.goto(server_url)
        page.fill("#query", "a big red circle left of a small blue square")
        page.press("#query", "Enter")
        page.wait_for_selector("#results .result")
        assert page.locator("#results .result").count() == 12
        assert page.locator("#results .result .score").first.inner_text().startswith("score 0.")
        page.wait_for_function("Array.from(document.querySelectorAll('#results img')).every(i => i.complete && i.naturalWidth > 0)")

        page.set_input_files("#upload", str(tiny_dataset / "valid" / "images" / "000004.png"))
        page.wait_for_function("document.querySelector('#results .result .caption').textContent === "
                               f"{first_caption!r}")
        assert page.locator("#results .result .score").first.inner_text() == "score 1.000"

        page.fill("#labels", "red, blue, green")
        page.click("#classify-button")
        page.wait_for_selector("#classify-results li")
        assert page.locator("#classify-results li").count() == 3

        page.click("#lang")
        assert page.locator("#search-button").inner_text() == "检索"
        page.screenshot(path=str(tmp_path / "page.png"), full_page=True)
        browser.close()
    assert errors == []
    assert (tmp_path / "page.png").stat().st_size > 10_000
