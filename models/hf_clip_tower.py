"""A Hugging Face ``CLIPModel`` or ``ChineseCLIPModel`` directory (e.g. the files of
OFA-Sys/chinese-clip-vit-base-patch16 or openai/clip-vit-base-patch32) as the kit's joint model.

transformers builds the architecture; the kit wraps its vision and text models with their projections, so
``encode_image``/``encode_text`` equal ``get_image_features``/``get_text_features``, normalised.
"""
import json
import os

from torch import nn

from models.hf_checkpointing import enable_hf_checkpointing
from models.open_clip_tower import TORCHSCRIPT_ONLY
from models.registry import clip_importers, clip_models
from models.spec import ModelSpec
from utils.errors import UserError, first_line

HF_CLIP_PREFIX = "hf-clip:"  # a checkpoint spec's image-model: hf-clip:<model_type>
HF_DIRECTORY_PREFIX = "hf:"  # the clip-model to import: hf:<directory>
MODEL_TYPES = ("clip", "chinese_clip")
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
CHINESE_CLIP_CONTEXT = 52  # Chinese-CLIP's own context length (its BERT could take 512)


class HfClipVision(nn.Module):
    """A Hugging Face CLIP's image side (a models.registry.Tower): its vision model and visual projection.

    forward(images [B,3,S,S]) -> projected image features [B, projection_dim] (CLIP's pooled output), as
    ``get_image_features``.
    """

    imported = True  # locking and layer decay require its layer list to cover every parameter

    def __init__(self, vision_model, projection):
        super().__init__()
        self.vision_model = vision_model
        self.projection = projection

    def layer_groups(self):
        """Locking and layer decay count these, input side first: embeddings, blocks, final norm + projection."""
        model = self.vision_model
        return [[model.embeddings, getattr(model, "pre_layrnorm", None)], *model.encoder.layers,
                [model.post_layernorm, self.projection]]

    def enable_checkpointing(self):
        raise UserError("grad-checkpointing: not available for Hugging Face CLIP image towers yet; use the "
                        "gradient cache (grad-cache-chunk) to save memory")

    def forward(self, images):
        return self.projection(self.vision_model(pixel_values=images).pooler_output)


