"""AdamW groups: weight decay only on matrices and kernels; layer-wise learning-rate decay down each tower."""
import pytest
import torch

from models import load_checkpoint
from training.optimizer import OptimizerSettings, make_optimizer

CPU = torch.device("cpu")


def config(layer_decay):
    return OptimizerSettings(learning_rate=1e-3, weight_decay=0.1, layer_decay=layer_decay, cosine=False)


def lr_of(optimizer):
    return {id(p): group["lr"] for group in optimizer.param_groups for p in group["params"]}


def test_without_layer_decay_there_are_the_two_usual_groups(tiny_checkpoint):
    model, _, _ = load_checkpoint(str(tiny_checkpoint))
    optimizer, _ = make_optimizer(model, config(1.0), CPU, 10, 0)
    assert [g["weight_decay"] for g in optimizer.param_groups] == [0.1, 0.0]
    assert all(p.ndim >= 2 for p in optimizer.param_groups[0]["params"])
    assert set(lr_of(optimizer).values()) == {1e-3}


def test_layer_decay_lowers_the_rate_layer_by_layer_down_each_tower(tiny_checkpoint):
    model, _, _ = load_checkpoint(str(tiny_checkpoint))
    optimizer, scheduler = make_optimizer(model, config(0.5), CPU, 10, 0)
    rates = lr_of(optimizer)
    trainable = [p for p in model.parameters() if p.requires_grad]
    assert sorted(rates) == sorted(id(p) for p in trainable)  # every parameter in exactly one group
    for head in (model.image_projection.weight, model.text_projection.weight, model.logit_scale):
        assert rates[id(head)] == pytest.approx(1e-3)
    image_layers, text_layers = model.tower_layers()
    for layers in (image_layers, text_layers):
        for position, layer in enumerate(layers):
            expected = 1e-3 * 0.5 ** (len(layers) - position)
            assert all(rates[id(p)] == pytest.approx(expected) for p in layer.parameters()), position
    assert scheduler.get_last_lr()[0] == pytest.approx(1e-3)  # the logged lr is the heads' (first group)
    decayed = {id(p) for g in optimizer.param_groups if g["weight_decay"] for p in g["params"]}
    assert all((p.ndim >= 2) == (id(p) in decayed) for p in trainable)
