"""Benchmarks: each script runs as `python bench/<name>.py` and ends with a RESULT line (bench/_common.py)."""
