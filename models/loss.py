"""Training objectives over a batch's image-text similarities, chosen by the ``loss`` key.

Every objective takes image_features [N, D] and text_features [T, D] (L2-normalised, all ranks' rows when
gathered) and a models.pairing.Pairing: ``owner`` [T], the image row of each text or -1 for an extra
negative, and optionally each text's key (equal captions). Texts come image-major: image i's k captions
(``captions-per-image``), then its m compositional negatives (captions with attributes or roles swapped,
NegCLIP-style), so T == (k + m) N. An image's k captions are all its positives (and, with keys, every text
equal to one of them); its negatives are negatives of every image and are no query themselves. The
functions also take a bare owner tensor.

Each objective is a function and a class registered under its ``loss`` name (models/loss_registry.py); a new
loss is both, added here (or in a module imported at the end of this one).
"""
import torch
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

from models.blocked_info_nce import blocked_info_nce
from models.loss_registry import LOSSES, Loss, register_loss
from models.pairing import Pairing, as_pairing
from utils.errors import UserError

# From this many logits (a batch of 2,048 pairs) the original project's InfoNCE is computed in blocks
# (models/blocked_info_nce.py): the [N, N] matrices would otherwise dominate the gradient cache's memory.
BLOCKED_FROM = 2 ** 22


def default_owner(image_features, text_features, negatives_per_image=0):
    """owner [T] for texts laid out image-major: image i's k captions, then its m negatives (owner -1)."""
    images, texts = image_features.shape[0], text_features.shape[0]
    if texts % images:
        raise ValueError(f"{texts} texts for {images} images: not a whole number of texts per image")
    group = texts // images
    owner = torch.arange(images, device=image_features.device).repeat_interleave(group)
    if negatives_per_image:
        owner[torch.arange(texts, device=owner.device) % group >= group - negatives_per_image] = -1
    return owner


def _positive_log_likelihood(logits, positive, beta):
    """Mean over rows of log(sum of the positives' probability) for logits [R, C], positive [R, C] bool.

    beta > 0 (HN-NCE, Radenovic et al. 2023): each row's negatives are weighted by
    w_j = n_neg * softmax_j(beta * logits_j) over the negatives (mean weight 1, harder negatives heavier).
    beta == 0 is plain (multi-positive) InfoNCE.
    """
    masked = torch.finfo(logits.dtype).min
    positives = torch.logsumexp(logits.masked_fill(~positive, masked), dim=1)
    if beta == 0:
        return (positives - torch.logsumexp(logits, dim=1)).mean()
    negative_logits = logits.masked_fill(positive, masked)
    count = (~positive).sum(dim=1).clamp(min=1).to(logits.dtype)
    # log sum_j w_j exp(l_j) = log n + logsumexp((1 + beta) l) - logsumexp(beta l), over the negatives
    weighted = (count.log() + torch.logsumexp((1 + beta) * negative_logits, dim=1)
                - torch.logsumexp(beta * negative_logits, dim=1))
    weighted = torch.where((~positive).any(dim=1), weighted, torch.full_like(weighted, -torch.inf))  # no negative
    return (positives - torch.logaddexp(positives, weighted)).mean()


def info_nce(image_features, text_features, logit_scale, owner=None, hard_negative_beta=0.0):
    """Symmetric InfoNCE: the original project's sum of image->text and text->image cross-entropies.

    Several captions per image (``owner``: a tensor [T] or a Pairing): image->text counts all of an image's
    captions as positives (-log of their summed probability); text->image has one positive per caption (or,
    with keys, every image owning an equal caption); texts owned by -1 are extra negatives for image->text
    only. ``hard_negative_beta``: HN-NCE weighting of the negatives in
    both directions. Returns a scalar.
    """
    pairs = as_pairing(default_owner(image_features, text_features) if owner is None else owner)
    plain = hard_negative_beta == 0 and pairs.keys is None
    images, texts = image_features.shape[0], text_features.shape[0]
    if plain and images * texts >= BLOCKED_FROM and _pairs_row_i_text_i(pairs.owner, images):
        return blocked_info_nce(image_features, text_features, logit_scale)
    logits = logit_scale * image_features @ text_features.t()                              # [N, T]
    if plain:
        return _single_owner_info_nce(logits, pairs.owner)
    positive = pairs.block(logits.shape[0])
    captions = pairs.queries
    return -(_positive_log_likelihood(logits, positive, hard_negative_beta)
             + _positive_log_likelihood(logits.t()[captions], positive.t()[captions], hard_negative_beta))


