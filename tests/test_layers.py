"""The package layering: lower packages never import the ones built on them."""
import ast
import pathlib

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent
UPPER = {"retrieval", "training", "evaluation", "service", "scripts"}


def imported_packages(path):
    """Top-level names of every module a file imports (at module level or inside a function)."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names


@pytest.mark.parametrize("package, forbidden", [
    ("models", UPPER), ("data", UPPER), ("utils", UPPER), ("evaluation", {"training", "retrieval"}),
])
def test_lower_packages_never_import_the_packages_built_on_them(package, forbidden):
    offenders = {f"{path.relative_to(ROOT)}: {sorted(imported_packages(path) & forbidden)}"
                 for path in sorted((ROOT / package).rglob("*.py")) if imported_packages(path) & forbidden}
    assert not offenders
