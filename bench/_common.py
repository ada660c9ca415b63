"""Helpers shared by the benchmark scripts: peak memory, timing, the RESULT line, a throwaway text tower."""
import os
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

DEMO_WORDS = ["a", "big", "small", "red", "blue", "green", "circle", "square", "triangle", "left", "of", "right",
              "above", "below", "in", "the", "center", "top", "bottom", "and", "there", "is", "picture"]


def reset_peak_rss():
    """Reset the kernel's peak-RSS mark of this process (Linux: write 5 to /proc/self/clear_refs)."""
    with open("/proc/self/clear_refs", "w") as handle:
        handle.write("5")


def rss_mb(field):
    """VmRSS (current) or VmHWM (peak since reset) of this process, in MiB."""
    with open("/proc/self/status") as handle:
        for line in handle:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    raise RuntimeError(field)


def best_time(function, repeat=3):
    """Minimum wall time of ``repeat`` calls (seconds)."""
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        function()
        times.append(time.perf_counter() - started)
    return min(times)


def demo_captions(count, seed=0):
    import random

    rng = random.Random(seed)
    return [" ".join(rng.choice(DEMO_WORDS) for _ in range(rng.randint(6, 14))) for _ in range(count)]


def demo_text_tower(hidden_size=128, layers=2, heads=4, max_length=32):
    """A demo-sized RoBERTa directory (tokenizer + config) in a temporary folder."""
    from scripts.make_demo_text_tower import write_text_tower

    directory = tempfile.mkdtemp(prefix="bench-text-")
    write_text_tower(demo_captions(2000), directory, vocab_size=400, hidden_size=hidden_size, layers=layers,
                     heads=heads, max_length=max_length)
    return directory


_MACHINE_SAID = []


def result(name, ours, ref, better, unit):
    """The one line every bench ends with (after one line naming the machine, bench/machine.py). better:
    "higher" or "lower" (which way is good for ``ours``)."""
    if not _MACHINE_SAID:
        from bench.machine import machine_line

        print(machine_line())
        _MACHINE_SAID.append(True)
    ratio = ours / ref if better == "higher" else ref / ours
    print(f"RESULT {name} ours={ours:.4g} ref={ref:.4g} ratio={ratio:.3f} {unit}")


def run_script(*args, torchrun=False):
    """Run a repo script (under a 2-process torchrun if asked); exit with its stderr if it fails. -> stdout."""
    import subprocess

    launcher = ["-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29561"] if torchrun else []
    done = subprocess.run([sys.executable, *launcher, *args], cwd=ROOT, capture_output=True, text=True)
    if done.returncode:
        sys.exit(f"{' '.join(args[:1])} failed:\n{done.stderr[-2000:]}")
    return done.stdout


def demo_dataset_shards_and_model(directory, images, valid, per_shard):
    """Generated demo images (train/valid folders), shards of the train split and an untrained demo model,
    all under ``directory``. -> (data folder, shard pattern, init checkpoint)."""
    data = os.path.join(directory, "data")
    run_script("scripts/make_demo_dataset.py", "--out", data, "--train", str(images), "--valid", str(valid))
    shard_dir = os.path.join(directory, "shards")
    run_script("scripts/make_shards.py", "--data", os.path.join(data, "train"), "--out", shard_dir,
               "--samples-per-shard", str(per_shard), "--quiet")
    shards = len([name for name in os.listdir(shard_dir) if name.endswith(".tar")])
    text = os.path.join(directory, "text")
    run_script("scripts/make_demo_text_tower.py", "--data", os.path.join(data, "train"), "--out", text)
    model = os.path.join(directory, "init.pt")
    run_script("init.py", "--config", "configs/demo/init.yaml", "--text-model", text, "--save-path", model)
    return data, os.path.join(shard_dir, "{00000..%05d}.tar" % (shards - 1)), model
