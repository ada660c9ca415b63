"""A pretrained open_clip / OpenAI CLIP as the kit's joint model: open_clip builds the architecture (its
ModifiedResNet or ViT and its text transformer), the kit wraps it; nothing is downloaded.

The image tower is CLIP's ``visual`` (it ends in CLIP's own projection), followed by the kit's image
projection initialised to the identity; the text tower runs CLIP's ``encode_text`` (EOT pooling and text
projection). So ``encode_image``/``encode_text`` of the imported model equal CLIP's normalised features.
"""
import functools
import logging
import os
import tempfile
import zipfile

import torch
from torch import nn

from models.registry import clip_importers, clip_models
from models.spec import ModelSpec
from utils.errors import UserError, first_line

OPEN_CLIP_PREFIX = "open_clip:"
TORCHSCRIPT_ONLY = ("clip-torchscript applies to OpenAI's archives, imported as open_clip:<name>-quickgelu "
                    "(e.g. open_clip:RN50-quickgelu)")
BPE_FILE = "bpe_simple_vocab_16e6.txt.gz"  # open_clip's tokenizer vocabulary, stored in the checkpoint


def _open_clip():
    try:
        import open_clip
    except ImportError:
        raise UserError("importing a CLIP needs the open_clip_torch package (pip install open_clip_torch)") from None
    return open_clip


class OpenClipText(nn.Module):
    """CLIP's text side (a models.registry.Tower): the open_clip CLIP less its image side and logit scale.

    forward(input_ids [B,77], attention_mask ignored: CLIP masks causally and pools the EOT token) -> features
    [B, embed_dim], CLIP's text projection applied.
    """

    imported = True  # locking and layer decay require its layer list to cover every parameter

    def __init__(self, clip):
        super().__init__()
        clip.visual = nn.Identity()  # the image side lives in the kit's image tower
        clip.logit_scale = None      # and the logit scale in the kit's model
        self.clip = clip
        self.output_dim = clip.text_projection.shape[1] if isinstance(clip.text_projection, torch.Tensor) \
            else clip.text_projection.out_features

    @property
    def encoder(self):
        """The transformer whose blocks locking counts."""
        return self.clip.transformer

    def layer_groups(self):
        """Locking and layer decay count these, input side first: embeddings, blocks, final norm + projection."""
        clip = self.clip
        return [[clip.token_embedding, clip.positional_embedding], *clip.transformer.resblocks,
                [clip.ln_final, clip.text_projection]]

    def enable_checkpointing(self):
        self.clip.transformer.grad_checkpointing = True

    def prepare_for_export(self):
        pass  # open_clip's attention is nn.MultiheadAttention, which exports as it is

    def forward(self, input_ids, attention_mask=None):
        return self.clip.encode_text(input_ids)


class OpenClipTokenizer:
    """open_clip's BPE tokenizer with the kit's interface: list[str] -> LongTensor[B, context_length]."""

    def __init__(self, bpe_path, context_length, where=None):
        from models.tokenizer import check_tokenizer

        self.tokenizer = _open_clip().tokenizer.SimpleTokenizer(bpe_path, context_length=context_length)
        with open(bpe_path, "rb") as handle:
            self._bpe = handle.read()
        self.max_length = context_length
        self.pad_token_id = 0
        check_tokenizer(self, len(self.tokenizer.encoder), where or f"'{bpe_path}'")

    def __call__(self, texts):
        return self.tokenizer([texts] if isinstance(texts, str) else list(texts)).long()

    def to_files(self):
        return {BPE_FILE: torch.frombuffer(bytearray(self._bpe), dtype=torch.uint8).clone()}


def tokenizer_from_bpe_bytes(data, context_length, where="the checkpoint"):
    with tempfile.TemporaryDirectory() as directory:
        path = os.path.join(directory, BPE_FILE)
        with open(path, "wb") as handle:
            handle.write(data)
        return OpenClipTokenizer(path, context_length, where)


def create_clip(name):
    """open_clip's model ``name`` with random weights (no download)."""
    open_clip = _open_clip()
    if name not in open_clip.list_models():
        raise UserError(f"clip-model '{OPEN_CLIP_PREFIX}{name}': open_clip knows no model '{name}' "
                        f"(see open_clip.list_models())")
    text_cfg = open_clip.get_model_config(name).get("text_cfg", {})
    if "hf_model_name" in text_cfg or "hf_tokenizer_name" in text_cfg or text_cfg.get("context_length", 77) != 77:
        raise UserError(f"clip-model '{OPEN_CLIP_PREFIX}{name}': only open_clip's plain CLIP models (BPE tokenizer, "
                        f"context 77: RN50, RN101, ViT-B-32, ViT-L-14, ... and their -quickgelu variants) are "
                        f"imported yet")
    logging.disable(logging.WARNING)  # open_clip warns "no pretrained weights loaded": ours come next
    try:
        clip = open_clip.create_model(name, pretrained=None)
    finally:
        logging.disable(logging.NOTSET)
    if type(clip).__name__ != "CLIP":
        raise UserError(f"clip-model '{OPEN_CLIP_PREFIX}{name}' is an open_clip {type(clip).__name__}; only its plain "
                        f"CLIP models are imported yet")
    return clip


def _vit_layer_groups(visual):
    """A CLIP ViT's layers, input side first: patch and position embeddings, blocks, head."""
    return [[visual.conv1, visual.class_embedding, visual.positional_embedding, visual.ln_pre],
            *visual.transformer.resblocks, [visual.ln_post, visual.proj]]