def _pairs_row_i_text_i(owner, images):
    """Whether owner [T] is the original project's layout: one caption per image, text i of image i."""
    return owner.shape[0] == images and torch.equal(owner, torch.arange(images, device=owner.device))


def _single_owner_info_nce(logits, owner):
    """info_nce for logits [N, T] when each caption's only positive is its owner (no equal-caption keys, no
    HN-NCE weights), as cross-entropies with class indices: no [N, T] mask or masked copy, so a big batch (the
    gradient cache's whole-batch loss) holds about two [N, T] tensors fewer (bench/grad_cache.py)."""
    images, texts = logits.shape
    captions = owner >= 0
    every_caption = _pairs_row_i_text_i(owner, images)
    if every_caption:  # the original project's pairs: row i matches text i
        image_to_text = F.cross_entropy(logits, owner)
    else:
        positive = owner[None, :] == torch.arange(images, device=owner.device)[:, None]
        image_to_text = -_positive_log_likelihood(logits, positive, 0.0)
    by_text = logits.t() if every_caption else logits.t()[captions]
    return image_to_text + F.cross_entropy(by_text, owner if every_caption else owner[captions])


def contrastive_loss(image_features, text_features, logit_scale):
    """The original project's objective: symmetric InfoNCE over a batch of pairs (row i matches text i).

    Equals CE(logits, arange) + CE(logits.T, arange): twice open_clip's ClipLoss (its mean of the two).
    """
    return info_nce(image_features, text_features, logit_scale)


def _siglip_block(image_features, text_block, logit_scale, logit_bias, positive_block):
    logits = logit_scale * image_features @ text_block.t() + logit_bias                    # [N, c]
    return -F.logsigmoid(torch.where(positive_block, logits, -logits)).sum()


def siglip(image_features, text_features, logit_scale, logit_bias, owner=None, chunk=1024):
    """SigLIP (Zhai et al. 2023): an independent binary decision per image-text pair.

    -sum log sigmoid(z_ij (t x_i.y_j + b)) / N, z = +1 for positives, -1 otherwise; as open_clip's SigLipLoss.
    Computed over blocks of ``chunk`` texts, each recomputed in backward (checkpoint), so memory is
    O(N x chunk), not O(N x T).
    """
    pairs = as_pairing(default_owner(image_features, text_features) if owner is None else owner)
    total = image_features.new_zeros(())
    for start in range(0, text_features.shape[0], chunk):
        block = slice(start, start + chunk)
        positive = pairs.block(image_features.shape[0], start, start + chunk)
        if torch.is_grad_enabled():
            total = total + checkpoint(_siglip_block, image_features, text_features[block], logit_scale,
                                       logit_bias, positive, use_reentrant=False)
        else:
            total = total + _siglip_block(image_features, text_features[block], logit_scale, logit_bias, positive)
    return total / image_features.shape[0]


def max_violation(image_features, text_features, owner=None, margin=0.2):
    """VSE++'s max-violation hinge (Faghri et al. 2018) on cosine similarities, both directions.

    Each positive pair must beat the hardest negative of its row by ``margin``: the mean over positives of
    [margin - s_pos + max_neg s]_+, image->text plus text->image. No temperature.
    """
    pairs = as_pairing(default_owner(image_features, text_features) if owner is None else owner)
    similarity = image_features @ text_features.t()                                         # [N, T]
    positive = pairs.block(similarity.shape[0])
    lowest = torch.finfo(similarity.dtype).min
    hardest_text = similarity.masked_fill(positive, lowest).max(dim=1).values              # [N]
    hardest_image = similarity.masked_fill(positive, lowest).max(dim=0).values             # [T]
    image_to_text = F.relu(margin - similarity + hardest_text[:, None])[positive].mean()
    text_to_image = F.relu(margin - similarity + hardest_image[None, :])[positive].mean()
    return image_to_text + text_to_image


