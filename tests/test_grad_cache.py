"""The gradient cache gives the full-batch gradient, with dropout replayed identically in its second pass."""
import pytest
import torch

from models import load_checkpoint
from models.loss import Objective, contrastive_loss
from tests.helpers import NoScaler, assert_same, batch, gradients
from training.step import grad_cache_step, plain_step

CPU = torch.device("cpu")


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


def test_grad_cache_leaves_no_gradient_where_the_loss_does_not_reach(model_and_batch):
    # Its gradient buffers are allocated before the first pass; a parameter the objective never uses (here the
    # temperature, under the cosine hinge) must end with None as after a plain step, or AdamW would decay it.
    model, (images, ids) = model_and_batch
    model.eval()
    hinge = Objective("max-violation")
    plain_step(model, images, ids, CPU, None, NoScaler(), objective=hinge)
    reference = gradients(model)
    assert model.logit_scale.grad is None and reference
    model.zero_grad(set_to_none=True)
    grad_cache_step(model, images, ids, CPU, None, NoScaler(), chunk_size=3, objective=hinge)
    assert model.logit_scale.grad is None
    assert_same(reference, gradients(model))


def test_grad_cache_adds_to_gradients_already_there(model_and_batch):
    model, (images, ids) = model_and_batch
    model.eval()
    grad_cache_step(model, images, ids, CPU, None, NoScaler(), chunk_size=3)
    once = gradients(model)
    grad_cache_step(model, images, ids, CPU, None, NoScaler(), chunk_size=3)
    assert_same({name: 2 * value for name, value in once.items()}, gradients(model))


def test_gradients_allocated_first_sees_parameters_behind_a_reentrant_checkpoint():
    # a walk of the graph before backward cannot see inside a reentrant checkpoint; the hooks do
    from torch.utils.checkpoint import checkpoint

    from training.gradients import gradients_allocated_first

    torch.manual_seed(0)
    inner, outer, unused = torch.nn.Linear(4, 4), torch.nn.Linear(4, 1), torch.nn.Linear(4, 4)
    model = torch.nn.ModuleList([inner, outer, unused])
    x = torch.randn(3, 4, requires_grad=True)
    outer(checkpoint(inner, x, use_reentrant=True)).sum().backward()
    reference = {name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None}
    model.zero_grad(set_to_none=True)
    with gradients_allocated_first(model, CPU):
        assert all(p.grad is not None for p in model.parameters())
        outer(checkpoint(inner, x, use_reentrant=True)).sum().backward()
    got = {name: p.grad for name, p in model.named_parameters() if p.grad is not None}
    assert got.keys() == reference.keys() == {"0.weight", "0.bias", "1.weight", "1.bias"}
    assert all(torch.equal(got[name], reference[name]) for name in reference)


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


def _batch_norm_buffers(model):
    return {name: b.clone() for name, b in model.image_backbone.named_buffers()}


def test_grad_checkpointing_counts_each_batch_once_in_batch_norm_statistics(tiny_checkpoint):
    model, _, tokenizer = load_checkpoint(str(tiny_checkpoint))
    checkpointed, _, _ = load_checkpoint(str(tiny_checkpoint))
    checkpointed.enable_grad_checkpointing()
    images, ids = batch(tokenizer)
    for m in (model, checkpointed):
        m.train()
        torch.manual_seed(9)
        plain_step(m, images, ids, CPU, None, NoScaler())
    before = _batch_norm_buffers(load_checkpoint(str(tiny_checkpoint))[0])
    reference, measured = _batch_norm_buffers(model), _batch_norm_buffers(checkpointed)
    assert any(not torch.equal(before[n], reference[n]) for n in before)  # the step did move them
    for name in reference:
        assert torch.equal(reference[name], measured[name]), name  # recomputation left them alone


def test_grad_cache_counts_each_chunk_once_in_batch_norm_statistics(tiny_checkpoint):
    model, _, tokenizer = load_checkpoint(str(tiny_checkpoint))
    images, ids = batch(tokenizer)
    model.train()
    grad_cache_step(model, images, ids, CPU, None, NoScaler(), chunk_size=4)
    counts = {n: int(b) for n, b in model.image_backbone.named_buffers() if n.endswith("num_batches_tracked")}
    assert counts and set(counts.values()) == {2}  # two chunks, each counted once (the replay is not)

    reference, _, _ = load_checkpoint(str(tiny_checkpoint))
    reference.train()
    with torch.no_grad():
        for chunk in images.split(4):
            reference.image_backbone(chunk)
    for name, buffer in reference.image_backbone.named_buffers():
        assert torch.allclose(buffer.float(), dict(model.image_backbone.named_buffers())[name].float(),
                              atol=1e-6), name


@pytest.mark.slow
def test_grad_checkpointing_runs_under_torch_compile(tiny_checkpoint):
    model, _, tokenizer = load_checkpoint(str(tiny_checkpoint))
    model.enable_grad_checkpointing()
    model.train()
    images, ids = batch(tokenizer)
    compiled = torch.compile(model, backend="aot_eager")  # Dynamo + AOTAutograd, no C compiler needed
    loss = plain_step(compiled, images, ids, CPU, None, NoScaler())
    assert torch.isfinite(loss) and model.image_projection.weight.grad is not None
    counts = {int(b) for n, b in model.image_backbone.named_buffers() if n.endswith("num_batches_tracked")}
    assert counts == {1}  # one step, counted once


def test_grad_checkpointing_on_a_transformers_without_activation_checkpointing_enable(model_and_batch, monkeypatch):
    """transformers 5.17 (the GPU machine's) has only gradient_checkpointing_enable: it is used there."""
    from transformers import PreTrainedModel

    from models.hf_checkpointing import enable_hf_checkpointing

    model, (images, ids) = model_and_batch
    model.train()
    torch.manual_seed(9)
    plain_step(model, images, ids, CPU, None, NoScaler())
    reference = gradients(model)
    model.zero_grad(set_to_none=True)
    newer = PreTrainedModel.activation_checkpointing_enable  # 5.2x's implementation, under 5.17's only name
    calls = []

    def gradient_checkpointing_enable(self, gradient_checkpointing_kwargs=None):
        calls.append(gradient_checkpointing_kwargs)
        newer(self, gradient_checkpointing_kwargs)
    monkeypatch.setattr(PreTrainedModel, "gradient_checkpointing_enable", gradient_checkpointing_enable)
    monkeypatch.delattr(PreTrainedModel, "activation_checkpointing_enable")
    model.enable_grad_checkpointing()
    assert calls == [{"use_reentrant": False}] and model.text_tower.encoder.is_gradient_checkpointing
    torch.manual_seed(9)
    plain_step(model, images, ids, CPU, None, NoScaler())
    assert_same(reference, gradients(model))
    assert enable_hf_checkpointing(torch.nn.Linear(2, 2)) is False  # neither method: the caller says so