def declare_vit_layers(visual):
    """``visual``, given ``layer_groups()`` if it is a CLIP ViT (open_clip's or Chinese-CLIP's, which share
    OpenAI's layout): its embeddings and projection sit outside its blocks. ModifiedResNets need none."""
    if hasattr(visual, "class_embedding"):
        visual.layer_groups = functools.partial(_vit_layer_groups, visual)
    return visual


def split_clip(clip):
    """(image tower, its output size, text tower, preprocess config) from one open_clip CLIP."""
    visual = declare_vit_layers(clip.visual)
    preprocess = dict(getattr(visual, "preprocess_cfg", {}))
    text = OpenClipText(clip)
    return visual, text.output_dim, text, preprocess


def _torchscript_state_dict(path):
    """OpenAI's archive as open_clip reads it: its state dict, float32, less the sizes stored beside it."""
    try:
        archive = torch.jit.load(path, map_location="cpu")
    except Exception as error:
        raise UserError(f"clip-checkpoint '{path}' is neither a state dict nor a TorchScript archive "
                        f"({first_line(error)})") from None
    return {name: tensor.float() if tensor.is_floating_point() else tensor
            for name, tensor in archive.state_dict().items()
            if name not in ("input_resolution", "context_length", "vocab_size")}


def read_clip_state_dict(path, torchscript=False):
    """The weights of an open_clip checkpoint: a state dict (.pt/.bin/.pth via torch.load(weights_only=True)
    or .safetensors), bare or under "state_dict", with DDP's "module." prefix removed. With ``torchscript``,
    also OpenAI's TorchScript archives (their weights, in float32, without the three size entries)."""
    if not os.path.isfile(path):
        raise UserError(f"clip-checkpoint '{path}' not found: download the model's open_clip weights file "
                        f"(e.g. RN50's from the open_clip model zoo) and point clip-checkpoint at it")
    try:
        if path.endswith(".safetensors"):
            from safetensors.torch import load_file

            state = load_file(path)
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # TorchScript archives and pickled code fail here, as they should
        if torchscript and zipfile.is_zipfile(path):
            return _torchscript_state_dict(path)
        raise UserError(f"clip-checkpoint '{path}' is not a weights-only state dict ({first_line(error)}); "
                        f"for one of OpenAI's TorchScript archives, from a source you trust, set clip-torchscript "
                        f"true (or save model.state_dict() once with open_clip)") from None
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise UserError(f"clip-checkpoint '{path}' holds no state dict of tensors")
    return {(k[len("module."):] if k.startswith("module.") else k): v for k, v in state.items()}


def need_clip_checkpoint(clip_checkpoint):
    """The importers of weights files: UserError when clip-checkpoint is not given."""
    if not clip_checkpoint:
        raise UserError("clip-model needs clip-checkpoint: the weights file of that model (nothing is downloaded)")


@clip_models.register(OPEN_CLIP_PREFIX, "open_clip:<name> (e.g. open_clip:RN50)")
def build_open_clip(spec):
    """Random-weight (image tower, image_dim, text tower) of an imported open_clip CLIP's ModelSpec."""
    visual, dim, text, _ = split_clip(create_clip(spec.open_clip_model))
    return visual, dim, text


@clip_importers.register(OPEN_CLIP_PREFIX, "open_clip:<name> (e.g. open_clip:RN50) with clip-checkpoint")
def model_from_open_clip(name, checkpoint, build_model_from_parts, torchscript=False):
    """(model, spec, tokenizer) of the CLIP ``name`` with the weights of ``checkpoint``.

    ``build_model_from_parts(visual, dim, text, pad_token_id, logit_scale)`` makes the kit's model.
    ``torchscript``: the file may also be one of OpenAI's TorchScript archives (only for -quickgelu models:
    OpenAI's use QuickGELU; under another name the weights load but compute other features).
    """
    if torchscript and not name.endswith("-quickgelu"):
        raise UserError(TORCHSCRIPT_ONLY)
    need_clip_checkpoint(checkpoint)
    open_clip = _open_clip()
    clip = create_clip(name)
    try:
        clip.load_state_dict(read_clip_state_dict(checkpoint, torchscript))
    except RuntimeError as error:
        raise UserError(f"clip-checkpoint '{checkpoint}' does not fit open_clip's '{name}': "
                        f"{first_line(error)}") from None
    logit_scale = clip.logit_scale.detach().clone()
    context_length = clip.context_length
    visual, dim, text, preprocess = split_clip(clip)
    tokenizer = OpenClipTokenizer(os.path.join(os.path.dirname(open_clip.__file__), BPE_FILE), context_length)
    model = build_model_from_parts(visual, dim, text, tokenizer.pad_token_id, logit_scale)
    size = preprocess.get("size", 224)
    spec = ModelSpec(image_model=OPEN_CLIP_PREFIX + name, image_dim=int(dim), open_clip_model=name,
                     text_pooling="eot", image_size=int(size if isinstance(size, int) else size[0]),
                     max_length=int(context_length), pad_token_id=tokenizer.pad_token_id,
                     image_mean=preprocess.get("mean", open_clip.OPENAI_DATASET_MEAN),
                     image_std=preprocess.get("std", open_clip.OPENAI_DATASET_STD), learned_logit_scale=True)
    return model, spec, tokenizer
