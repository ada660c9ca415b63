"""Run the CPU benches one after another and write one JSON and one markdown table, headed by the machine.

    python bench/run_all.py                       # every CPU bench (about 20 minutes on 2 cores)
    python bench/run_all.py --only train_step recall --out bench/results

Each bench runs in its own process (as a user runs it) and ends with ``RESULT <name> ours=… ref=… ratio=…``
lines (bench/_common.py); a bench that fails is recorded with its last error line and the others still run.
The markdown (bench/results/<date>.md) is what docs/performance.md's benchmark table is copied from: dated,
the machine named (bench/machine.py), each ratio with its goal.
"""
import argparse
import datetime
import json
import os
import re
import subprocess
import sys
import time

from bench.machine import machine, machine_line
from utils.atomic_file import atomic_write, atomic_write_json

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# name -> (arguments, goals: RESULT name -> the ratio it must reach, where the project has set one)
BENCHES = {
    "train_step": ([], {"train_step": 1.0}),
    "grad_cache": ([], {"grad_cache_memory": 8.0}),
    "input_pipeline": ([], {"input_pipeline": 2.0}),
    "shard_loader": ([], {"shard_loader": 1.5}),
    "shard_training": ([], {"shard_training": 1.0}),
    "recall": ([], {"recall_vs_gemm_5kx25k": 1 / 1.5, "recall_vs_gemm_50kx250k": 1 / 1.5}),
}
_RESULT = re.compile(r"^RESULT (\S+) ours=(\S+) ref=(\S+) ratio=(\S+) (.*)$")


def parse_results(stdout):
    """[{name, ours, ref, ratio, unit}] of the RESULT lines in a bench's output."""
    rows = []
    for line in stdout.splitlines():
        match = _RESULT.match(line.strip())
        if match:
            name, ours, ref, ratio, unit = match.groups()
            rows.append({"name": name, "ours": float(ours), "ref": float(ref), "ratio": float(ratio), "unit": unit})
    return rows


def run_bench(name, arguments, timeout):
    """{bench, seconds, results, error}: one bench run as ``python bench/<name>.py`` from the repository root."""
    started = time.perf_counter()
    try:
        done = subprocess.run([sys.executable, os.path.join("bench", f"{name}.py"), *arguments], cwd=ROOT,
                              capture_output=True, text=True, timeout=timeout)
        error = None if done.returncode == 0 else (done.stderr.strip().splitlines() or ["exit code %d" % done.returncode])[-1]
        results = parse_results(done.stdout)
    except subprocess.TimeoutExpired:
        error, results = f"stopped after {timeout} s", []
    return {"bench": name, "seconds": round(time.perf_counter() - started, 1), "results": results, "error": error}


def markdown(report):
    """The table docs/performance.md shows: a dated header naming the machine, one row per RESULT."""
    lines = [f"Measured {report['date']} with `python bench/run_all.py`; {machine_line(report['machine'])}.", "",
             "| bench | result | ours | reference | ratio (> 1: ours better) | goal |", "| --- | --- | --- | --- | --- | --- |"]
    for run in report["runs"]:
        goals = BENCHES.get(run["bench"], ([], {}))[1]
        if run["error"]:
            lines.append(f"| `{run['bench']}.py` | failed: {run['error']} | | | | |")
        for row in run["results"]:
            goal = goals.get(row["name"])
            verdict = "" if goal is None else f"≥ {goal:.3g} {'✓' if row['ratio'] >= goal else '✗'}"
            lines.append(f"| `{run['bench']}.py` | {row['name']} ({row['unit']}) | {row['ours']:.4g} | "
                         f"{row['ref']:.4g} | {row['ratio']:.3f} | {verdict} |")
    return "\n".join(lines) + "\n"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", nargs="+", choices=sorted(BENCHES), help="these benches only")
    parser.add_argument("--out", default=os.path.join("bench", "results"), help="folder for <date>.json and .md")
    parser.add_argument("--timeout", type=int, default=1800, help="seconds one bench may take")
    args = parser.parse_args(argv)
    facts = machine()
    print(machine_line(facts), flush=True)
    runs = []
    for name in args.only or BENCHES:
        run = run_bench(name, BENCHES[name][0], args.timeout)
        runs.append(run)
        summary = ", ".join(f"{row['name']} {row['ratio']:.3f}" for row in run["results"])
        print(f"{name}: {run['seconds']} s; {run['error'] or summary}", flush=True)
    report = {"date": datetime.date.today().isoformat(), "machine": facts, "runs": runs}
    os.makedirs(args.out, exist_ok=True)
    stem = os.path.join(args.out, report["date"])
    atomic_write_json(stem + ".json", report)
    text = markdown(report)
    atomic_write(stem + ".md", lambda stream: stream.write(text), binary=False)
    print(f"wrote {stem}.json and {stem}.md")
    return 1 if any(run["error"] for run in runs) else 0


if __name__ == "__main__":
    sys.exit(main())
