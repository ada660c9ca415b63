"""Shared helpers: configuration, metrics, embedding, training loop, logging."""
