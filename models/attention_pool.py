"""An attention-pooling head for a convolutional image tower (CLIP's ModifiedResNet pools this way).

Why: global average pooling sums the final map's cells, so where a feature sits is gone before the projection,
and "a red circle left of a blue square" scores the same as its swap on the image side (docs/objectives.md,
"Where binding is lost"). Here the mean of the map asks, through one multi-head attention with a learned
positional embedding per cell, which cells to read: the output depends on where each feature is.
"""
import math

import torch
import torch.nn.functional as F
from torch import nn

from utils.errors import UserError

POOLINGS = ("avg", "attention")


class AttentionPool2d(nn.Module):
    """forward(feature_map [B,C,H,W]) -> [B,C] ([B,C,1,1] with keep_dims): the attention output of the map's
    mean over [mean; cells].

    grid: the map's side at the checkpoint's image size; a map of another size (another image-size at fine-tune
    or eval) gets the positional embedding resized bicubically. heads: C // 64 (32 for ResNet50's 2,048, as
    CLIP's RN50), at least 1.
    """

    def __init__(self, dim, grid, keep_dims=False):
        super().__init__()
        self.grid = grid
        self.keep_dims = keep_dims  # the pooling replaced returned [B,C,1,1] (a conv head follows it)
        self.positional_embedding = nn.Parameter(torch.randn(grid * grid + 1, dim) / math.sqrt(dim))
        self.attention = nn.MultiheadAttention(dim, dim // 64 if dim % 64 == 0 else 1, batch_first=True)

    def positions(self, height, width):
        """[1 + height*width, C]: the mean's embedding, then the cells' (resized if the map is not grid²)."""
        if (height, width) == (self.grid, self.grid):
            return self.positional_embedding
        first, cells = self.positional_embedding[:1], self.positional_embedding[1:]
        cells = cells.reshape(1, self.grid, self.grid, -1).permute(0, 3, 1, 2)
        cells = F.interpolate(cells, size=(height, width), mode="bicubic", align_corners=False)
        return torch.cat([first, cells.permute(0, 2, 3, 1).reshape(height * width, -1)])

    def forward(self, feature_map):
        _, _, height, width = feature_map.shape
        cells = feature_map.flatten(2).transpose(1, 2)  # [B,HW,C]
        tokens = torch.cat([cells.mean(dim=1, keepdim=True), cells], dim=1)
        tokens = tokens + self.positions(height, width).to(tokens.dtype)
        pooled, _ = self.attention(tokens[:, :1], tokens, tokens, need_weights=False)
        return pooled[:, 0, :, None, None] if self.keep_dims else pooled[:, 0]


def _pooling_slot(backbone):
    """The attribute holding the backbone's global average pooling: torchvision's ``avgpool`` (to 1 x 1; VGG's
    7 x 7 is no global pooling), timm's ``global_pool`` (one vector per channel: not identity, not avg and max concatenated)."""
    for attribute in ("avgpool", "global_pool"):
        module = getattr(backbone, attribute, None)
        if isinstance(module, nn.AdaptiveAvgPool2d) and module.output_size in (1, (1, 1)):
            return attribute
        if type(module).__name__ == "SelectAdaptivePool2d" and not module.is_identity() and module.feat_mult() == 1:
            return attribute
    return None


def _probe(backbone, image_size, module):
    """(backbone output shape, ``module``'s input shape, its output shape) for one zero image."""
    shapes = {}

    def hook(_module, inputs, output):
        shapes["in"], shapes["out"] = inputs[0].shape, output.shape

    handle = module.register_forward_hook(hook)
    was_training = backbone.training
    try:
        with torch.no_grad():
            output = backbone.eval()(torch.zeros(1, 3, image_size, image_size))
    finally:
        handle.remove()
        backbone.train(was_training)
    return output.shape, shapes["in"], shapes["out"]


def attach_attention_pool(backbone, image_size, name):
    """Replace ``backbone``'s global average pooling with an AttentionPool2d sized for ``image_size`` pixels.

    Call it after loading pretrained weights (the head is new and starts random). UserError for a tower with
    no global 2-D average pooling to replace (vision transformers pool their own way, VGG flattens a 7 x 7
    map) or whose layers after the pooling do not accept the head's output.
    """
    attribute = _pooling_slot(backbone)
    if attribute is None:
        raise UserError(f"image-pooling attention: image-model '{name}' has no global average pooling over a "
                        f"feature map to replace (a torchvision CNN's avgpool or a timm CNN's global_pool); "
                        f"use image-pooling: avg")
    original = getattr(backbone, attribute)
    expected, (_, dim, height, width), pooled = _probe(backbone, image_size, original)
    if height != width:
        raise UserError(f"image-pooling attention: '{name}' gives a {height}x{width} map at image-size "
                        f"{image_size}; a square map is needed")
    head = AttentionPool2d(dim, height, keep_dims=len(pooled) == 4)
    setattr(backbone, attribute, head)
    try:
        got = _probe(backbone, image_size, head)[0]
    except Exception as error:  # the layers after the pooling expect something else of it
        got = f"an error ({type(error).__name__})"
    if got != expected:
        setattr(backbone, attribute, original)
        raise UserError(f"image-pooling attention: '{name}' does not work with the head in place of its "
                        f"{attribute} (output {got}, expected {tuple(expected)}); use image-pooling: avg")
    return backbone
