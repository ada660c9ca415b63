"""torchrun/DDP: the global-batch loss gives each step the gradient of one process holding the whole batch."""
import os

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch.nn.parallel import DistributedDataParallel

from models import load_checkpoint
from tests.conftest import run_script
from tests.test_end_to_end import train_args
from tests.test_grad_cache import NoScaler, assert_same, batch, gradients
from training.step import grad_cache_step, plain_step

CPU = torch.device("cpu")


def _rank_worker(rank, world, checkpoint, rendezvous, out_dir):
    dist.init_process_group("gloo", init_method=f"file://{rendezvous}", rank=rank, world_size=world)
    try:
        for mode in ("plain", "cache"):
            model, _, tokenizer = load_checkpoint(checkpoint)
            model.logit_scale.requires_grad_(True)
            model.eval()  # per-rank BatchNorm statistics would differ from the full batch's
            images, ids = batch(tokenizer)
            half = images.shape[0] // world
            local_images, local_ids = images[rank * half:(rank + 1) * half], ids[rank * half:(rank + 1) * half]
            ddp = DistributedDataParallel(model)
            if mode == "plain":
                plain_step(ddp, local_images, local_ids, CPU, None, NoScaler())
            else:
                grad_cache_step(ddp, local_images, local_ids, CPU, None, NoScaler(), chunk_size=2)
            if rank == 0:
                torch.save(gradients(model), os.path.join(out_dir, f"{mode}.pt"))
    finally:
        dist.destroy_process_group()


def test_two_process_gradient_equals_one_process_on_the_global_batch(tiny_checkpoint, tmp_path):
    mp.spawn(_rank_worker, args=(2, str(tiny_checkpoint), str(tmp_path / "rendezvous"), str(tmp_path)), nprocs=2)
    model, _, tokenizer = load_checkpoint(str(tiny_checkpoint))
    model.logit_scale.requires_grad_(True)
    model.eval()
    images, ids = batch(tokenizer)
    plain_step(model, images, ids, CPU, None, NoScaler())
    reference = gradients(model)
    assert_same(reference, torch.load(tmp_path / "plain.pt"))
    assert_same(reference, torch.load(tmp_path / "cache.pt"))  # gradient cache under DDP, chunks per rank


def test_torchrun_two_processes_train_and_evaluate(tiny_checkpoint, tiny_dataset, tmp_path):
    result = run_script("-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29517",
                        *train_args(tiny_checkpoint, tiny_dataset, tmp_path, "--epochs", "2",
                                    "--grad-cache-chunk", "4"))
    assert result.returncode == 0, result.stderr[-3000:]
    assert "2 processes x 8" in result.stdout and result.stdout.count("epoch 2/2") == 1  # rank 0 prints
    last = torch.load(tmp_path / "last.pt", weights_only=True)
    assert last["training"]["epoch"] == 2 and len(last["training"]["rng"]) == 2
    assert last["training"]["metrics"]["images"] == 16 and last["training"]["metrics"]["captions"] == 80
    resumed = run_script("-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29518",
                         *train_args(tiny_checkpoint, tiny_dataset, tmp_path, "--epochs", "2", "--grad-cache-chunk",
                                     "4", "--resume", str(tmp_path / "last.pt")))
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert resumed.stdout.count("at epoch 2, step 6") == 1  # rank 0 reports; every rank restored its RNG
    result = run_script("eval.py", "--config", "configs/demo/eval.yaml", "--model-path", str(tmp_path / "best.pt"),
                        "--valid-data", str(tiny_dataset / "valid"), "--output", str(tmp_path / "r.json"))
    assert result.returncode == 0, result.stderr
