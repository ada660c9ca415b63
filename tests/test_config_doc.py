"""docs/configuration.md is generated from the schema (scripts/config_doc.py): it must never drift."""
import os

from scripts import config_doc
from utils import config_schema

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_configuration_page_equals_what_the_generator_writes():
    with open(os.path.join(ROOT, "docs", "configuration.md"), encoding="utf-8") as handle:
        written = handle.read()
    assert written == config_doc.render(), "docs/configuration.md is out of date: run `make docs`"


def test_every_train_key_has_a_row_in_the_configuration_page():
    text = config_doc.render()
    section = text.split("## train.py", 1)[1].split("\n## ", 1)[0]
    for key in config_schema.TRAIN:
        assert f"| `{key.name}` |" in section, key.name


def test_every_script_schema_has_a_section():
    text = config_doc.render()
    names = {name for _, name in config_doc.SCRIPTS}
    schemas = {name for name, value in vars(config_schema).items() if isinstance(value, config_schema.Schema)}
    assert schemas == names
    for script, _ in config_doc.SCRIPTS:
        assert f"\n## {script}\n" in text


def test_check_mode_fails_on_a_stale_page(tmp_path, monkeypatch, capsys):
    stale = tmp_path / "configuration.md"
    stale.write_text(config_doc.render().replace("| `epochs` |", "| `epoch` |"), encoding="utf-8")
    monkeypatch.setattr(config_doc, "DOC_PATH", str(stale))
    assert config_doc.main(["--check"]) == 1
    stale.write_text(config_doc.render(), encoding="utf-8")
    assert config_doc.main(["--check"]) == 0
