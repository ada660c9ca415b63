"""Image towers: torchvision classification backbones with their classifier removed, and timm models (both
registered in models.registry.image_towers)."""
import logging
import os
from contextlib import nullcontext

import torch
import torchvision
from torch import nn

from models.batch_norm import frozen_batch_norm_statistics
from models.registry import image_towers
from utils.errors import UserError

logger = logging.getLogger(__name__)


def _strip_classifier(backbone):
    """Replace the final Linear classifier with Identity; return the feature size it consumed."""
    for attribute in ("fc", "classifier", "heads", "head"):
        head = getattr(backbone, attribute, None)
        if head is None:
            continue
        if isinstance(head, nn.Linear):
            setattr(backbone, attribute, nn.Identity())
            return head.in_features
        if isinstance(head, nn.Sequential):
            linear_positions = [i for i, layer in enumerate(head) if isinstance(layer, nn.Linear)]
            if linear_positions:
                last = linear_positions[-1]
                features = head[last].in_features
                head[last] = nn.Identity()
                return features
    raise UserError(f"image-model '{type(backbone).__name__}': cannot find a Linear classifier to remove")


def build_image_backbone(name):
    """Return (backbone, feature_dim) with random weights. backbone: [B,3,H,W] -> [B,feature_dim].

    name: a torchvision classification model ("resnet50"), or "timm:<name>" for a timm model (see
    models.registry.image_towers for every family).
    """
    from models.registry import build_image_tower

    return build_image_tower(name)


@image_towers.register("timm:", "timm:<name> (a timm model, e.g. timm:efficientnet_lite0)")
def build_timm(timm_name):
    import timm

    if timm_name not in timm.list_models():
        raise UserError(f"image-model 'timm:{timm_name}': timm has no model '{timm_name}' (see timm.list_models())")
    backbone = timm.create_model(timm_name, pretrained=False, num_classes=0)  # num_classes=0: pooled features
    # Models with a conv head after the pooling (MobileNetV3: 576 -> 1024) output head_hidden_size features.
    return backbone, getattr(backbone, "head_hidden_size", None) or backbone.num_features


def torchvision_weights_file(name):
    """Where torchvision keeps the default ImageNet weights of ``name``: (url, local path)."""
    weights = torchvision.models.get_model_weights(name).DEFAULT
    cache = os.path.join(torch.hub.get_dir(), "checkpoints", os.path.basename(weights.url))
    return weights.url, cache


@image_towers.register("", "a torchvision classification model (resnet50, ...)",
                       default_weights=torchvision_weights_file)
def build_torchvision(name):
    available = torchvision.models.list_models(module=torchvision.models)
    if name not in available:
        raise UserError(f"image-model '{name}' is not a torchvision classification model; "
                        f"choose one of: {', '.join(sorted(available))}")
    # Inception-style models return auxiliary logits in training unless told not to.
    extra = {"aux_logits": False, "init_weights": True} if name in ("googlenet", "inception_v3") else {}
    backbone = torchvision.models.get_model(name, weights=None, **extra)
    return backbone, _strip_classifier(backbone)


def read_image_weights(name, weights_path=None):
    """Load the pretrained state dict of the image model, from ``weights_path`` or torchvision's cache.

    Never downloads: a missing file is a UserError that says which file to fetch and where to put it.
    """
    if weights_path is None:
        family = image_towers.lookup(name)
        default_weights = family.extras.get("default_weights")
        if default_weights is None:
            raise UserError(f"pretrained image-model '{name}' needs image-weights: a local weights file "
                            f"(hub downloads are not used)")
        url, weights_path = default_weights(family.name_in(name))
        hint = (f"download {url}\n  and save it as {weights_path}\n"
                f"  (or set image-weights: pretrains/<file>.pth, or pretrained: false for random weights)")
    else:
        hint = "check image-weights, or set pretrained: false for random weights"
    if not os.path.isfile(weights_path):
        raise UserError(f"ImageNet weights for '{name}' not found at {weights_path}\n  {hint}")
    try:
        state = torch.load(weights_path, map_location="cpu", weights_only=True)
    except Exception as error:  # torch raises several types for a bad file
        raise UserError(f"image weights {weights_path} could not be read: {error}") from None
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    return state


def load_image_weights(backbone, state, source):
    """Copy a classification state dict into a stripped backbone, ignoring the removed classifier.

    Files from other implementations of the same network (e.g. EfficientNet-Lite0 weights named
    ``_conv_stem.weight`` for timm's ``conv_stem.weight``) are matched by position when the names differ
    but every tensor's shape agrees in order.
    """
    own = backbone.state_dict()
    usable = {k: v for k, v in state.items() if k in own and own[k].shape == v.shape}
    if len(usable) < len(own) and len(state) >= len(own):
        pairs = list(zip(own.items(), state.values()))
        if all(mine.shape == theirs.shape for (_, mine), theirs in pairs):
            logger.info(f"image weights {source}: names differ from the model's; matched {len(own)} tensors by "
                        f"position (all shapes agree)")
            usable = {name: theirs for (name, _), theirs in pairs}
    missing = sorted(set(own) - set(usable))
    if missing:
        raise UserError(f"image weights {source} do not match the model: missing {', '.join(missing[:5])}"
                        + (" …" if len(missing) > 5 else ""))
    backbone.load_state_dict(usable)


def enable_checkpointing(backbone):
    """Recompute each stage's activations during backward instead of storing them.

    Patches the stages' forward in place (ResNet-style layer1..layer4, or the children of ``features``), so
    state-dict keys stay unchanged. Active only in training mode with gradients enabled.
    """
    from torch.utils.checkpoint import checkpoint

    if hasattr(backbone, "enable_checkpointing"):  # towers that know their own way (imported CLIPs)
        return backbone.enable_checkpointing()
    if hasattr(backbone, "set_grad_checkpointing"):  # open_clip's (and timm's) vision transformers
        return backbone.set_grad_checkpointing(True)
    stages = [getattr(backbone, f"layer{i}") for i in range(1, 5) if hasattr(backbone, f"layer{i}")]
    for attribute in ("features", "blocks", "stages"):  # torchvision's features; timm's blocks / stages
        if not stages and isinstance(getattr(backbone, attribute, None), nn.Sequential):
            stages = list(getattr(backbone, attribute))
    if not stages:
        raise UserError(f"grad-checkpointing: no stages found in {type(backbone).__name__}")
    for stage in stages:
        def forward(x, _original=stage.forward, _stage=stage):
            if _stage.training and torch.is_grad_enabled():
                if torch.compiler.is_compiling():
                    # Compiled graphs recompute from saved inputs without re-running the module: BatchNorm
                    # counts the batch once already (and Dynamo cannot trace a context_fn made here).
                    return checkpoint(_original, x, use_reentrant=False)
                # The recomputation in backward must not count the batch in BatchNorm's statistics again.
                return checkpoint(_original, x, use_reentrant=False,
                                  context_fn=lambda: (nullcontext(), frozen_batch_norm_statistics(_stage)))
            return _original(x)
        stage.forward = forward
