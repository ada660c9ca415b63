"""ModelSpec: the architecture a checkpoint stores, as one typed record (open_clip's CLIPVisionCfg in spirit).

On disk (``payload["spec"]``) it stays the plain dict checkpoints have always held, with kebab-case keys;
``to_dict``/``from_dict`` are the one writer and the one reader of that format. Its ``text-config`` key holds
one of four things, which the record keeps apart:

- ``text_encoder_config``: the Hugging Face config dict of a separate text tower (torchvision/timm + HF text);
- ``clip_config``: the full ``CLIPConfig``/``ChineseCLIPConfig`` dict of a Hugging Face CLIP (``hf-clip:``);
- ``open_clip_model``: open_clip's model name (``{"open_clip": name}`` on disk);
- ``cn_clip_struct``: Chinese-CLIP's struct, e.g. "RN50@RBT3-chinese" (``{"chinese-clip": struct}`` on disk).
"""
import dataclasses
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Optional

from models.attention_pool import POOLINGS
from models.word_order import WIDTHS
from utils.errors import UserError

_REQUIRED = ("image-model", "image-dim", "text-config", "text-pooling", "embed-dim", "image-size", "max-length",
             "pad-token-id")
_OPTIONAL = ("image-mean", "image-std", "learned-logit-scale", "logit-bias", "text-ngram", "image-pooling")
_OPEN_CLIP_KEY, _CN_CLIP_KEY = "open_clip", "chinese-clip"  # the one key of their text-config JSON
_HF_CLIP_TYPES = ("clip", "chinese_clip")  # model_type of a whole Hugging Face CLIP config


