"""torchrun/DDP: train.py under torchrun, and the helpers the objectives' global-batch gradient test spawns."""
import json
import os
import shutil

import pytest
import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel

from models import load_checkpoint
from models.loss import INFONCE
from training.objective import prepare_for_objective
from tests.conftest import run_script
from tests.test_end_to_end import assert_same_run, kill_during_run, train_args
from tests.test_grad_cache import NoScaler, assert_same, batch, gradients
from training.step import grad_cache_step, plain_step

CPU = torch.device("cpu")
pytestmark = pytest.mark.slow  # every test here runs train.py under torchrun


def local_step(model, images, ids, rank, world, mode, chunk_size, objective=INFONCE):
    """This rank's share of the batch (images [B], ids [B*k], image-major) through DDP: plain, grad cache, or
    grad cache under torch.compile (as train.py wraps them: compile(DDP(model)))."""
    half, k = images.shape[0] // world, ids.shape[0] // images.shape[0]
    local_images, local_ids = images[rank * half:(rank + 1) * half], ids[rank * half * k:(rank + 1) * half * k]
    ddp = DistributedDataParallel(model)
    if mode == "compiled-cache":
        ddp = torch.compile(ddp, backend="eager")
    if mode == "plain":
        plain_step(ddp, local_images, local_ids, CPU, None, NoScaler(), objective)
    else:
        grad_cache_step(ddp, local_images, local_ids, CPU, None, NoScaler(), chunk_size=chunk_size,
                        objective=objective)


def prepared_model(checkpoint, objective=INFONCE, siglip_checkpoint=False):
    """The tiny model made ready for ``objective`` as train.py does (training.objective), in eval mode:
    per-rank or per-chunk BatchNorm statistics would differ from the full batch's. ``siglip_checkpoint``:
    a model that already has SigLIP's bias (trained on with another loss, the bias is frozen)."""
    model, _, tokenizer = load_checkpoint(checkpoint)
    model.logit_scale.requires_grad_(True)
    if siglip_checkpoint:
        model.enable_logit_bias(-10.0)
    prepare_for_objective(model, {}, objective, learn_temperature=True)
    model.eval()
    return model, tokenizer


def rank_worker(rank, world, checkpoint, rendezvous, out_dir, cases):
    """One DDP process: for each case (name, mode, objective, captions per image, chunk) a step on this rank's
    share of the batch; rank 0 saves the gradients to out_dir/name.pt."""
    dist.init_process_group("gloo", init_method=f"file://{rendezvous}", rank=rank, world_size=world)
    try:
        for name, mode, objective, captions_per_image, chunk in cases:
            model, tokenizer = prepared_model(checkpoint, objective)
            local_step(model, *batch(tokenizer, captions_per_image=captions_per_image), rank, world, mode, chunk,
                       objective)
            if rank == 0:
                torch.save(gradients(model), os.path.join(out_dir, f"{name}.pt"))
    finally:
        dist.destroy_process_group()


def torchrun(port, *args):
    return ["-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", str(port), *args]


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
    assert_same_run(straight, killed)


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
