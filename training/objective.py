"""The configured training objective (the ``loss`` key and the keys its registered loss reads), checked in one
place, and what it asks of the model: a logit bias, a starting scale, whether the temperature is used at all."""
import logging

from models.loss import Objective
from models.loss_registry import LOSSES
from utils.errors import UserError

logger = logging.getLogger(__name__)


def objective_from_config(config):
    """The Objective of a train config; UserError for a key of another loss set to a value that asks something
    of that loss (e.g. hard-negative-beta 0.5 with loss siglip)."""
    chosen = LOSSES[config["loss"]]
    for name, loss in LOSSES.items():
        for key, (_, neutral) in loss.options.items():
            if name != chosen.name and key not in chosen.options and neutral is not None and config[key] != neutral:
                raise UserError(f"{key} applies to loss {name}; {config['config-path']} chooses loss "
                                f"{chosen.name} (set {key}: {neutral}, or loss: {name})")
    arguments = {argument: config[key] for key, (argument, _) in chosen.options.items()}
    return Objective(chosen.name, negatives_per_image=1 if config["compositional-negatives"] else 0,
                     same_caption_positives=config["same-caption-positives"], **arguments)


def prepare_for_objective(model, spec, objective, learn_temperature):
    """Give the model what ``objective`` trains and freeze what it ignores, in place. Returns the spec to save.

    A loss that learns a bias (siglip) gets one; its first run from a model starts at the loss's
    ``start_scale_and_bias`` whatever the temperature key says, and a checkpoint of it keeps its learned ones.
    A loss without temperature (max-violation): the logit scale is left untouched (an unused trainable
    parameter would also stall DDP, which waits for its gradient).
    """
    loss = objective.loss
    if loss.learns_bias:
        scale, bias = loss.start_scale_and_bias
        if model.enable_logit_bias(bias):
            model.set_temperature(1 / scale, learn_temperature)
            logger.info(f"loss {loss.name}: logit scale {scale:g} and bias {bias:g} to start "
                        f"(the temperature key is not used)")
        model.logit_bias.requires_grad_(True)
        if not learn_temperature:
            logger.warning(f"loss {loss.name} with learn-temperature false: the logit scale stays at "
                           f"{model.scale().item():.3g} (set learn-temperature: true to learn it)")
        return spec.replace(logit_bias=True)
    if model.logit_bias is not None:
        model.logit_bias.requires_grad_(False)  # a checkpoint with a bias trained on with another loss
    if not loss.uses_temperature:
        if learn_temperature:
            logger.info(f"loss {loss.name} has no temperature: learn-temperature does not apply")
        model.logit_scale.requires_grad_(False)
    return spec
