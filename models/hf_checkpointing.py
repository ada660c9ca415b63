"""Activation checkpointing of a Hugging Face model, across the transformers versions users run."""


def enable_hf_checkpointing(model):
    """Recompute each layer's activations in the backward pass instead of keeping them.

    transformers 5.2x calls it ``activation_checkpointing_enable`` (``gradient_checkpointing_enable`` is its
    deprecated alias); 5.17 and earlier, e.g. the GPU machine's, have only ``gradient_checkpointing_enable``.
    Returns False when the model has neither.
    """
    enable = getattr(model, "activation_checkpointing_enable", None) or getattr(
        model, "gradient_checkpointing_enable", None)
    if enable is None:
        return False
    enable({"use_reentrant": False})
    return True