class HfClipText(nn.Module):
    """A Hugging Face CLIP's text side (a models.registry.Tower): its text model and text projection.

    forward(input_ids [B,L], attention_mask [B,L]) -> projected text features [B, projection_dim], as
    ``get_text_features``. CLIP pools its end-of-text token under a causal mask, so padding after it never
    matters (and CLIP's tokenizer pads with that same token): no attention mask is passed. Chinese-CLIP's BERT
    takes the mask and pools the first token.
    """

    imported = True  # locking and layer decay require its layer list to cover every parameter

    def __init__(self, text_model, projection, model_type):
        super().__init__()
        self.text_model = text_model
        self.projection = projection
        self.model_type = model_type
        self.output_dim = projection.out_features

    @property
    def encoder(self):
        """The transformer whose blocks locking counts."""
        return self.text_model

    def layer_groups(self):
        """Locking and layer decay count these, input side first: embeddings, blocks, final norm + projection."""
        model = self.text_model
        blocks = model.encoder.layers if hasattr(model.encoder, "layers") else model.encoder.layer
        return [[model.embeddings], *blocks,
                [getattr(model, "final_layer_norm", None), getattr(model, "pooler", None), self.projection]]

    def enable_checkpointing(self):
        if not enable_hf_checkpointing(self.text_model):
            raise UserError("grad-checkpointing: not available for this CLIP text tower; use the gradient cache")

    def prepare_for_export(self):
        self.text_model.config._attn_implementation = "eager"

    def forward(self, input_ids, attention_mask):
        if self.model_type == "clip":
            return self.projection(self.text_model(input_ids=input_ids).pooler_output)
        hidden = self.text_model(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        return self.projection(hidden[:, 0])


def _config_class(model_type):
    from transformers import ChineseCLIPConfig, CLIPConfig

    return {"clip": CLIPConfig, "chinese_clip": ChineseCLIPConfig}[model_type]


def split_hf_clip(model):
    """(image tower, its output size, text tower) from a CLIPModel / ChineseCLIPModel."""
    model_type = model.config.model_type
    vision = HfClipVision(model.vision_model, model.visual_projection)
    text = HfClipText(model.text_model, model.text_projection, model_type)
    return vision, model.visual_projection.out_features, text


@clip_models.register(HF_CLIP_PREFIX, "hf-clip:<model type> (an imported Hugging Face CLIP)")
def build_hf_clip(spec):
    """Random-weight (image tower, image_dim, text tower) from the config stored in a checkpoint's spec."""
    from transformers import AutoModel

    config = _config_class(spec.clip_config["model_type"]).from_dict(spec.clip_config)
    return split_hf_clip(AutoModel.from_config(config).float())


def read_hf_clip(directory):
    """(model, tokenizer, preprocess dict) from a local directory; UserError naming what is missing."""
    from transformers import AutoConfig, AutoModel

    from models.text_tower import check_loaded_weights
    from models.tokenizer import load_hf_tokenizer

    if not os.path.isfile(os.path.join(directory, "config.json")):
        raise UserError(f"clip-model '{HF_DIRECTORY_PREFIX}{directory}': no config.json there; give a Hugging Face "
                        f"CLIPModel or ChineseCLIPModel directory (config.json, weights, tokenizer files)")
    try:
        config = AutoConfig.from_pretrained(directory, local_files_only=True)
    except (OSError, ValueError) as error:
        raise UserError(f"'{directory}': unreadable config.json ({first_line(error)})") from None
    if config.model_type not in MODEL_TYPES:
        raise UserError(f"'{directory}' holds a '{config.model_type}' model; importable: CLIPModel (clip) and "
                        f"ChineseCLIPModel (chinese_clip)")
    try:
        model, loading_info = AutoModel.from_pretrained(directory, local_files_only=True, use_safetensors=None,
                                                        output_loading_info=True)
    except (OSError, ValueError, RuntimeError) as error:
        raise UserError(f"'{directory}': weights could not be loaded ({first_line(error)})") from None
    check_loaded_weights(loading_info, f"'{directory}'")  # strict, as open_clip's load_state_dict
    preprocess = {}
    path = os.path.join(directory, "preprocessor_config.json")
    if os.path.isfile(path):
        with open(path, encoding="utf-8") as handle:
            preprocess = json.load(handle)
    # Directories saved in half precision load as such; the kit trains and stores float32.
    model.config.dtype = "float32"
    return model.float().eval(), load_hf_tokenizer(directory), preprocess


@clip_importers.register(HF_DIRECTORY_PREFIX, "hf:<directory> (a Hugging Face CLIPModel or ChineseCLIPModel)")
def model_from_hf_clip(directory, clip_checkpoint, build_model_from_parts, torchscript=False):
    """(model, spec, tokenizer) of the CLIP in ``directory``; see ``model_from_open_clip``. The weights are the
    directory's: ``clip_checkpoint`` and ``torchscript`` must not be given."""
    from models.tokenizer import CaptionTokenizer

    if torchscript:
        raise UserError(TORCHSCRIPT_ONLY)
    if clip_checkpoint:
        raise UserError("clip-checkpoint is not used with hf:<directory>: the weights are the directory's")
    clip, hf_tokenizer, preprocess = read_hf_clip(directory)
    model_type = clip.config.model_type
    positions = clip.config.text_config.max_position_embeddings
    context = positions if model_type == "clip" else min(CHINESE_CLIP_CONTEXT, positions)
    tokenizer = CaptionTokenizer(hf_tokenizer, context)
    vision, dim, text = split_hf_clip(clip)
    model = build_model_from_parts(vision, dim, text, tokenizer.pad_token_id, clip.logit_scale.detach())
    spec = ModelSpec(image_model=HF_CLIP_PREFIX + model_type, image_dim=int(dim), clip_config=clip.config.to_dict(),
                     text_pooling="clip", image_size=int(clip.config.vision_config.image_size),
                     max_length=int(context), pad_token_id=int(tokenizer.pad_token_id),
                     image_mean=preprocess.get("image_mean", CLIP_MEAN), image_std=preprocess.get("image_std", CLIP_STD),
                     learned_logit_scale=True)
    return model, spec, tokenizer