@dataclass(frozen=True, eq=False)
class ModelSpec:
    """What builds a checkpoint's model with random weights, and how its inputs are prepared.

    image_model: the image tower's name with its family prefix ("resnet18", "timm:vit_tiny_patch16_224",
    "open_clip:RN50", "chinese-clip:RN50", "hf-clip:clip"); image_dim: that tower's output size;
    text_pooling: "cls" / "mean" (separate text tower), "eot" (open_clip), "clip" (HF CLIP), "cls" (Chinese-CLIP);
    embed_dim: the joint space's size, None for the text tower's size; image_size: pixels per side;
    max_length: tokens per caption; pad_token_id: the tokenizer's padding id (attention masks come from it);
    image_mean/image_std: normalisation, None for ImageNet's; learned_logit_scale: the temperature was learned
    (a fine-tune starts from it); logit_bias: the model has SigLIP's logit bias; text_ngram: the width of the
    separate text tower's word-order block (models/word_order.py), 0 for none; image_pooling: "avg" (the
    backbone's own global average pooling) or "attention" (models/attention_pool.py). Exactly one of the four text
    configurations (see the module docstring) is set.
    """
    image_model: str
    image_dim: int
    image_size: int
    max_length: int
    pad_token_id: int
    text_pooling: str
    embed_dim: Optional[int] = None
    text_encoder_config: Optional[dict] = None
    clip_config: Optional[dict] = None
    open_clip_model: Optional[str] = None
    cn_clip_struct: Optional[str] = None
    image_mean: Optional[tuple] = None
    image_std: Optional[tuple] = None
    learned_logit_scale: bool = False
    logit_bias: bool = False
    text_ngram: int = 0
    image_pooling: str = "avg"

    def __post_init__(self):
        texts = [self.text_encoder_config, self.clip_config, self.open_clip_model, self.cn_clip_struct]
        if sum(text is not None for text in texts) != 1:
            raise UserError(f"model spec of '{self.image_model}': give exactly one of text_encoder_config, "
                            f"clip_config, open_clip_model, cn_clip_struct")
        if self.text_ngram not in WIDTHS or (self.text_ngram and self.text_encoder_config is None):
            raise UserError(f"model spec of '{self.image_model}': text-ngram {self.text_ngram} is not one of "
                            f"{', '.join(map(str, WIDTHS))} for a separate text tower (0 for an imported CLIP)")
        if self.image_pooling not in POOLINGS or (self.image_pooling != "avg" and self.text_encoder_config is None):
            raise UserError(f"model spec of '{self.image_model}': image-pooling '{self.image_pooling}' is not one "
                            f"of {', '.join(POOLINGS)} for a separate image tower (avg for an imported CLIP)")
        for name in ("image_mean", "image_std"):  # tuples: a spec is a value, not a container to edit
            value = getattr(self, name)
            if value is not None:
                object.__setattr__(self, name, tuple(float(x) for x in value))

    def replace(self, **changes):
        """A copy with ``changes`` (field names), e.g. ``spec.replace(logit_bias=True)``."""
        return dataclasses.replace(self, **changes)

    def text_config_json(self):
        """The ``text-config`` string of the on-disk format."""
        if self.open_clip_model is not None:
            return json.dumps({_OPEN_CLIP_KEY: self.open_clip_model})
        if self.cn_clip_struct is not None:
            return json.dumps({_CN_CLIP_KEY: self.cn_clip_struct})
        return json.dumps(self.clip_config if self.clip_config is not None else self.text_encoder_config,
                          sort_keys=True)

    def to_dict(self):
        """The plain dict checkpoints hold (what today's readers and model_fingerprint see). The optional keys
        are written only when set, as before: a spec without them reads the same in older code."""
        d = {"image-model": self.image_model, "image-dim": int(self.image_dim),
             "text-config": self.text_config_json(), "text-pooling": self.text_pooling,
             "embed-dim": None if self.embed_dim is None else int(self.embed_dim),
             "image-size": int(self.image_size), "max-length": int(self.max_length),
             "pad-token-id": int(self.pad_token_id)}
        if self.image_mean is not None:
            d["image-mean"] = list(self.image_mean)
        if self.image_std is not None:
            d["image-std"] = list(self.image_std)
        if self.learned_logit_scale:
            d["learned-logit-scale"] = True
        if self.logit_bias:
            d["logit-bias"] = True
        if self.text_ngram:
            d["text-ngram"] = int(self.text_ngram)
        if self.image_pooling != "avg":
            d["image-pooling"] = self.image_pooling
        return d

    @classmethod
    def from_dict(cls, d):
        """Read a checkpoint's spec dict (any written since the format began), or return a ModelSpec as it is.

        UserError naming the keys that are missing or unknown (a spec from a newer version of the kit)."""
        if isinstance(d, ModelSpec):
            return d
        if not isinstance(d, Mapping):
            raise UserError(f"checkpoint spec is a {type(d).__name__}, not a dict")
        missing = [key for key in _REQUIRED if key not in d]
        unknown = sorted(set(d) - set(_REQUIRED) - set(_OPTIONAL))
        if missing or unknown:
            raise UserError("checkpoint spec " + "; ".join(
                part for part in (missing and f"lacks {', '.join(missing)}",
                                  unknown and f"has keys this version does not know: {', '.join(unknown)}") if part))
        text = json.loads(d["text-config"])
        if not isinstance(text, dict):
            raise UserError(f"checkpoint spec text-config is not a JSON object: {d['text-config'][:60]}")
        kinds = {}
        if set(text) == {_OPEN_CLIP_KEY}:
            kinds["open_clip_model"] = text[_OPEN_CLIP_KEY]
        elif set(text) == {_CN_CLIP_KEY}:
            kinds["cn_clip_struct"] = text[_CN_CLIP_KEY]
        elif text.get("model_type") in _HF_CLIP_TYPES:
            kinds["clip_config"] = text
        else:
            kinds["text_encoder_config"] = text
        embed_dim = d["embed-dim"]
        return cls(image_model=str(d["image-model"]), image_dim=int(d["image-dim"]), image_size=int(d["image-size"]),
                   max_length=int(d["max-length"]), pad_token_id=int(d["pad-token-id"]),
                   text_pooling=str(d["text-pooling"]), embed_dim=None if embed_dim is None else int(embed_dim),
                   image_mean=d.get("image-mean"), image_std=d.get("image-std"),
                   learned_logit_scale=bool(d.get("learned-logit-scale", False)),
                   logit_bias=bool(d.get("logit-bias", False)), text_ngram=int(d.get("text-ngram", 0)),
                   image_pooling=str(d.get("image-pooling", "avg")), **kinds)

    def same_architecture(self, other):
        """Whether ``other`` builds the same towers (a learned temperature or a logit bias does not change them)."""
        def towers(spec):
            return ModelSpec.from_dict(spec).replace(learned_logit_scale=False, logit_bias=False)
        return towers(self) == towers(other)

    __hash__ = None  # its config dicts are mutable

    def __eq__(self, other):
        if isinstance(other, ModelSpec):
            return all(getattr(self, f.name) == getattr(other, f.name) for f in dataclasses.fields(self))
        return NotImplemented
