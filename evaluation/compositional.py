"""Compositional accuracy (Yuksekgonul et al. 2023's ARO idea, on a dataset's own swapped captions): how often
an image's true caption scores above the same caption with attributes or roles exchanged. Chance is 0.5; a
bag-of-words model, blind to which word binds to which, sits near it."""
import torch


def compositional_accuracy(image_features, caption_features, negative_features, image_rows, swaps):
    """image_features [N, D]; caption_features, negative_features [R, D]; image_rows [R] (row of each pair's
    image); swaps: R labels, a label "kind/part" counted under both "kind" and "kind/part" (position/relation).
    Returns {"compositional": accuracy over all R, "compositional-margin": the mean of cos(image, caption) -
    cos(image, its twin), "compositional/<swap>": per label}. Ties count as failures."""
    image = image_features[torch.as_tensor(image_rows, dtype=torch.long)]
    margin = (image * caption_features).sum(dim=1) - (image * negative_features).sum(dim=1)
    wins = (margin > 0).float()
    metrics = {"compositional": wins.mean().item(), "compositional-margin": margin.mean().item(),
               "compositional-pairs": len(wins)}
    for swap, chosen in swap_kinds(swaps).items():
        metrics[f"compositional/{swap}"] = wins[chosen].mean().item()
    return metrics


def swap_kinds(swaps):
    """{label: BoolTensor [R]} for R swap labels: each label's rows, and for a label "kind/part" (position/relation)
    also its kind's rows, all of its parts together. Empty labels are left out."""
    kinds = {label.split("/", 1)[0] for label in swaps if "/" in label}
    return {swap: torch.tensor([label == swap or label.startswith(swap + "/") for label in swaps], dtype=torch.bool)
            for swap in sorted((set(swaps) | kinds) - {""})}


def format_compositional(metrics):
    """One line for the report, e.g. 'compositional accuracy 0.712 over 4,650 caption pairs (chance 0.5):
    color 0.80, position 0.55, ...'."""
    parts = [f"{key.split('/', 1)[1]} {value:.3f}" for key, value in metrics.items() if key.startswith("compositional/")]
    return (f"compositional accuracy {metrics['compositional']:.3f} over {metrics['compositional-pairs']:,} caption "
            f"pairs (true caption above its swapped twin; chance 0.5; mean cosine margin "
            f"{metrics['compositional-margin']:+.4f})" + (": " + ", ".join(parts) if parts else ""))
