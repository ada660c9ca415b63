"""The GPU check's own criteria, on the CPU: a correct mixed-precision path passes, a broken one fails."""
import argparse

import pytest
import torch

from bench.gpu_check import FLOOR_CAP, Fixture, check_grad_cache_fp32, check_precision, prepare_tiny_run

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


def test_bf16_passes_within_the_rounding_floor_and_says_both_numbers(fixture):
    built, reference = fixture
    ok, detail = check_precision(built, reference, torch.bfloat16, 0)
    assert ok, detail
    assert "relative gradient error" in detail and "rounding weights and images to bf16" in detail
    floor = built.floors[torch.bfloat16]
    assert 0 < floor < FLOOR_CAP  # this fixture's gradient does move under bf16 rounding: the floor is measured


@pytest.mark.parametrize("damage", [
    lambda g: {n: 2 * v for n, v in g.items()},  # a loss scale not undone
    lambda g: {n: torch.zeros_like(v) if i % 4 == 0 else v for i, (n, v) in enumerate(g.items())},  # lost grads
    lambda g: {n: v * 65536.0 for n, v in g.items()},  # GradScaler's scale left in
], ids=["doubled", "missing", "scaled"])
def test_a_broken_mixed_precision_path_fails(fixture, monkeypatch, damage):
    built, reference = fixture
    _broken(built, monkeypatch, damage)
    ok, detail = check_precision(built, reference, torch.bfloat16, 0)
    assert not ok, detail
    ok, detail = check_precision(built, reference, torch.bfloat16, 2)
    assert not ok, detail


def test_the_float32_gradient_cache_matches_the_plain_step_and_a_lost_chunk_fails(fixture, monkeypatch):
    built, reference = fixture
    ok, detail = check_grad_cache_fp32(built, reference)
    assert ok, detail
    images = built.images.clone()
    images[-2:] = torch.randn(2, *images.shape[1:], generator=torch.Generator().manual_seed(1))
    monkeypatch.setattr(built, "images", images)  # one chunk of 2 computed on the wrong images
    ok, detail = check_grad_cache_fp32(built, reference)
    assert not ok, detail
