"""init -> train -> eval through the real scripts on a tiny generated dataset."""
import json
import os
import shutil
import signal
import subprocess
import sys
import time

import pytest
import torch

from models.checkpoint import model_from_checkpoint
from tests.conftest import ROOT, run_script, train_args
from training.loop import _prepare_model
from training.objective import objective_from_config
from utils.config import load_config
from utils.config_schema import TRAIN


def snapshot(root):
    return sorted((str(p.relative_to(root)), p.stat().st_size, p.stat().st_mtime_ns) for p in root.rglob("*"))


@pytest.mark.slow
def test_init_train_eval_end_to_end(tiny_checkpoint, tiny_dataset, tmp_path):
    before = snapshot(tiny_dataset)
    result = run_script(*train_args(tiny_checkpoint, tiny_dataset, tmp_path, "--epochs", "2", "--num-workers", "1"))
    assert result.returncode == 0, result.stderr
    assert "epoch 2/2" in result.stdout and "precision: float32" in result.stdout
    assert "speed: channels_last on, fused AdamW off, pinned memory off, persistent workers on" in result.stdout
    for name in ("best.pt", "last.pt", "logs/metrics.jsonl", "logs/metrics.csv", "logs/curves.png"):
        assert (tmp_path / name).is_file(), name
    assert any(name.startswith("events.out.tfevents") for name in os.listdir(tmp_path / "logs"))
    history = [json.loads(line) for line in (tmp_path / "logs/metrics.jsonl").read_text().splitlines()]
    assert [item["epoch"] for item in history] == [1, 2]
    last = torch.load(tmp_path / "last.pt", weights_only=True)
    assert last["training"]["epoch"] == 2 and "optimizer" in last["training"]
    # learn-temperature (the demo's): a fine-tune from this model starts at its learned temperature, not 0.07
    assert last["spec"]["learned-logit-scale"] is True
    model, spec, _ = model_from_checkpoint(last)
    learned = model.scale().item()
    assert learned != pytest.approx(1 / 0.07)
    config = {**load_config(TRAIN, "configs/demo/train.yaml", []), "channels-last": False}
    _prepare_model(model, spec, config, torch.device("cpu"), None, objective_from_config(config))
    assert model.scale().item() == learned

    output = tmp_path / "recall.json"
    result = run_script("eval.py", "--config", "configs/demo/eval.yaml", "--model-path", str(tmp_path / "best.pt"),
                        "--valid-data", str(tiny_dataset / "valid"), "--output", str(output), "--num-workers", "0")
    assert result.returncode == 0, result.stderr
    assert "| image → text |" in result.stdout and "R @ 10" in result.stdout
    recalls = json.loads(output.read_text())
    assert recalls["images"] == 16 and recalls["captions"] == 80
    best_epoch = max(history, key=lambda item: item["mean_recall"])
    for key in ("i2t_r1", "i2t_r5", "i2t_r10", "t2i_r1", "t2i_r5", "t2i_r10"):
        assert recalls[key] == pytest.approx(best_epoch[key], abs=1e-9), key
    assert snapshot(tiny_dataset) == before  # nothing written into the dataset folders


@pytest.mark.slow
def test_a_new_run_never_overwrites_an_earlier_one_by_accident(tiny_checkpoint, tiny_dataset, tmp_path):
    (tmp_path / "best.pt").write_bytes(b"precious")
    result = run_script(*train_args(tiny_checkpoint, tiny_dataset, tmp_path, "--epochs", "1"))
    assert result.returncode == 2 and "--resume" in result.stderr and "--overwrite true" in result.stderr
    assert (tmp_path / "best.pt").read_bytes() == b"precious"


def descendants(root):
    """Every process below ``root`` (children, their children, ...), from /proc."""
    children = {}
    for entry in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{entry}/stat") as handle:
                parent = int(handle.read().rsplit(")", 1)[1].split()[1])  # field 4; the name may hold spaces
        except (OSError, ValueError, IndexError):
            continue
        children.setdefault(parent, []).append(int(entry))
    found, stack = [], [root]
    while stack:
        for child in children.get(stack.pop(), []):
            found.append(child)
            stack.append(child)
    return found


