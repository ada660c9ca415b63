"""Every relative link in the READMEs and docs/*.md points to a file or folder that exists (no network)."""
import glob
import os
import re

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# [text](target) and ![alt](target); a target ends at whitespace or ')'.
_LINK = re.compile(r"!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
_FENCE = re.compile(r"^(```|~~~).*?^\1", re.S | re.M)


def _pages():
    pages = [os.path.join(ROOT, "README.md"), os.path.join(ROOT, "README.zh-CN.md")]
    return pages + sorted(glob.glob(os.path.join(ROOT, "docs", "*.md")))


def _relative_links(path):
    with open(path, encoding="utf-8") as handle:
        text = _FENCE.sub("", handle.read())
    for target in _LINK.findall(text):
        if re.match(r"^[a-z][a-z0-9+.-]*:", target, re.I) or target.startswith("#"):
            continue  # http(s):, mailto: and in-page anchors
        yield target.split("#", 1)[0]


def test_link_pattern_finds_links_and_images():
    text = "see [a](docs/a.md#x), ![b](docs/b.png) and [c](https://example.com)"
    assert _LINK.findall(text) == ["docs/a.md#x", "docs/b.png", "https://example.com"]


def test_every_relative_link_resolves_to_an_existing_file():
    missing = []
    for page in _pages():
        for target in _relative_links(page):
            resolved = os.path.normpath(os.path.join(os.path.dirname(page), target))
            if not os.path.exists(resolved):
                missing.append(f"{os.path.relpath(page, ROOT)}: {target}")
    assert not missing, "broken relative links:\n" + "\n".join(missing)
