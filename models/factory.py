"""Assemble a fresh joint model from the two towers (what init.py does)."""
import torch

from models.checkpoint import make_spec
from models.attention_pool import attach_attention_pool
from models.image_tower import build_image_backbone, load_image_weights, read_image_weights
from models.model import ContrastiveModel
from models.registry import import_clip
from models.text_tower import TextTower, check_text_model_dir, load_text_encoder
from models.tokenizer import CaptionTokenizer, load_hf_tokenizer
from utils.errors import UserError


def model_from_clip(clip_model, clip_checkpoint, torchscript=False):
    """(model, spec, tokenizer) from a pretrained CLIP: ``open_clip:<model name>`` or ``chinese-clip:<model
    name>`` and its weights file, or ``hf:<directory>`` holding a Hugging Face CLIPModel / ChineseCLIPModel
    (models.registry.clip_importers lists them). ``torchscript``: an open_clip weights file may also be one of
    OpenAI's TorchScript archives."""
    def joint_model(visual, dim, text, pad_token_id, logit_scale):
        """The CLIP's towers joined; the image projection starts as the identity, so features stay CLIP's."""
        model = ContrastiveModel(visual, dim, text, pad_token_id)
        with torch.no_grad():
            model.image_projection.weight.copy_(torch.eye(dim))
            model.image_projection.bias.zero_()
            model.logit_scale.copy_(logit_scale)
        return model

    return import_clip(clip_model, clip_checkpoint, joint_model, torchscript)


def model_from_towers(image_model, text_model, pretrained, image_weights=None, text_pooling="cls",
                      embed_dim=None, image_size=224, max_length=77, text_ngram=0, image_pooling="avg"):
    """Returns (model, spec, tokenizer).

    image_model: torchvision name; with ``pretrained`` its ImageNet weights come from ``image_weights``
    or torchvision's cache (never downloaded here). text_model: local Hugging Face directory; with
    ``pretrained`` its weights are loaded, otherwise its config.json gives the architecture. text_ngram: the
    width of a word-order block before the pooling (models/word_order.py), 0 for none. image_pooling: "avg" or
    "attention" (models/attention_pool.py: a new head, random, after the pretrained backbone).
    """
    check_text_model_dir(text_model, need_weights=pretrained)
    tokenizer = CaptionTokenizer(load_hf_tokenizer(text_model), max_length)
    encoder = load_text_encoder(text_model, pretrained)
    positions = getattr(encoder.config, "max_position_embeddings", None)
    if positions is not None:
        # RoBERTa-style position ids start after the pad id, so pad_token_id + 1 positions are never used.
        usable = positions - (encoder.config.pad_token_id + 1 if encoder.config.model_type in (
            "roberta", "xlm-roberta", "camembert") else 0)
        if max_length > usable:
            raise UserError(f"max-length {max_length} exceeds what text-model '{text_model}' can encode "
                            f"({usable} tokens); lower max-length")
    backbone, image_dim = build_image_backbone(image_model)
    if pretrained:
        load_image_weights(backbone, read_image_weights(image_model, image_weights),
                           image_weights or f"torchvision:{image_model}")
    if image_pooling == "attention":
        attach_attention_pool(backbone, image_size, image_model)
    model = ContrastiveModel(backbone, image_dim, TextTower(encoder, text_pooling, text_ngram), tokenizer.pad_token_id,
                             embed_dim)
    spec = make_spec(image_model, image_dim, encoder.config, text_pooling, embed_dim, image_size, max_length,
                     tokenizer.pad_token_id, text_ngram, image_pooling)
    return model, spec, tokenizer