def kill_during_run(args, out, after_seconds=0.3, timeout=240):
    """Start ``args``, SIGKILL it and every process it started soon after the first last.pt exists (so
    mid-way through a later epoch), and return the epoch that last.pt holds."""
    process = subprocess.Popen([sys.executable, *args], cwd=ROOT, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
    deadline = time.time() + timeout
    while not (out / "last.pt").exists() and process.poll() is None and time.time() < deadline:
        time.sleep(0.02)
    time.sleep(after_seconds)
    for pid in [process.pid, *descendants(process.pid)]:  # torchrun starts its workers in their own sessions
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    process.wait()
    return torch.load(out / "last.pt", weights_only=True)["training"]["epoch"]


def assert_same_run(a_dir, b_dir):
    """Bitwise-equal weights, equal history (timing aside) and best metric in two runs' last.pt."""
    a = torch.load(a_dir / "last.pt", weights_only=True)
    b = torch.load(b_dir / "last.pt", weights_only=True)
    for name, tensor in a["state_dict"].items():
        other = b["state_dict"][name]
        assert torch.equal(tensor, other), (name, (tensor.float() - other.float()).abs().max())

    def without_timing(history):
        return [{k: v for k, v in item.items() if k not in ("samples_per_s", "train_seconds", "run_seconds")} for item in history]

    assert without_timing(a["training"]["history"]) == without_timing(b["training"]["history"])
    assert a["training"]["best-metric"] == b["training"]["best-metric"]


@pytest.fixture(scope="module")
def uninterrupted_run(tiny_checkpoint, tiny_dataset, tmp_path_factory):
    """A 4-epoch demo-config run, never stopped, with num-workers 0."""
    out = tmp_path_factory.mktemp("straight")
    result = run_script(*train_args(tiny_checkpoint, tiny_dataset, out, "--epochs", "4"))
    assert result.returncode == 0, result.stderr
    return out


@pytest.mark.parametrize("workers", [0, 2])
@pytest.mark.slow
def test_resume_after_sigkill_equals_the_uninterrupted_run_bit_for_bit(uninterrupted_run, tiny_checkpoint,
                                                                       tiny_dataset, tmp_path, workers):
    # num-workers > 0 means persistent workers (the demo's setting); the data do not depend on the count.
    killed = tmp_path / "killed"
    args = train_args(tiny_checkpoint, tiny_dataset, killed, "--epochs", "4", "--num-workers", str(workers))
    epoch_at_kill = kill_during_run(args, killed)
    assert epoch_at_kill < 4

    result = run_script(*args, "--resume", str(killed / "last.pt"))
    assert result.returncode == 0, result.stderr
    assert f"resumed {killed / 'last.pt'} at epoch {epoch_at_kill}" in result.stdout
    assert_same_run(uninterrupted_run, killed)

    if workers == 0:
        changed = run_script(*train_args(tiny_checkpoint, tiny_dataset, killed, "--epochs", "6",
                                         "--resume", str(killed / "last.pt")))
        assert changed.returncode == 2 and "epochs: 4 -> 6" in changed.stderr and "--load-path" in changed.stderr
        other_split = run_script(*args, "--valid-data", str(tiny_dataset / "train"), "--resume",
                                 str(killed / "last.pt"))
        assert other_split.returncode == 2 and "valid-data:" in other_split.stderr


def kill_inside_an_epoch(args, out, accept=lambda batches: True):
    """Kill runs of ``args`` (checkpoint-every-steps 1; a list, or a function of the attempt number that gives
    one, e.g. a fresh torchrun port) until last.pt holds a position inside an epoch after a number of batches
    ``accept`` takes; return that training state. A kill lands where timing puts it, so up to 12 tries."""
    for attempt in range(12):
        shutil.rmtree(out, ignore_errors=True)
        kill_during_run(args(attempt) if callable(args) else args, out, after_seconds=(0.2, 0.7, 1.2, 0.4)[attempt % 4])
        state = torch.load(out / "last.pt", weights_only=True)["training"]
        if state.get("epoch-progress") and accept(state["epoch-progress"]["batches"]):
            return state
    pytest.fail("no kill landed inside an epoch where wanted")


@pytest.mark.slow
def test_a_run_killed_inside_an_epoch_resumes_there_bit_for_bit(uninterrupted_run, tiny_checkpoint, tiny_dataset,
                                                                tmp_path):
    killed = tmp_path / "killed"
    args = train_args(tiny_checkpoint, tiny_dataset, killed, "--epochs", "4", "--num-workers", "2",
                      "--checkpoint-every-steps", "1")
    state = kill_inside_an_epoch(args, killed)
    done = state["epoch-progress"]["batches"]
    assert 0 < done < 3  # 48 images, batch 16: 3 steps per epoch

    result = run_script(*args, "--resume", str(killed / "last.pt"))
    assert result.returncode == 0, result.stderr
    assert f"after batch {done} of epoch {state['epoch'] + 1}" in result.stdout
    assert_same_run(uninterrupted_run, killed)  # same weights, same per-epoch losses and recalls


@pytest.mark.slow
def test_large_seeds_train(tiny_checkpoint, tiny_dataset, tmp_path):
    result = run_script(*train_args(tiny_checkpoint, tiny_dataset, tmp_path, "--epochs", "1", "--seed",
                                    str(2**31 - 1)))
    assert result.returncode == 0, result.stderr
    assert "epoch 1/1" in result.stdout


@pytest.mark.slow
def test_unwritable_output_fails_before_training(tiny_checkpoint, tiny_dataset, tmp_path):
    (tmp_path / "a-file").write_text("x")
    result = run_script(*train_args(tiny_checkpoint, tiny_dataset, tmp_path, "--epochs", "1",
                                    "--best-path", str(tmp_path / "a-file" / "best.pt")))
    assert result.returncode == 2 and "cannot write" in result.stderr and "Traceback" not in result.stderr
    assert "epoch 1/1" not in result.stdout


def test_non_finite_loss_stops_the_run_and_keeps_best(tiny_checkpoint, tiny_dataset, tmp_path, monkeypatch):
    from models.loss import Objective
    from training import loop

    real_loss, calls = Objective.__call__, {"n": 0}

    def loss_that_explodes_in_epoch_two(self, *args):
        calls["n"] += 1
        loss = real_loss(self, *args)
        return loss * float("nan") if calls["n"] > 3 else loss  # 48 images / batch 16 = 3 steps per epoch

    monkeypatch.setattr(Objective, "__call__", loss_that_explodes_in_epoch_two)
    config = load_config(TRAIN, "configs/demo/train.yaml", train_args(tiny_checkpoint, tiny_dataset, tmp_path,
                                                                      "--epochs", "3")[1:])
    with pytest.raises(loop.TrainingDiverged, match="loss became nan at epoch 2"):
        loop.train(config)
    best = torch.load(tmp_path / "best.pt", weights_only=True)
    assert best["training"]["epoch"] == 1


@pytest.mark.slow
def test_validate_first_logs_the_starting_model_and_early_stop_ends_a_stalled_run(tiny_checkpoint, tiny_dataset,
                                                                                  tmp_path):
    # lr 0 and locked towers (BatchNorm statistics too): every epoch's recall equals the starting model's.
    result = run_script(*train_args(tiny_checkpoint, tiny_dataset, tmp_path, "--epochs", "5", "--validate-first",
                                    "true", "--early-stop-patience", "2", "--learning-rate", "0", "--layer-decay",
                                    "0.8", "--lock-image", "true", "--lock-text", "true"))
    assert result.returncode == 0, result.stderr
    assert "epoch 0/5  before training" in result.stdout and "early stop" in result.stdout
    history = [json.loads(line) for line in (tmp_path / "logs/metrics.jsonl").read_text().splitlines()]
    assert [item["epoch"] for item in history] == [0, 1, 2]  # stopped after 2 epochs without a better recall
    assert history[0]["train_loss"] is None and (tmp_path / "logs/curves.png").is_file()
    epoch_zero = torch.load(tmp_path / "best.pt", weights_only=True)
    assert epoch_zero["training"]["epoch"] == 0
    assert "learned-logit-scale" not in epoch_zero["spec"]  # nothing was learned yet: a fine-tune's key applies

    output = tmp_path / "start.json"
    evaluated = run_script("eval.py", "--config", "configs/demo/eval.yaml", "--model-path", str(tiny_checkpoint),
                           "--valid-data", str(tiny_dataset / "valid"), "--output", str(output))
    assert evaluated.returncode == 0, evaluated.stderr
    start = json.loads(output.read_text())
    for key in ("i2t_r1", "i2t_r5", "i2t_r10", "t2i_r1", "t2i_r5", "t2i_r10"):
        assert history[0][key] == pytest.approx(start[key], abs=1e-9), key  # eval.py's numbers, as epoch 0
