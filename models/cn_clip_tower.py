"""Chinese-CLIP's own release files (OFA-Sys/Chinese-CLIP: clip_cn_rn50.pt, clip_cn_vit-b-16.pt, ...) as the
kit's joint model. The cn_clip package builds the architecture (ResNet50 + RBT3, ViT + RoBERTa-wwm); the
checkpoint's DDP-prefixed ``state_dict`` is loaded as cn_clip loads it, in float32.

Install cn_clip without its dependencies (it pins an lmdb without wheels for current Pythons; the model code
needs only torch and six): ``pip install --no-deps cn-clip==1.6.0 six``.
"""
import contextlib
import io
import os

import torch
from torch import nn

from models.open_clip_tower import TORCHSCRIPT_ONLY, declare_vit_layers, need_clip_checkpoint
from models.registry import clip_importers, clip_models
from models.spec import ModelSpec
from utils.errors import UserError, first_line

CN_CLIP_PREFIX = "chinese-clip:"
CONTEXT_LENGTH = 52  # every Chinese-CLIP model's
MEAN = (0.48145466, 0.4578275, 0.40821073)
STD = (0.26862954, 0.26130258, 0.27577711)


def _cn_clip_utils():
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            from cn_clip.clip import utils
    except ImportError:
        raise UserError("importing a Chinese-CLIP file needs the cn_clip package: "
                        "pip install --no-deps cn-clip==1.6.0 six") from None
    return utils


class ChineseClipText(nn.Module):
    """Chinese-CLIP's text side (a models.registry.Tower): its BERT (RoBERTa-wwm / RBT3) and text projection.

    forward(input_ids [B,L], attention_mask [B,L]) -> features [B, embed_dim] (the [CLS] token, projected),
    as cn_clip's ``encode_text``.
    """

    imported = True  # locking and layer decay require its layer list to cover every parameter

    def __init__(self, bert, text_projection):
        super().__init__()
        self.bert = bert
        self.text_projection = text_projection
        self.output_dim = text_projection.shape[1]

    @property
    def encoder(self):
        """The transformer whose blocks locking counts."""
        return self.bert

    def layer_groups(self):
        """Locking and layer decay count these, input side first: embeddings, BERT layers, projection."""
        return [[self.bert.embeddings], *self.bert.encoder.layer,
                [getattr(self.bert, "pooler", None), self.text_projection]]

    def enable_checkpointing(self):
        raise UserError("grad-checkpointing: not available for Chinese-CLIP's text tower yet; use the gradient cache")

    def prepare_for_export(self):
        pass

    def forward(self, input_ids, attention_mask):
        hidden = self.bert(input_ids, attention_mask=attention_mask.to(self.text_projection.dtype))[0]
        return hidden[:, 0, :] @ self.text_projection


def _struct(name):
    utils = _cn_clip_utils()
    if name not in utils._MODEL_INFO:
        raise UserError(f"clip-model '{CN_CLIP_PREFIX}{name}': Chinese-CLIP has {', '.join(utils._MODEL_INFO)}")
    return utils._MODEL_INFO[name]["struct"], utils._MODEL_INFO[name]["input_resolution"]


def create_cn_clip(struct, checkpoint=None):
    """cn_clip's CLIP for ``struct`` ("RN50@RBT3-chinese"), with ``checkpoint``'s weights, in float32."""
    utils = _cn_clip_utils()
    try:
        with contextlib.redirect_stdout(io.StringIO()):  # cn_clip prints its configs
            clip = utils.create_model(struct, checkpoint)
    except (RuntimeError, KeyError, StopIteration) as error:
        raise UserError(f"the Chinese-CLIP file does not fit {struct}: {first_line(error)}") from None
    return clip.float()


def split_cn_clip(clip):
    """(image tower, its output size, text tower) from cn_clip's CLIP."""
    text = ChineseClipText(clip.bert, clip.text_projection)
    return declare_vit_layers(clip.visual), text.output_dim, text


@clip_models.register(CN_CLIP_PREFIX, "chinese-clip:<name> (e.g. chinese-clip:RN50)")
def build_cn_clip(spec):
    """Random-weight (image tower, image_dim, text tower) of an imported Chinese-CLIP's ModelSpec."""
    return split_cn_clip(create_cn_clip(spec.cn_clip_struct))


def read_release_file(path):
    """Chinese-CLIP's checkpoint dict: {"state_dict": {"module.visual...": tensor, ...}, ...}."""
    if not os.path.isfile(path):
        raise UserError(f"clip-checkpoint '{path}' not found: download the model's file from the Chinese-CLIP "
                        f"release (e.g. clip_cn_rn50.pt) and point clip-checkpoint at it")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:
        raise UserError(f"clip-checkpoint '{path}' cannot be read with torch.load(weights_only=True) "
                        f"({first_line(error)})") from None
    if not isinstance(checkpoint, dict) or not isinstance(checkpoint.get("state_dict"), dict):
        raise UserError(f"clip-checkpoint '{path}' is not a Chinese-CLIP file (no 'state_dict' inside)")
    return checkpoint


@clip_importers.register(CN_CLIP_PREFIX, "chinese-clip:<name> (e.g. chinese-clip:RN50) with clip-checkpoint")
def model_from_cn_clip(name, checkpoint_path, build_model_from_parts, torchscript=False):
    """(model, spec, tokenizer) of Chinese-CLIP ``name`` (RN50, ViT-B-16, ...) from its release file."""
    from transformers import BertTokenizer

    from models.tokenizer import CaptionTokenizer, check_hf_tokenizer

    if torchscript:
        raise UserError(TORCHSCRIPT_ONLY)
    need_clip_checkpoint(checkpoint_path)
    struct, resolution = _struct(name)
    clip = create_cn_clip(struct, read_release_file(checkpoint_path))
    logit_scale = clip.logit_scale.detach().clone()
    vocab = os.path.join(os.path.dirname(_cn_clip_utils().__file__), "vocab.txt")
    hf_tokenizer = BertTokenizer(vocab, do_lower_case=True)
    check_hf_tokenizer(hf_tokenizer, f"cn_clip's vocabulary '{vocab}'")
    tokenizer = CaptionTokenizer(hf_tokenizer, CONTEXT_LENGTH)
    visual, dim, text = split_cn_clip(clip)
    model = build_model_from_parts(visual, dim, text, tokenizer.pad_token_id, logit_scale)
    spec = ModelSpec(image_model=CN_CLIP_PREFIX + name, image_dim=int(dim), cn_clip_struct=struct, text_pooling="cls",
                     image_size=int(resolution), max_length=CONTEXT_LENGTH, pad_token_id=int(tokenizer.pad_token_id),
                     image_mean=MEAN, image_std=STD, learned_logit_scale=True)
    return model, spec, tokenizer