@register_loss("infonce", options={"hard-negative-beta": ("hard_negative_beta", 0.0)})
class InfoNCE(Loss):
    """The original project's symmetric InfoNCE (several positives per image), HN-NCE with hard_negative_beta."""

    def __init__(self, hard_negative_beta=0.0):
        self.beta = hard_negative_beta

    def __call__(self, image_features, text_features, logit_scale, logit_bias, pairs):
        return info_nce(image_features, text_features, logit_scale, pairs, self.beta)

    def describe(self):
        return "loss: infonce" + (f", hard-negative-beta {self.beta} (HN-NCE)" if self.beta else "")


@register_loss("siglip")
class SigLIP(Loss):
    """A sigmoid per image-text pair with a learnable logit bias, from Zhai et al.'s scale 10 and bias -10
    (log 10 and -10: the many negatives start near probability 0)."""
    learns_bias = True
    start_scale_and_bias = (10.0, -10.0)

    def __init__(self, chunk=1024):
        self.chunk = chunk

    def __call__(self, image_features, text_features, logit_scale, logit_bias, pairs):
        return siglip(image_features, text_features, logit_scale, logit_bias, pairs, self.chunk)

    def describe(self):
        return "loss: siglip (sigmoid per pair, learnable bias)"


@register_loss("max-violation", options={"max-violation-margin": ("margin", None)})
class MaxViolation(Loss):
    """VSE++'s hinge on the hardest negative; cosine similarities, so no temperature."""
    uses_temperature = False

    def __init__(self, margin=0.2):
        self.margin = margin

    def __call__(self, image_features, text_features, logit_scale, logit_bias, pairs):
        return max_violation(image_features, text_features, pairs, self.margin)

    def describe(self):
        return f"loss: max-violation (VSE++ hinge, margin {self.margin})"


def swap_margin(image_features, text_features, negatives_per_image):
    """Mean over images of cos(image, its first caption) - cos(image, its first compositional negative), the
    swap of that caption (data.datasets), for the image-major layout: image_features [N, D], text_features
    [(k + m) N, D] with m = ``negatives_per_image``. A float, without gradient; > 0 when captions win."""
    images, dim = image_features.shape
    texts = text_features.detach().reshape(images, -1, dim)                                 # [N, k + m, D]
    image = image_features.detach()
    caption = (image * texts[:, 0]).sum(dim=1)
    negative = (image * texts[:, texts.shape[1] - negatives_per_image]).sum(dim=1)
    return (caption - negative).mean().item()


class Objective:
    """The configured loss with the batch layout: objective(image [N, D], text [T, D], logit_scale, logit_bias,
    owner [T], keys [T]) -> scalar; owner defaults to the image-major layout with ``negatives_per_image`` extra
    negatives after each image's captions. ``same_caption_positives``: the training step passes each text's
    key (models.pairing.text_keys) and equal captions are positives of each other's images.
    ``arguments``: the loss's constructor arguments."""

    def __init__(self, kind="infonce", negatives_per_image=0, same_caption_positives=False, **arguments):
        if kind not in LOSSES:
            raise UserError(f"loss '{kind}' unknown; choose one of {', '.join(LOSSES)}")
        self.kind, self.loss, self.negatives_per_image = kind, LOSSES[kind](**arguments), negatives_per_image
        self.same_caption_positives = same_caption_positives
        # the last default-layout batch's swap_margin (None before one, or without negatives): the training
        # loop logs it per step and per epoch, to see whether the loss separates a caption from its swap
        self.last_swap_margin = None

    @property
    def needs_bias(self):
        return self.loss.learns_bias

    def __call__(self, image_features, text_features, logit_scale, logit_bias=None, owner=None, keys=None):
        if owner is None:
            owner = default_owner(image_features, text_features, self.negatives_per_image)
            if self.negatives_per_image:
                self.last_swap_margin = swap_margin(image_features, text_features, self.negatives_per_image)
        return self.loss(image_features, text_features, logit_scale, logit_bias, Pairing(owner, keys))

    def describe(self):
        return (self.loss.describe() + (", a compositional negative per image" if self.negatives_per_image else "")
                + (", equal captions are positives of each other's images" if self.same_caption_positives else ""))


INFONCE = Objective()
