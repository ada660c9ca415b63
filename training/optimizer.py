"""AdamW over the trainable parameters, with weight decay where it belongs, and its schedule."""
import torch

from training.schedule import warmup_cosine


def parameter_groups(model, weight_decay):
    """Weight decay on matrices and kernels only; none on biases, norms and the logit scale."""
    decay, no_decay = [], []
    for parameter in model.parameters():
        if parameter.requires_grad:
            (decay if parameter.ndim >= 2 else no_decay).append(parameter)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def make_optimizer(model, config, device, total_steps):
    """(AdamW, LambdaLR) from the config's learning-rate, weight-decay, warmup-steps and lr-schedule."""
    optimizer = torch.optim.AdamW(parameter_groups(model, config["weight-decay"]), lr=config["learning-rate"],
                                  fused=device.type == "cuda")
    scheduler = warmup_cosine(optimizer, config["warmup-steps"], total_steps, config["lr-schedule"] == "cosine")
    return optimizer, scheduler
