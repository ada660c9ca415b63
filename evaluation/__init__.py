"""Evaluation: the one embedding path, R@k, compositional accuracy and the cue-only recall ceiling."""
