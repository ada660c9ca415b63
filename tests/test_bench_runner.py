"""bench/run_all.py and bench/machine.py: every bench's numbers land in one JSON and one table headed by the
machine they were measured on, and a failing bench is recorded without stopping the others."""
import json

from bench import machine as machine_module
from bench import run_all


def test_the_machine_is_named_with_the_flags_that_change_kernels(monkeypatch):
    monkeypatch.setattr(machine_module, "_cpuinfo", lambda: "model name\t: Test CPU 9000\nflags\t\t: fpu avx2 avx512f "
                        "amx_tile amx_bf16 sse4_2\n")
    facts = machine_module.machine()
    assert facts["cpu"] == "Test CPU 9000" and facts["isa"] == ["avx2", "avx512f", "amx_tile", "amx_bf16"]
    assert facts["threads"] >= 1 and facts["torch"]
    line = machine_module.machine_line(facts)
    assert line.startswith("machine: Test CPU 9000, ") and "avx2 avx512f amx_tile amx_bf16" in line


def test_run_all_writes_every_result_and_each_failure_under_the_machine_header(tmp_path, monkeypatch):
    (tmp_path / "bench").mkdir()
    (tmp_path / "bench" / "fast.py").write_text(
        "print('a table')\nprint('RESULT fast_a ours=120 ref=100 ratio=1.200 images/s')\n"
        "print('RESULT fast_b ours=3 ref=2 ratio=0.667 s')\n")
    (tmp_path / "bench" / "broken.py").write_text("raise SystemExit('the reference library is not installed')\n")
    monkeypatch.setattr(run_all, "ROOT", str(tmp_path))
    monkeypatch.setattr(run_all, "BENCHES", {"broken": ([], {}), "fast": ([], {"fast_a": 1.0, "fast_b": 1.0})})
    out = tmp_path / "results"
    assert run_all.main(["--out", str(out)]) == 1  # one bench failed
    [written] = list(out.glob("*.json"))
    report = json.loads(written.read_text())
    assert report["machine"]["cores"] >= 1
    broken, fast = report["runs"]
    assert broken["error"] == "the reference library is not installed" and broken["results"] == []
    assert [(r["name"], r["ours"], r["ref"], r["ratio"]) for r in fast["results"]] == [
        ("fast_a", 120.0, 100.0, 1.2), ("fast_b", 3.0, 2.0, 0.667)]
    table = written.with_suffix(".md").read_text()
    assert table.startswith(f"Measured {report['date']} with `python bench/run_all.py`; machine: ")
    assert "| `fast.py` | fast_a (images/s) | 120 | 100 | 1.200 | ≥ 1 ✓ |" in table
    assert "| `fast.py` | fast_b (s) | 3 | 2 | 0.667 | ≥ 1 ✗ |" in table
    assert "| `broken.py` | failed: the reference library is not installed |" in table
