"""init -> train -> eval through the real scripts on a tiny generated dataset."""
import json
import os

import pytest
import torch

from models.checkpoint import model_from_checkpoint
from tests.helpers import (assert_same_checkpoints, kill_during_run, kill_inside_an_epoch, run_script, snapshot,
                           train_args)
from utils.config import load_config
from utils.config_schema import TRAIN


@pytest.mark.slow
def test_init_train_eval_end_to_end(tiny_checkpoint, tiny_dataset, tmp_path):
    before = snapshot(tiny_dataset)
    result = run_script(*train_args(tiny_checkpoint, tiny_dataset, tmp_path, "--epochs", "2", "--num-workers", "1"))
    assert result.returncode == 0, result.stderr
    assert "epoch 2/2" in result.stdout
    recorded = torch.load(tmp_path / "last.pt", weights_only=True)["training"]["precision"]
    # the shipped use-amp: bf16 on a CPU with native bf16, else float32; the log says which was used
    assert (f"precision: AMP {recorded} on cpu (use-amp: native bf16" if recorded == "bfloat16"
            else "precision: float32 on cpu (use-amp: ") in result.stdout
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
    learned = model_from_checkpoint(last)[0].scale().item()
    assert learned != pytest.approx(1 / 0.07)
    tuned = tmp_path / "fine-tune"  # learning rate 0: it saves the temperature it started from
    result = run_script(*train_args(tmp_path / "last.pt", tiny_dataset, tuned, "--epochs", "1", "--learning-rate",
                                    "0"))
    assert result.returncode == 0, result.stderr
    assert model_from_checkpoint(torch.load(tuned / "last.pt", weights_only=True))[0].scale().item() == learned

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
    assert_same_checkpoints(uninterrupted_run, killed, random_streams=workers == 0)  # see its docstring

    if workers == 0:
        changed = run_script(*train_args(tiny_checkpoint, tiny_dataset, killed, "--epochs", "6",
                                         "--resume", str(killed / "last.pt")))
        assert changed.returncode == 2 and "epochs: 4 -> 6" in changed.stderr and "--load-path" in changed.stderr
        other_split = run_script(*args, "--valid-data", str(tiny_dataset / "train"), "--resume",
                                 str(killed / "last.pt"))
        assert other_split.returncode == 2 and "valid-data:" in other_split.stderr


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
    # same weights, optimizer state, per-epoch losses and recalls; the uninterrupted run had no loader workers
    assert_same_checkpoints(uninterrupted_run, killed, random_streams=False)


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

    def loss_that_explodes_in_epoch_two(self, *args, **keywords):
        calls["n"] += 1
        loss = real_loss(self, *args, **keywords)
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
    evaluated = run_script("eval.py", "--model-path", str(tiny_checkpoint),  # configs/eval.yaml: 8 workers
                           "--valid-data", str(tiny_dataset / "valid"), "--output", str(output))
    assert evaluated.returncode == 0, evaluated.stderr
    if len(os.sched_getaffinity(0)) < 8:  # capped at the CPUs this process may use: no PyTorch warning
        assert "suggested max number of worker" not in evaluated.stderr
    start = json.loads(output.read_text())
    for key in ("i2t_r1", "i2t_r5", "i2t_r10", "t2i_r1", "t2i_r5", "t2i_r10"):
        assert history[0][key] == pytest.approx(start[key], abs=1e-9), key  # eval.py's numbers, as epoch 0


def test_a_run_log_without_matplotlib_keeps_its_metrics_and_says_why_no_curves(tmp_path, monkeypatch, caplog):
    # the GPU machine's rehearsal found train.py ending in a traceback here (bench/gpu_rehearsal.sh)
    import importlib.util

    from training.run_log import RunLog

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "matplotlib" else real(name, *a))
    log = RunLog(str(tmp_path / "logs"), [])
    log.epoch({"epoch": 1, "train_loss": 1.0, "i2t_r1": 0.5})
    log.close()
    assert (tmp_path / "logs" / "metrics.csv").is_file() and not (tmp_path / "logs" / "curves.png").exists()
    assert "matplotlib is not installed" in caplog.text and "curves.png not drawn" in caplog.text
