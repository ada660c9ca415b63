"""models/blocked_info_nce.py: the big-batch InfoNCE equals CE(logits, arange) + CE(logits.T, arange) in value
and gradient, with blocks that do not divide the batch, and the objective takes it from BLOCKED_FROM on."""
import pytest
import torch
import torch.nn.functional as F

import models.blocked_info_nce as blocked
from models.loss import BLOCKED_FROM, INFONCE


def _reference(image, text, scale):
    logits = scale * image @ text.t()
    labels = torch.arange(len(image))
    return F.cross_entropy(logits, labels) + F.cross_entropy(logits.t(), labels)


def _leaves(count, dim=8, seed=0, dtype=torch.float32, scale=14.0):
    generator = torch.Generator().manual_seed(seed)
    image = F.normalize(torch.randn(count, dim, generator=generator, dtype=dtype), dim=-1)
    text = F.normalize(image + 0.7 * torch.randn(count, dim, generator=generator, dtype=dtype), dim=-1)
    return [tensor.requires_grad_() for tensor in (image, text, torch.tensor(scale, dtype=dtype))]


@pytest.mark.parametrize("block_elements", [7 * 13, 13 * 13, 2 ** 22])  # 7 rows of 13, one block, one block
def test_value_and_gradient_equal_the_two_cross_entropies(monkeypatch, block_elements):
    monkeypatch.setattr(blocked, "BLOCK_ELEMENTS", block_elements)
    ours_leaves, reference_leaves = _leaves(13), _leaves(13)
    ours = blocked.blocked_info_nce(*ours_leaves)
    reference = _reference(*reference_leaves)
    ours.backward()
    reference.backward()
    assert torch.allclose(ours, reference, atol=1e-5)
    for mine, theirs in zip(ours_leaves, reference_leaves):
        assert torch.allclose(mine.grad, theirs.grad, atol=1e-5)


def test_gradcheck_in_float64(monkeypatch):
    monkeypatch.setattr(blocked, "BLOCK_ELEMENTS", 3 * 6)
    assert torch.autograd.gradcheck(blocked.blocked_info_nce, _leaves(6, dim=4, dtype=torch.float64, scale=3.0))


def test_a_frozen_temperature_gets_no_gradient():
    image, text, _ = _leaves(5)
    loss = blocked.blocked_info_nce(image, text, torch.tensor(10.0))
    loss.backward()
    assert image.grad is not None and text.grad is not None


def test_the_objective_uses_it_from_blocked_from_and_holds_no_batch_square(monkeypatch):
    count = int(BLOCKED_FROM ** 0.5)  # 2,048 pairs
    image, text, scale = _leaves(count, dim=16)
    calls = []
    real = blocked._BlockedInfoNCE.apply
    monkeypatch.setattr(blocked._BlockedInfoNCE, "apply", lambda *a: calls.append(1) or real(*a))
    loss = INFONCE(image, text, scale)
    assert calls == [1]
    saved = [tensor.numel() for tensor in loss.grad_fn.saved_tensors]
    assert max(saved) < count * count // 4  # features and logsumexps, no [N, N] matrix kept for backward
    assert torch.allclose(loss, _reference(image, text, scale), atol=1e-4)
    INFONCE(image[:count // 2], text[:count // 2], scale)
    assert calls == [1]  # below BLOCKED_FROM: the cross-entropies
