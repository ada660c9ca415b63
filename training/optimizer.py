"""AdamW over the trainable parameters, with weight decay where it belongs, and its schedule."""
from dataclasses import dataclass

import torch

from training.schedule import warmup_cosine


def parameter_groups(model, weight_decay):
    """Weight decay on matrices and kernels only; none on biases, norms and the logit scale."""
    decay, no_decay = [], []
    for parameter in model.parameters():
        if parameter.requires_grad:
            (decay if parameter.ndim >= 2 else no_decay).append(parameter)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def layer_lr_scales(model, layer_decay):
    """{id(parameter): learning-rate factor} under layer-wise decay (as BEiT and ELECTRA fine-tune).

    In each tower the last layer gets ``layer_decay``, the one before it ``layer_decay ** 2``, down to the first
    (the stem or the embeddings) with ``layer_decay ** n``; the projections, the logit scale and anything outside
    the towers' layer lists keep 1: the new or top parts move fastest, the pretrained bottom slowest.
    """
    scales = {}
    for layers in model.tower_layers():
        for position, layer in enumerate(layers):
            for parameter in layer.parameters():
                scales[id(parameter)] = layer_decay ** (len(layers) - position)
    return scales


def layered_parameter_groups(model, weight_decay, learning_rate, layer_decay):
    """AdamW groups by (learning-rate factor, weight decay or not), the factor-1 groups first (the logged lr)."""
    scales = layer_lr_scales(model, layer_decay)
    groups = {}
    for parameter in model.parameters():
        if parameter.requires_grad:
            key = (scales.get(id(parameter), 1.0), parameter.ndim >= 2)
            groups.setdefault(key, []).append(parameter)
    return [{"params": params, "weight_decay": weight_decay if decays else 0.0, "lr": learning_rate * scale}
            for (scale, decays), params in sorted(groups.items(), key=lambda item: (-item[0][0], not item[0][1]))]


@dataclass
class OptimizerSettings:
    """train.py's learning-rate, weight-decay, layer-decay and lr-schedule (cosine: True, constant: False)."""
    learning_rate: float
    weight_decay: float
    layer_decay: float = 1.0
    cosine: bool = True

    @classmethod
    def from_config(cls, config):
        return cls(config["learning-rate"], config["weight-decay"], config["layer-decay"],
                   config["lr-schedule"] == "cosine")


def make_optimizer(model, settings, device, total_steps, warmup_steps):
    """(AdamW, LambdaLR): ``warmup_steps`` of linear warmup, then cosine decay to zero over ``total_steps``
    (or constant). Under layer-decay 1 (no decay) the groups are the two of ``parameter_groups``."""
    if settings.layer_decay == 1.0:
        groups = parameter_groups(model, settings.weight_decay)
    else:
        groups = layered_parameter_groups(model, settings.weight_decay, settings.learning_rate, settings.layer_decay)
    optimizer = torch.optim.AdamW(groups, lr=settings.learning_rate, fused=device.type == "cuda")
    scheduler = warmup_cosine(optimizer, warmup_steps, total_steps, settings.cosine)
    return optimizer, scheduler
