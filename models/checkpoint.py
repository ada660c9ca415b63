"""The one checkpoint reader/writer: self-contained files of tensors and plain data.

A checkpoint holds the model spec (architecture), the tokenizer's files and the weights, and, for
training checkpoints, the optimizer/scheduler/scaler/RNG state. Everything loads with
``torch.load(weights_only=True)``; files that would need pickled code are refused.
"""
import json
import os
from contextlib import contextmanager

import torch

from models.image_tower import build_image_backbone
from models.cn_clip_tower import CN_CLIP_PREFIX, build_cn_clip
from models.hf_clip_tower import HF_CLIP_PREFIX, build_hf_clip
from models.model import ContrastiveModel
from models.open_clip_tower import OPEN_CLIP_PREFIX, create_clip, split_clip
from models.text_tower import TextTower, build_text_encoder
from models.tokenizer import tokenizer_from_files
from utils.atomic_file import atomic_write
from utils.errors import UserError, first_line

FORMAT = "contrastive-checkpoint/1"


def build_model(spec):
    """Random-weight ContrastiveModel for a spec dict (see ``make_spec``; an imported CLIP's spec names
    ``open_clip:<model>``; "logit-bias": a model trained with loss siglip)."""
    model = _build_model(spec)
    if spec.get("logit-bias"):
        model.enable_logit_bias()
    return model


def _build_model(spec):
    if spec["image-model"].startswith(OPEN_CLIP_PREFIX):
        visual, dim, text, _ = split_clip(create_clip(spec["image-model"][len(OPEN_CLIP_PREFIX):]))
        return ContrastiveModel(visual, dim, text, spec["pad-token-id"], spec["embed-dim"])
    if spec["image-model"].startswith(CN_CLIP_PREFIX):
        visual, dim, text = build_cn_clip(spec["text-config"])
        return ContrastiveModel(visual, dim, text, spec["pad-token-id"], spec["embed-dim"])
    if spec["image-model"].startswith(HF_CLIP_PREFIX):
        vision, dim, text = build_hf_clip(spec["text-config"])
        return ContrastiveModel(vision, dim, text, spec["pad-token-id"], spec["embed-dim"])
    backbone, image_dim = build_image_backbone(spec["image-model"])
    if image_dim != spec["image-dim"]:
        raise UserError(f"checkpoint spec image-dim {spec['image-dim']} does not match {spec['image-model']}")
    text_tower = TextTower(build_text_encoder(json.loads(spec["text-config"])), spec["text-pooling"])
    return ContrastiveModel(backbone, image_dim, text_tower, spec["pad-token-id"], spec["embed-dim"])


def make_spec(image_model, image_dim, text_config, text_pooling, embed_dim, image_size, max_length, pad_token_id):
    """The architecture description stored in every checkpoint (plain data only)."""
    return {
        "image-model": image_model,
        "image-dim": int(image_dim),
        "text-config": json.dumps(text_config.to_dict(), sort_keys=True),
        "text-pooling": text_pooling,
        "embed-dim": embed_dim,
        "image-size": int(image_size),
        "max-length": int(max_length),
        "pad-token-id": int(pad_token_id),
    }


def same_architecture(spec, other):
    """Whether two specs build the same model (whether its temperature was learned, or a SigLIP logit bias was
    added, does not change the towers)."""
    def shape(s):
        return {key: value for key, value in s.items() if key not in ("learned-logit-scale", "logit-bias")}
    return shape(spec) == shape(other)


def save_checkpoint(path, model, spec, tokenizer_files, training_state=None):
    """Write a checkpoint atomically. ``training_state``: optional dict of plain data and tensors."""
    payload = {
        "format": FORMAT,
        "spec": spec,
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
    """(model, spec, tokenizer) from a read_checkpoint() dict; the model is on CPU in eval mode."""
    with checkpoint_contents():
        spec = payload["spec"]
        model = build_model(spec)
        model.load_state_dict(payload["state_dict"])
        tokenizer = tokenizer_from_files(payload["tokenizer"], spec["max-length"])
    return model.eval(), spec, tokenizer


def load_checkpoint(path, device="cpu"):
    """open_clip-style entry point: ``model, preprocess, tokenizer = load_checkpoint(path)``.

    model: ContrastiveModel in eval mode on ``device``; preprocess: PIL image -> FloatTensor[3,S,S];
    tokenizer: list[str] -> LongTensor[B,L].
    """
    from data.transforms import preprocess_for

    model, spec, tokenizer = model_from_checkpoint(read_checkpoint(path))
    return model.to(device), preprocess_for(spec), tokenizer
