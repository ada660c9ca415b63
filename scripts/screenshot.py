"""Screenshot the running service's page after a text query, in headless Chromium or Chrome (for the README).

    python scripts/screenshot.py --url http://127.0.0.1:8000 --query "a big red circle" --out docs/screenshot.png
"""
import argparse
import sys

from playwright.sync_api import sync_playwright

from scripts.chromium import FLAGS, HOW_TO_GET_ONE, find_chromium


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default="http://127.0.0.1:8000")
    parser.add_argument("--query", default="a big red circle left of a small blue square")
    parser.add_argument("--image", help="also upload this image and classify it")
    parser.add_argument("--labels", default="red, green, blue, yellow, purple, orange, black, cyan")
    parser.add_argument("--out", default="docs/screenshot.png")
    args = parser.parse_args()
    executable = find_chromium()
    if executable is None:
        sys.exit(HOW_TO_GET_ONE)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=executable, args=FLAGS)
        page = browser.new_page(viewport={"width": 1280, "height": 860})
        page.goto(args.url)
        if args.image:
            page.set_input_files("#upload", args.image)
            page.wait_for_selector("#results .result")
            page.fill("#labels", args.labels)
            page.click("#classify-button")
            page.wait_for_selector("#classify-results li")
        page.fill("#query", args.query)
        page.press("#query", "Enter")
        page.wait_for_function("document.querySelector('#status').textContent.includes('results')")
        page.wait_for_function("Array.from(document.querySelectorAll('#results img')).every(i => i.complete)")
        page.screenshot(path=args.out)
        browser.close()
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
