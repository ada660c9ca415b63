import math

import torch
import torch.nn.functional as F
from open_clip.loss import ClipLoss

from models.loss import contrastive_loss


def _features(batch, dim, seed):
    generator = torch.Generator().manual_seed(seed)
    image = F.normalize(torch.randn(batch, dim, generator=generator), dim=-1)
    text = F.normalize(torch.randn(batch, dim, generator=generator), dim=-1)
    return image, text


def test_loss_is_twice_open_clip_mean_of_both_directions():
    image, text = _features(16, 24, seed=0)
    scale = torch.tensor(1 / 0.07)
    ours = contrastive_loss(image, text, scale)
    theirs = ClipLoss()(image, text, scale)
    assert torch.allclose(ours, 2 * theirs, atol=1e-5)


def test_loss_matches_hand_computed_cross_entropies():
    image, text = _features(5, 8, seed=1)
    scale = 14.0
    similarity = (image @ text.t()).tolist()
    rows = sum(-similarity[i][i] * scale + math.log(sum(math.exp(scale * s) for s in similarity[i]))
               for i in range(5)) / 5
    cols = sum(-similarity[j][j] * scale + math.log(sum(math.exp(scale * similarity[i][j]) for i in range(5)))
               for j in range(5)) / 5
    assert math.isclose(contrastive_loss(image, text, torch.tensor(scale)).item(), rows + cols, rel_tol=1e-5)


def test_loss_gradient_flows_to_logit_scale():
    image, text = _features(8, 16, seed=2)
    log_scale = torch.tensor(math.log(1 / 0.07), requires_grad=True)
    contrastive_loss(image, text, log_scale.exp()).backward()
    assert log_scale.grad is not None and log_scale.grad.abs() > 0


def test_perfectly_aligned_pairs_give_lower_loss_than_shuffled():
    image, _ = _features(8, 16, seed=3)
    aligned = contrastive_loss(image, image, torch.tensor(20.0))
    shuffled = contrastive_loss(image, image.roll(1, dims=0), torch.tensor(20.0))
    assert aligned < shuffled
