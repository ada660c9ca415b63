"""End to end in real headless Chromium or Chrome (whichever is installed, driven by Playwright; never a
downloaded browser): type a query, upload an image, classify, switch language."""
import csv
import re

import pytest

from retrieval.searcher import Searcher
from scripts import chromium as browsers
from scripts.chromium import FLAGS, find_chromium
from service.app import create_app
from tests.helpers import serve_in_thread


def fake_executable(path):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("#!/bin/sh\n")
    path.chmod(0o755)
    return str(path)


@pytest.fixture()
def no_browsers(tmp_path, monkeypatch):
    """An empty PATH, no $CHROMIUM and no macOS apps: each test adds the browsers it needs."""
    monkeypatch.delenv("CHROMIUM", raising=False)
    monkeypatch.setenv("PATH", str(tmp_path / "bin"))
    monkeypatch.setattr(browsers, "MACOS_BROWSERS", (str(tmp_path / "Chromium.app"),))
    return tmp_path


def test_the_chromium_variable_wins_over_path(no_browsers, monkeypatch):
    fake_executable(no_browsers / "bin" / "chromium")
    monkeypatch.setenv("CHROMIUM", fake_executable(no_browsers / "mine" / "chrome"))
    assert find_chromium() == str(no_browsers / "mine" / "chrome")


def test_path_is_searched_in_order_then_the_macos_app(no_browsers):
    assert find_chromium() is None
    fake_executable(no_browsers / "Chromium.app")
    assert find_chromium() == str(no_browsers / "Chromium.app")
    fake_executable(no_browsers / "bin" / "google-chrome")
    assert find_chromium() == str(no_browsers / "bin" / "google-chrome")
    fake_executable(no_browsers / "bin" / "chromium-browser")
    assert find_chromium() == str(no_browsers / "bin" / "chromium-browser")


def test_no_browser_anywhere_is_none(no_browsers):
    (no_browsers / "bin").mkdir()
    (no_browsers / "bin" / "chromium").write_text("not executable")
    assert find_chromium() is None


@pytest.fixture(scope="module")
def server_url(tiny_index):
    with serve_in_thread(create_app(Searcher(str(tiny_index)))) as url:
        yield url


@pytest.mark.slow
def test_search_upload_and_classify_in_chromium(chromium, server_url, tiny_dataset, tmp_path):
    from playwright.sync_api import sync_playwright

    with open(tiny_dataset / "valid" / "captions.csv", encoding="utf-8") as handle:
        first_caption = next(row["caption"] for row in csv.DictReader(handle) if row["filename"] == "000004.png")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium, args=FLAGS)
        page = browser.new_page(viewport={"width": 1200, "height": 900})
        errors = []
        page.on("pageerror", lambda error: errors.append(str(error)))
        page.goto(server_url)
        page.fill("#query", "a big red circle left of a small blue square")
        page.press("#query", "Enter")
        page.wait_for_selector("#results .result")
        assert page.locator("#results .result").count() == 12
        # a cosine with 3 decimals, best first (an untrained model's best may well be below 0)
        scores = [float(text.removeprefix("score ")) for text in page.locator("#results .result .score").all_inner_texts()]
        assert all(re.fullmatch(r"score -?[01]\.\d{3}", text)
                   for text in page.locator("#results .result .score").all_inner_texts())
        assert scores == sorted(scores, reverse=True) and -1 <= scores[-1] <= scores[0] <= 1
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
