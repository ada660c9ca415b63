"""The original project's training objective."""
import torch
import torch.nn.functional as F


def contrastive_loss(image_features, text_features, logit_scale):
    """Symmetric InfoNCE: cross-entropy over rows (image->text) plus over columns (text->image).

    Args:
        image_features: [B, D], L2-normalised; row i matches text row i.
        text_features: [B, D], L2-normalised.
        logit_scale: scalar tensor, 1 / temperature (already exponentiated, as open_clip's).
    Returns:
        scalar: CE(logits, arange) + CE(logits.T, arange) -- the original project's sum, i.e. twice open_clip's mean.
    """
    logits = logit_scale * image_features @ text_features.t()
    labels = torch.arange(logits.shape[0], device=logits.device)
    return F.cross_entropy(logits, labels) + F.cross_entropy(logits.t(), labels)
