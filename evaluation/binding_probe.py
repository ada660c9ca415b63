"""Binding probes: does a feature know which attribute belongs to which object, or only which words occur?

A scene's *binding facts* are the pairings of two properties of one object ("red circle", "large cell02",
"circle cell11"): a bag of words holds the properties but not these pairings. A linear probe learns to predict
a scene's facts from a frozen feature (an image's, or a caption's). On a pair (scene, the same scene with two
objects' colors, shapes, sizes or places exchanged), the probe *wins* when its logits favour the true facts over
the swapped ones. Chance is 0.5, as for compositional accuracy (evaluation.compositional); a feature that
holds the binding lets a probe reach 1.0.
"""
import torch
from torch import nn

from evaluation.compositional import swap_kinds


def fact_vocabulary(fact_lists):
    """Sorted list of every fact in ``fact_lists`` (an iterable of lists of strings)."""
    return sorted({fact for facts in fact_lists for fact in facts})


def fact_targets(fact_lists, vocabulary):
    """Multi-hot FloatTensor[N, K] of each list's facts over ``vocabulary`` (facts outside it are ignored)."""
    column = {fact: k for k, fact in enumerate(vocabulary)}
    targets = torch.zeros(len(fact_lists), len(vocabulary))
    for row, facts in enumerate(fact_lists):
        columns = [column[fact] for fact in facts if fact in column]
        targets[row, columns] = 1.0
    return targets


class LinearProbe(nn.Module):
    """Standardised features -> one logit per fact. features [N, D] -> logits [N, K]."""

    def __init__(self, mean, std, weight, bias):
        super().__init__()
        self.register_buffer("mean", mean)
        self.register_buffer("std", std)
        self.linear = nn.Linear(weight.shape[1], weight.shape[0])
        with torch.no_grad():
            self.linear.weight.copy_(weight)
            self.linear.bias.copy_(bias)

    def forward(self, features):
        return self.linear((features - self.mean) / self.std)


def fit_linear_probe(features, targets, weight_decay=1e-4, steps=200):
    """A LinearProbe fitted to ``targets`` [N, K] (0/1) from ``features`` [N, D] by full-batch L-BFGS on the
    mean binary cross-entropy plus ``weight_decay`` * ||W||^2. Deterministic for given inputs."""
    features, targets = features.float(), targets.float()
    mean = features.mean(0)
    std = features.std(0).clamp(min=1e-6)
    standardised = (features - mean) / std
    weight = torch.zeros(targets.shape[1], features.shape[1], requires_grad=True)
    bias = torch.zeros(targets.shape[1], requires_grad=True)
    optimizer = torch.optim.LBFGS([weight, bias], lr=1.0, max_iter=steps, history_size=20,
                                  line_search_fn="strong_wolfe")

    def closure():
        optimizer.zero_grad()
        loss = nn.functional.binary_cross_entropy_with_logits(standardised @ weight.T + bias, targets)
        loss = loss + weight_decay * weight.pow(2).sum()
        loss.backward()
        return loss

    optimizer.step(closure)
    return LinearProbe(mean, std, weight.detach(), bias.detach()).eval()


def swap_pair_wins(logits, true_targets, swapped_targets):
    """BoolTensor[R]: where the logits [R, K] favour the true facts over the swapped ones.

    A probe's log-likelihood of facts t is sum_k t_k log s(z_k) + (1 - t_k) log s(-z_k); the difference between
    two fact sets is sum_k (t_k - t'_k) z_k (as log s(z) - log s(-z) = z). Ties count as losses."""
    return ((true_targets - swapped_targets) * logits).sum(dim=1) > 0


def pair_accuracy(wins, swaps):
    """{"all": accuracy, "<swap>": accuracy per swap label and kind (evaluation.compositional.swap_kinds)} from
    BoolTensor wins [R] and R swap labels."""
    result = {"all": wins.float().mean().item() if len(wins) else float("nan")}
    for swap, chosen in swap_kinds(swaps).items():
        result[swap] = wins[chosen].float().mean().item()
    return result
