"""Tower families and where they are looked up (timm's ``@register_model`` in spirit).

A family registers its builder under a name prefix with a decorator, in its own module::

    @image_towers.register("timm:", "timm:<name> (a timm model)")
    def build_timm(name): ...          # name without the prefix -> (backbone, feature size)

Four registries, one per kind of name:

- ``image_towers``: image-model names, ``build(name) -> (backbone, feature_dim)``; "" is torchvision's family
  (plain names), "timm:" timm's. An entry may carry ``default_weights(name) -> (url, local path)``.
- ``text_towers``: text-model names, ``build(spec) -> Tower``; "" is a Hugging Face encoder directory.
- ``clip_models``: a checkpoint spec's image-model of an imported CLIP, ``build(spec) -> (image tower,
  image_dim, text tower)``: "open_clip:", "chinese-clip:", "hf-clip:".
- ``clip_importers``: clip-model names, ``load(name, checkpoint, joint_model, torchscript) -> (model, spec,
  tokenizer)``: "open_clip:", "chinese-clip:", "hf:".

Adding a family: one module with its decorated builders, plus its name in ``FAMILY_MODULES``.
"""
import importlib
import re
from dataclasses import dataclass, field
from typing import Callable, Protocol, runtime_checkable

from utils.errors import UserError

# Imported on the first lookup (not at import time: the families import this module for the decorators).
FAMILY_MODULES = ("models.image_tower", "models.text_tower", "models.open_clip_tower", "models.hf_clip_tower",
                  "models.cn_clip_tower")

_PREFIX = re.compile(r"^[A-Za-z][\w.-]+:")  # "timm:", "open_clip:"; not a drive letter ("C:")


@runtime_checkable
class Tower(Protocol):
    """What the kit calls on a text tower (TextTower, OpenClipText, HfClipText, ChineseClipText).

    Two members are optional, read with getattr by ContrastiveModel (so not part of the runtime check):

    - ``imported: bool``: True for an imported CLIP's tower (all four classes that set it, image towers
      included): locking and layer decay then require ``layer_groups()`` to cover every parameter, as its
      embeddings and projection sit outside its blocks. Absent means False.
    - ``layer_groups() -> list``: the tower's layers, input side first (embeddings, blocks, final norm and
      projection), each an nn.Module or a list of modules and loose parameters. Locking
      (``ContrastiveModel.lock``) freezes a prefix of them; layer-wise learning-rate decay
      (training/optimizer.py, through ``tower_layers``) scales each. Without it a text tower's ``encoder`` is
      walked (embeddings, then its first ModuleList) and an image tower's children.

    Image towers are plain ``nn.Module``s (torchvision, timm, open_clip's ``visual``): images [B,3,S,S] ->
    [B,D], their D given by their builder; they may have ``layer_groups``, ``imported`` and
    ``enable_checkpointing`` (models/image_tower.py checkpoints their stages otherwise).
    """

    output_dim: int
    """Size of ``forward``'s features: the text side of ContrastiveModel's projections."""

    def forward(self, input_ids, attention_mask):
        """(input_ids [B,L], attention_mask [B,L], 1 = token) -> features [B, output_dim]."""

    def enable_checkpointing(self):
        """Recompute activations in backward (grad-checkpointing); UserError where the tower cannot."""

    def prepare_for_export(self):
        """Switch to ONNX-exportable kernels (eager attention) before models/onnx_export.py runs."""


@dataclass(frozen=True)
class Family:
    """One registered family: its name prefix, what a name looks like (for error messages), its builder."""
    prefix: str
    usage: str
    build: Callable
    extras: dict = field(default_factory=dict)

    def name_in(self, name):
        """``name`` without this family's prefix: what its builder takes."""
        return name[len(self.prefix):]


class Registry:
    """Name prefix -> Family for one kind of name (the config key ``key``: image-model, clip-model, ...)."""

    def __init__(self, key):
        self.key = key
        self._families = {}

    def register(self, prefix, usage, **extras):
        """Decorator: register the function as the builder of names starting with ``prefix`` ("" = names with
        no prefix). ``usage`` shows such a name in error messages, e.g. "timm:<name> (a timm model)"."""
        def decorate(build):
            if prefix in self._families and self._families[prefix].build is not build:
                raise ValueError(f"{self.key}: prefix '{prefix}' is registered twice")
            self._families[prefix] = Family(prefix, usage, build, extras)
            return build
        return decorate

    def families(self):
        _load_families()
        return list(self._families.values())

    def find(self, name):
        """The family with the longest prefix ``name`` starts with (the "" family only for names without a
        prefix); None if there is none."""
        _load_families()
        prefixed = [f for p, f in self._families.items() if p and name.startswith(p)]
        if prefixed:
            return max(prefixed, key=lambda family: len(family.prefix))
        if "" in self._families and not _PREFIX.match(name):
            return self._families[""]
        return None

    def lookup(self, name, also=()):
        """The family of ``name``; UserError naming the known families (with those of the registries ``also``,
        when a name may belong to either)."""
        family = self.find(name)
        if family is None:
            known = [f.usage for registry in (self, *also) for f in registry.families()]
            prefix = _PREFIX.match(name)
            unknown = f"no model family has the prefix '{prefix.group(0)}'; " if prefix else ""
            raise UserError(f"{self.key} '{name}': {unknown}known: {'; '.join(known)}")
        return family


image_towers = Registry("image-model")
text_towers = Registry("text-model")
clip_models = Registry("image-model")
clip_importers = Registry("clip-model")


def _load_families():
    for module in FAMILY_MODULES:
        importlib.import_module(module)


def build_image_tower(name):
    """(backbone with random weights, its feature size) for an image-model name of any image family."""
    family = image_towers.lookup(name, also=[clip_models])
    return family.build(family.name_in(name))


def build_towers(spec):
    """(image tower, image_dim, text tower) with random weights for a ModelSpec: an imported CLIP's own
    builder, or an image family's backbone and the text family's tower."""
    clip = clip_models.find(spec.image_model)
    if clip is not None:
        return clip.build(spec)
    backbone, image_dim = build_image_tower(spec.image_model)
    if image_dim != spec.image_dim:
        raise UserError(f"checkpoint spec image-dim {spec.image_dim} does not match {spec.image_model}")
    if spec.image_pooling == "attention":
        from models.attention_pool import attach_attention_pool

        attach_attention_pool(backbone, spec.image_size, spec.image_model)
    return backbone, image_dim, text_towers.lookup("").build(spec)


def import_clip(clip_model, clip_checkpoint, joint_model, torchscript=False):
    """(model, spec, tokenizer) from a pretrained CLIP named ``clip_model`` (see ``clip_importers``)."""
    family = clip_importers.lookup(clip_model)
    return family.build(family.name_in(clip_model), clip_checkpoint, joint_model, torchscript)
