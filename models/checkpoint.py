"""The one checkpoint reader/writer: self-contained files of tensors and plain data.

A checkpoint holds the model spec (architecture), the tokenizer's files and the weights, and, for
training checkpoints, the optimizer/scheduler/scaler/RNG state. Everything loads with
``torch.load(weights_only=True)``; files that would need pickled code are refused.
"""
import hashlib
import json
import os
from contextlib import contextmanager

import torch

from models.model import ContrastiveModel
from models.registry import build_towers
from models.spec import ModelSpec
from models.tokenizer import tokenizer_from_files
from utils.atomic_file import atomic_write
from utils.errors import UserError, first_line

FORMAT = "contrastive-checkpoint/1"


def build_model(spec):
    """Random-weight ContrastiveModel for a ModelSpec (or its on-disk dict): the towers come from their
    family's builder (models.registry); "logit-bias": a model trained with loss siglip."""
    spec = ModelSpec.from_dict(spec)
    image_tower, image_dim, text_tower = build_towers(spec)
    model = ContrastiveModel(image_tower, image_dim, text_tower, spec.pad_token_id, spec.embed_dim)
    if spec.logit_bias:
        model.enable_logit_bias()
    return model


def make_spec(image_model, image_dim, text_config, text_pooling, embed_dim, image_size, max_length, pad_token_id,
              text_ngram=0, image_pooling="avg"):
    """The ModelSpec of two separate towers: an image family's backbone and a Hugging Face text encoder
    (``text_config``: its transformers config)."""
    return ModelSpec(image_model=image_model, image_dim=int(image_dim), text_encoder_config=text_config.to_dict(),
                     text_pooling=text_pooling, embed_dim=embed_dim, image_size=int(image_size),
                     max_length=int(max_length), pad_token_id=int(pad_token_id), text_ngram=int(text_ngram),
                     image_pooling=image_pooling)


def same_architecture(spec, other):
    """Whether two specs (ModelSpecs or on-disk dicts) build the same model (whether its temperature was
    learned, or a SigLIP logit bias was added, does not change the towers)."""
    return ModelSpec.from_dict(spec).same_architecture(other)


def save_checkpoint(path, model, spec, tokenizer_files, training_state=None):
    """Write a checkpoint atomically. ``training_state``: optional dict of plain data and tensors."""
    payload = {
        "format": FORMAT,
        "spec": ModelSpec.from_dict(spec).to_dict(),  # plain data, checked: unknown keys are refused
        "tokenizer": tokenizer_files,
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
    }
    if training_state is not None:
        payload["training"] = training_state
    atomic_write(path, lambda stream: torch.save(payload, stream))


def read_checkpoint(path):
    """Return the checkpoint dict; UserError if missing, not ours, or needing pickled code."""
    if not os.path.isfile(path):
        raise UserError(f"checkpoint '{path}' not found (init.py writes checkpoints/pretrain.pt, "
                        f"train.py writes best-path and last-path)")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # UnpicklingError, RuntimeError, EOFError… all mean "not loadable safely"
        raise UserError(f"refusing to load '{path}': not a plain-data checkpoint loadable with "
                        f"torch.load(weights_only=True) ({first_line(error)})") from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise UserError(f"'{path}' is not a Contrastive checkpoint (expected format {FORMAT}); "
                        f"create one with init.py")
    return payload


def model_fingerprint(payload):
    """sha256 over the model spec and every weight of a read_checkpoint() dict: index folders and ONNX
    exports name the model they came from with it, and refuse to mix embeddings of different models."""
    digest = hashlib.sha256(json.dumps(payload["spec"], sort_keys=True).encode())
    for name in sorted(payload["state_dict"]):
        digest.update(name.encode())
        digest.update(payload["state_dict"][name].numpy().tobytes())
    return digest.hexdigest()


@contextmanager
def checkpoint_contents():
    """Turn any error while taking a read_checkpoint() dict apart into one UserError.

    A damaged or hand-made file fails in many ways: missing keys, wrong types, wrong shapes.
    """
    try:
        yield
    except UserError:
        raise
    except Exception as error:
        raise UserError(f"checkpoint is damaged or incomplete ({type(error).__name__}: {first_line(error)})") from None


def model_from_checkpoint(payload):
    """(model, spec, tokenizer) from a read_checkpoint() dict; the model is on CPU in eval mode.
    spec: a ModelSpec (the checkpoint's ``spec`` dict read by ModelSpec.from_dict)."""
    with checkpoint_contents():
        spec = ModelSpec.from_dict(payload["spec"])
        model = build_model(spec)
        model.load_state_dict(payload["state_dict"])
        tokenizer = tokenizer_from_files(payload["tokenizer"], spec.max_length)
    return model.eval(), spec, tokenizer


def load_checkpoint(path, device="cpu"):
    """open_clip-style entry point: ``model, preprocess, tokenizer = load_checkpoint(path)``.

    model: ContrastiveModel in eval mode on ``device``; preprocess: PIL image -> FloatTensor[3,S,S];
    tokenizer: list[str] -> LongTensor[B,L].
    """
    from data.transforms import preprocess_for

    model, spec, tokenizer = model_from_checkpoint(read_checkpoint(path))
    return model.to(device), preprocess_for(spec), tokenizer
