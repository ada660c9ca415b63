"""torchrun/DDP: train.py under torchrun."""
import json
import shutil

import pytest
import torch

from tests.helpers import assert_same_checkpoints, kill_during_run, run_script, torchrun, train_args

pytestmark = pytest.mark.slow  # every test here runs train.py under torchrun


def test_torchrun_validation_measures_best_pt_and_resume_after_sigkill_is_exact(tiny_checkpoint, tiny_dataset,
                                                                                tmp_path):
    straight, killed = tmp_path / "straight", tmp_path / "killed"

    def args(out, port):  # the demo's loader settings: 2 persistent workers per process
        return torchrun(port, *train_args(tiny_checkpoint, tiny_dataset, out, "--epochs", "3",
                                          "--grad-cache-chunk", "4", "--num-workers", "2"))

    result = run_script(*args(straight, 29517))
    assert result.returncode == 0, result.stderr[-3000:]
    assert "2 processes x 8" in result.stdout and result.stdout.count("epoch 3/3") == 1  # rank 0 reports
    assert "distributed: gloo, 2 process(es)" in result.stdout
    last = torch.load(straight / "last.pt", weights_only=True)
    assert last["training"]["epoch"] == 3 and len(last["training"]["rng"]) == 2
    assert last["training"]["metrics"]["images"] == 16 and last["training"]["metrics"]["captions"] == 80

    # The recall logged for the best epoch is what eval.py measures on best.pt (rank 0's BatchNorm buffers).
    logged = torch.load(straight / "best.pt", weights_only=True)["training"]["metrics"]
    result = run_script("eval.py", "--config", "configs/demo/eval.yaml", "--model-path", str(straight / "best.pt"),
                        "--valid-data", str(tiny_dataset / "valid"), "--output", str(tmp_path / "r.json"))
    assert result.returncode == 0, result.stderr
    measured = json.loads((tmp_path / "r.json").read_text())
    for key in ("i2t_r1", "i2t_r5", "i2t_r10", "t2i_r1", "t2i_r5", "t2i_r10"):
        assert abs(measured[key] - logged[key]) <= 1e-6, (key, measured[key], logged[key])

    epoch_at_kill = kill_during_run(args(killed, 29518), killed)
    assert epoch_at_kill < 3
    resumed = run_script(*args(killed, 29519), "--resume", str(killed / "last.pt"))
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    # rank 0 alone reports; every rank restored its own random streams
    assert resumed.stdout.count(f"at epoch {epoch_at_kill}, step {3 * epoch_at_kill}") == 1, resumed.stdout
    assert_same_checkpoints(straight, killed)


def test_torchrun_survives_images_that_fail_to_decode_mid_epoch(tiny_checkpoint, tiny_dataset, tmp_path):
    data = tmp_path / "data"
    shutil.copytree(tiny_dataset, data)
    names = sorted(p.name for p in (data / "train" / "images").iterdir())
    broken = [names[5], names[20], names[33]]
    for name in broken:  # header readable, pixels not: found only when a worker decodes it
        path = data / "train" / "images" / name
        path.write_bytes(path.read_bytes()[:int(path.stat().st_size * 0.6)])
    result = run_script(*torchrun(29520, *train_args(tiny_checkpoint, data, tmp_path / "out", "--epochs", "2",
                                                     "--num-workers", "2", "--grad-cache-chunk", "4")))
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.count("epoch 2/2") == 1 and "Traceback" not in result.stderr
    for name in broken:
        assert 1 <= result.stderr.count(f"'{name}' cannot be decoded") <= 2, name  # once per rank at most
    history = torch.load(tmp_path / "out" / "last.pt", weights_only=True)["training"]["history"]
    assert [item["step"] for item in history] == [3, 6]  # no step skipped on any rank
