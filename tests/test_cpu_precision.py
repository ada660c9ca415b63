"""Training precision on a CPU: with use-amp, bf16 autocast where the CPU has it natively, else float32;
amp-dtype bfloat16 forces it, never fp16; the choice said on the precision line, kept by a resume."""
import copy

import pytest
import torch

from bench.gpu_check import worst_relative_error
from tests.helpers import (NoScaler, assert_same_checkpoints, batch, gradients, kill_during_run, prepared_model,
                           run_script, train_args)
from training.step import grad_cache_step, plain_step
from utils import device as device_module
from utils.device import training_dtype
from utils.errors import UserError

CPU = torch.device("cpu")


def test_cpu_precision_is_bf16_only_where_native_whatever_a_timing_says_and_never_fp16(monkeypatch):
    assert training_dtype(CPU, False) == (None, "use-amp false")
    probed = []
    monkeypatch.setattr(device_module, "cpu_bf16_speedup", lambda: probed.append(1) or 0.4)
    monkeypatch.setattr(device_module, "cpu_bf16_flags", lambda: [])
    dtype, why = training_dtype(CPU, True)
    assert dtype is None and "no native bf16" in why
    monkeypatch.setattr(device_module, "cpu_bf16_flags", lambda: ["avx512_bf16", "amx_bf16"])
    dtype, why = training_dtype(CPU, True)
    assert dtype == torch.bfloat16 and "native bf16 on this CPU (avx512_bf16, amx_bf16)" in why
    assert not probed  # a timing is not consulted: it varies from run to run on one machine
    assert training_dtype(CPU, True, "auto", recorded="float32") == (None, "as the run being resumed")
    assert training_dtype(CPU, True, "bfloat16") == (torch.bfloat16, "amp-dtype bfloat16")
    monkeypatch.setattr(device_module, "cpu_bf16_flags", lambda: [])
    dtype, why = training_dtype(CPU, True, "bfloat16")
    assert dtype == torch.bfloat16 and "emulated" in why
    # a resumed run computes as it did
    assert training_dtype(CPU, True, "auto", recorded="bfloat16") == (torch.bfloat16, "as the run being resumed")
    with pytest.raises(UserError, match="float16 is for CUDA only"):
        training_dtype(CPU, True, "float16")


def test_the_bf16_measurement_times_both_precisions_on_this_cpu_and_leaves_the_seeded_rng_alone():
    device_module.cpu_bf16_speedup.cache_clear()
    torch.manual_seed(3)
    expected = torch.rand(4)
    torch.manual_seed(3)
    speedup = device_module.cpu_bf16_speedup()
    assert torch.equal(torch.rand(4), expected)  # a run seeded before the probe draws as without it
    assert 0.01 < speedup < 100 and device_module.cpu_bf16_speedup() == speedup  # measured once


@pytest.mark.parametrize("chunk", [0, 4])
def test_bf16_steps_on_the_cpu_run_in_bf16_and_give_the_float32_loss(tiny_checkpoint, chunk):
    """The forced bf16 path, plain and through the gradient cache: finite gradients, not float32's (the
    autocast did act), and a loss within bf16's precision of float32's. How far the gradients are (and what the
    faster bf16 steps win over a run) is measured in docs/training.md, not asserted."""
    model, tokenizer = prepared_model(str(tiny_checkpoint))
    images, ids = batch(tokenizer, size=8)

    def step(dtype):
        copied = copy.deepcopy(model)
        if chunk:
            loss = grad_cache_step(copied, images, ids, CPU, dtype, NoScaler(), chunk)
        else:
            loss = plain_step(copied, images, ids, CPU, dtype, NoScaler())
        return loss.item(), gradients(copied)

    (loss32, reference), (loss16, measured) = step(None), step(torch.bfloat16)
    assert all(torch.isfinite(g).all() for g in measured.values()) and measured.keys() == reference.keys()
    assert worst_relative_error(measured, reference) > 0
    assert abs(loss16 - loss32) <= 2e-2 * abs(loss32), (loss16, loss32)


@pytest.mark.slow
def test_train_py_in_bf16_on_the_cpu_says_so_and_resumes_bit_for_bit(tiny_checkpoint, tiny_dataset, tmp_path):
    straight, killed = tmp_path / "straight", tmp_path / "killed"
    args = ["--epochs", "3", "--amp-dtype", "bfloat16"]
    result = run_script(*train_args(tiny_checkpoint, tiny_dataset, straight, *args))
    assert result.returncode == 0, result.stderr
    assert "precision: AMP bfloat16 on cpu (amp-dtype bfloat16" in result.stdout
    assert torch.load(straight / "last.pt", weights_only=True)["training"]["precision"] == "bfloat16"
    kill_during_run(train_args(tiny_checkpoint, tiny_dataset, killed, *args), killed)
    resumed = run_script(*train_args(tiny_checkpoint, tiny_dataset, killed, *args, "--resume",
                                     str(killed / "last.pt")))
    assert resumed.returncode == 0, resumed.stderr
    assert_same_checkpoints(straight, killed)
