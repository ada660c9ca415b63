"""Weight-space ensembling of two checkpoints of one architecture (WiSE-FT, Wortsman et al. 2022)."""
import torch

from utils.errors import UserError


def interpolate_weights(zero_shot, fine_tuned, alpha):
    """(1 - alpha) * zero_shot + alpha * fine_tuned for every floating tensor of two state dicts.

    alpha 0 gives the zero-shot weights, 1 the fine-tuned ones. Integer buffers (BatchNorm's
    num_batches_tracked) are taken from the fine-tuned model, and so is SigLIP's logit_bias when only the
    fine-tuned model has one. Otherwise both dicts must have the same keys and shapes.
    """
    if not 0.0 <= alpha <= 1.0:
        raise UserError(f"alpha must lie in [0, 1], got {alpha}")
    if "logit_bias" in fine_tuned and "logit_bias" not in zero_shot:
        zero_shot = {**zero_shot, "logit_bias": fine_tuned["logit_bias"]}
    if zero_shot.keys() != fine_tuned.keys():
        different = sorted(set(zero_shot) ^ set(fine_tuned))
        raise UserError(f"the checkpoints hold different weights ({', '.join(different[:3])} …): not one "
                        f"architecture")
    mixed = {}
    for name, start in zero_shot.items():
        end = fine_tuned[name]
        if start.shape != end.shape:
            raise UserError(f"'{name}' has shape {tuple(start.shape)} in one checkpoint and {tuple(end.shape)} "
                            f"in the other: not one architecture")
        if torch.is_floating_point(end):
            mixed[name] = torch.lerp(start.to(end.dtype), end, alpha)
        else:
            mixed[name] = end.clone()
    return mixed
