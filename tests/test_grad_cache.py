"""The gradient cache gives the full-batch gradient, with dropout replayed identically in its second pass."""
import pytest
import torch

from models import load_checkpoint
from models.loss import contrastive_loss
from training.step import grad_cache_step, plain_step

CPU = torch.device("cpu")


class NoScaler:
    """GradScaler stand-in with scaling off (what training uses on CPU)."""

    def scale(self, loss):
        return loss


def batch(tokenizer, size=8):
    generator = torch.Generator().manual_seed(11)
    images = torch.randn(size, 3, 32, 32, generator=generator)
    words = ["red", "blue", "green", "circle", "square", "left", "right", "big"]
    captions = [" ".join(words[(i * 3 + j) % len(words)] for j in range(2 + i % 4)) for i in range(size)]
    return images, tokenizer(captions)


def gradients(model):
    return {name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None}


def assert_same(a, b, tol=1e-5):
    assert a.keys() == b.keys() and len(a) > 10
    for name in a:
        assert torch.allclose(a[name], b[name], atol=tol, rtol=1e-4), (name, (a[name] - b[name]).abs().max())


@pytest.fixture()
def model_and_batch(tiny_checkpoint):
    model, _, tokenizer = load_checkpoint(str(tiny_checkpoint))
    model.logit_scale.requires_grad_(True)
    return model, batch(tokenizer)


def test_grad_cache_equals_plain_full_batch_gradient(model_and_batch):
    model, (images, ids) = model_and_batch
    model.eval()  # BatchNorm on running statistics and no dropout: chunking cannot change anything
    plain_step(model, images, ids, CPU, None, NoScaler())
    reference = gradients(model)
    model.zero_grad(set_to_none=True)
    loss = grad_cache_step(model, images, ids, CPU, None, NoScaler(), chunk_size=3)
    assert_same(reference, gradients(model))
    assert "logit_scale" in reference
    assert torch.isfinite(loss)


def _reference_with_dropout(model, images, ids, chunk):
    """Plain training that holds the whole graph, drawing dropout chunk by chunk as the cache does."""
    parts = [model(i, t) for i, t in zip(images.split(chunk), ids.split(chunk))]
    image_features = torch.cat([p[0] for p in parts])
    text_features = torch.cat([p[1] for p in parts])
    contrastive_loss(image_features, text_features, parts[0][2]).backward()
    return gradients(model)


def test_grad_cache_replays_dropout_in_the_second_pass(model_and_batch):
    model, (images, ids) = model_and_batch
    model.train()
    model.image_backbone.eval()  # BatchNorm would see chunk statistics; dropout stays on
    torch.manual_seed(5)
    reference = _reference_with_dropout(model, images, ids, chunk=3)
    model.zero_grad(set_to_none=True)
    torch.manual_seed(5)
    grad_cache_step(model, images, ids, CPU, None, NoScaler(), chunk_size=3)
    assert_same(reference, gradients(model))

    # Control: without the replay the second pass draws new dropout masks and the gradient is wrong.
    model.zero_grad(set_to_none=True)
    torch.manual_seed(5)
    grad_cache_step(model, images, ids, CPU, None, NoScaler(), chunk_size=3, replay_rng=False)
    unreplayed = gradients(model)
    assert max((unreplayed[n] - reference[n]).abs().max().item() for n in reference) > 1e-4


def test_grad_checkpointing_keeps_the_gradient(model_and_batch):
    model, (images, ids) = model_and_batch
    model.train()  # BatchNorm on batch statistics and dropout on: both are recomputed identically
    torch.manual_seed(9)
    plain_step(model, images, ids, CPU, None, NoScaler())
    reference = gradients(model)
    model.zero_grad(set_to_none=True)
    model.enable_grad_checkpointing()
    torch.manual_seed(9)
    plain_step(model, images, ids, CPU, None, NoScaler())
    assert_same(reference, gradients(model))
