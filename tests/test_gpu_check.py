"""The GPU check's own criteria, on the CPU: a correct path passes, a broken one fails, also at the loosest bar
the GPU's fixture gets (its direction bar is the cap, 0.9: the norm bar must catch what that lets through)."""
import argparse

import pytest
import torch

import bench.gpu_check as gpu_check
from bench.gpu_check import (FP32_PATHS_TOLERANCE, Fixture, check_fused_adamw, check_grad_cache_fp32,
                             check_precision, prepare_tiny_run, rounding_floor, worst_relative_error)

CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def fixture(tmp_path_factory):
    work = str(tmp_path_factory.mktemp("gpu-check"))
    text = prepare_tiny_run(work)
    torch.manual_seed(0)
    args = argparse.Namespace(batch=8, image_size=32, image_model="resnet18", quick=True)
    built = Fixture(args, CPU, text)
    return built, built.step()


def _broken(fixture, monkeypatch, damage):
    """Make every mixed-precision step (the ones given a dtype) return damaged gradients."""
    step = fixture.step

    def damaged(*args, **kwargs):
        gradients = step(*args, **kwargs)
        mixed = (args and args[0] is not None) or kwargs.get("dtype") is not None
        return damage(gradients) if mixed else gradients
    monkeypatch.setattr(fixture, "step", damaged)


def test_bf16_passes_and_says_its_floor_and_norm_ratio(fixture):
    built, reference = fixture
    ok, detail = check_precision(built, reference, torch.bfloat16, 0)
    assert ok, detail
    assert "rounding weights and images to bf16" in detail and "x float32's" in detail
    floor = rounding_floor(built, reference, torch.bfloat16)
    assert 0 < floor < gpu_check.FLOOR_CAP  # this fixture's gradient does move under bf16 rounding
    ok, detail = check_precision(built, reference, torch.bfloat16, 2)  # through the gradient cache
    assert ok, detail


def _scaled(factor):
    return lambda g: {n: factor * v for n, v in g.items()}


@pytest.mark.parametrize("damage", [
    _scaled(0.25), _scaled(0.5), _scaled(0.75), _scaled(1.5), _scaled(2.0), _scaled(65536.0),
    lambda g: {n: torch.zeros_like(v) if i % 4 == 0 else v for i, (n, v) in enumerate(g.items())},
    lambda g: {n: 0.5 * v if n.startswith("image_backbone") else v for n, v in g.items()},
], ids=["0.25x", "0.5x", "0.75x", "1.5x", "2x", "loss-scale-left-in", "parameters-without-gradient",
        "image-tower-halved"])
@pytest.mark.parametrize("bar", ["measured", "the GPU's cap"])
def test_a_broken_mixed_precision_path_fails(fixture, monkeypatch, damage, bar):
    built, reference = fixture
    if bar == "the GPU's cap":  # the direction bar as loose as on the H200's fixture (floor 0.49 -> 0.9)
        monkeypatch.setattr(gpu_check, "rounding_floor", lambda *args: 1.0)
    _broken(built, monkeypatch, damage)
    ok, detail = check_precision(built, reference, torch.bfloat16, 0)
    assert not ok, detail


def test_the_float32_gradient_cache_passes_and_a_lost_chunk_fails_even_at_the_cuda_bar(fixture, monkeypatch):
    built, reference = fixture
    ok, detail = check_grad_cache_fp32(built, reference)
    assert ok, detail
    backward, calls = torch.autograd.backward, []

    def losing_the_first_chunk(*args, **kwargs):  # grad_cache_step: the loss's backward, then one per chunk
        calls.append(1)
        if len(calls) != 2:
            backward(*args, **kwargs)
    monkeypatch.setattr(torch.autograd, "backward", losing_the_first_chunk)
    lost = built.step(None, chunk=built.args.batch // 4)
    assert len(calls) == 1 + 4
    assert worst_relative_error(lost, reference) > FP32_PATHS_TOLERANCE["cuda"]
    calls.clear()
    ok, detail = check_grad_cache_fp32(built, reference)
    assert not ok, detail


def test_fused_adamw_steps_both_optimizers_from_one_backward_and_a_different_step_fails(fixture, monkeypatch):
    built, reference = fixture
    ok, detail = check_fused_adamw(built, reference)
    assert ok, detail
    assert "moved weights by up to 1.0e-03" in detail  # both optimizers really stepped (lr 1e-3, Adam's first step)
    adamw = torch.optim.AdamW

    def fused_with_another_lr(params, lr, fused=None, **kwargs):
        return adamw(params, lr=lr * (1.01 if fused else 1.0), fused=fused, **kwargs)
    monkeypatch.setattr(torch.optim, "AdamW", fused_with_another_lr)
    ok, detail = check_fused_adamw(built, reference)
    assert not ok, detail
