"""The configured training objective (loss, hard-negative-beta, max-violation-margin), checked in one place,
and what it asks of the model: SigLIP's logit bias, whether the temperature is used at all."""
import logging

from models.loss import SIGLIP_INIT_BIAS, SIGLIP_INIT_SCALE, Objective
from utils.errors import UserError

logger = logging.getLogger(__name__)


def objective_from_config(config):
    """The Objective of a train config; UserError for keys that do not apply to the chosen loss."""
    if config["hard-negative-beta"] and config["loss"] != "infonce":
        raise UserError(f"hard-negative-beta weighs the negatives of loss infonce; {config['config-path']} "
                        f"chooses loss {config['loss']} (set hard-negative-beta: 0, or loss: infonce)")
    return Objective(config["loss"], config["hard-negative-beta"], config["max-violation-margin"],
                     negatives_per_image=1 if config["compositional-negatives"] else 0)


def prepare_for_objective(model, spec, objective, learn_temperature):
    """Give the model what ``objective`` trains and freeze what it ignores, in place. Returns the spec to save.

    siglip: a learnable logit bias. The first siglip run from a model starts at Zhai et al.'s logit scale 10
    and bias -10 whatever the temperature key says; a siglip checkpoint keeps its learned ones.
    max-violation: no temperature; the logit scale is left untouched (an unused trainable parameter would
    also stall DDP, which waits for its gradient).
    """
    if objective.needs_bias:
        if model.enable_logit_bias(SIGLIP_INIT_BIAS):
            model.set_temperature(1 / SIGLIP_INIT_SCALE, learn_temperature)
            logger.info(f"loss siglip: logit scale {SIGLIP_INIT_SCALE:g} and bias {SIGLIP_INIT_BIAS:g} to start "
                        f"(Zhai et al. 2023; the temperature key is not used)")
        model.logit_bias.requires_grad_(True)
        if not learn_temperature:
            logger.warning("loss siglip with learn-temperature false: the logit scale stays at "
                           f"{model.scale().item():.3g} (Zhai et al. learn it; set learn-temperature: true)")
        return {**spec, "logit-bias": True}
    if model.logit_bias is not None:
        model.logit_bias.requires_grad_(False)  # a siglip checkpoint trained on with another loss
    if objective.kind == "max-violation":
        if learn_temperature:
            logger.info("loss max-violation has no temperature: learn-temperature does not apply")
        model.logit_scale.requires_grad_(False)
    return spec
