"""Third-party commands in the README and docs use only flags that a test or script runs against the real tool:
img2dataset's (scripts/img2dataset_fixture.py, recorded in tests/data/img2dataset/COMMANDS.txt) and
clip_benchmark's (tests/test_clip_benchmark_cli.py)."""
import pathlib
import re

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent
DOCS = [ROOT / "README.md", ROOT / "README.zh-CN.md", *sorted((ROOT / "docs").glob("*.md"))]
TESTED = {"img2dataset": (ROOT / "tests" / "data" / "img2dataset" / "COMMANDS.txt").read_text(),
          "scripts.clip_benchmark_cli": (ROOT / "tests" / "test_clip_benchmark_cli.py").read_text()}


def commands(text, tool):
    """Each documented command line that runs ``tool``, continuation lines joined."""
    joined = re.sub(r"\\\n\s*", " ", text)
    return [line for line in joined.splitlines() if re.search(rf"(^|\s){re.escape(tool)}\s", line.split("#")[0])]


@pytest.mark.parametrize("tool", list(TESTED))
def test_documented_commands_use_only_tested_flags(tool):
    found = [(path.name, line) for path in DOCS for line in commands(path.read_text(), tool)]
    assert found, f"no {tool} command in the docs"
    tested = set(re.findall(r"--\w+", TESTED[tool]))
    for name, line in found:
        flags = set(re.findall(r"(?<![\w-])--\w+", line.split("#")[0]))
        assert flags <= tested, (name, line, sorted(flags - tested))
