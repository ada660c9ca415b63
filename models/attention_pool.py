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
    """forward(feature_map [B,C,H,W]) -> [B,C]: the attention output of the map's mean over [mean; cells].

    grid: the map's side at the checkpoint's image size; a map of another size (another image-size at fine-tune
    or eval) gets the positional embedding resized bicubically. heads: C // 64 (32 for ResNet50's 2,048, as
    CLIP's RN50), at least 1.
    """

    def __init__(self, dim, grid):
        super().__init__()
        self.grid = grid
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
        return pooled[:, 0]


def _pooling_slot(backbone):
    """The attribute holding the backbone's global pooling: torchvision's ``avgpool``, timm's ``global_pool``."""
    for attribute in ("avgpool", "global_pool"):
        module = getattr(backbone, attribute, None)
        if isinstance(module, nn.AdaptiveAvgPool2d) or type(module).__name__ == "SelectAdaptivePool2d":
            return attribute
    return None


def attach_attention_pool(backbone, image_size, name):
    """Replace ``backbone``'s global average pooling with an AttentionPool2d sized for ``image_size`` pixels.

    Call it after loading pretrained weights (the head is new and starts random). UserError for a tower with
    no 2-D average pooling to replace (vision transformers pool their own way).
    """
    attribute = _pooling_slot(backbone)
    if attribute is None:
        raise UserError(f"image-pooling attention: image-model '{name}' has no global average pooling over a "
                        f"feature map to replace (a torchvision CNN's avgpool or a timm CNN's global_pool); "
                        f"use image-pooling: avg")
    shapes = []
    hook = getattr(backbone, attribute).register_forward_hook(lambda _m, inputs, _o: shapes.append(inputs[0].shape))
    was_training = backbone.training
    try:
        with torch.no_grad():
            backbone.eval()(torch.zeros(1, 3, image_size, image_size))
    finally:
        hook.remove()
        backbone.train(was_training)
    _, dim, height, width = shapes[0]
    if height != width:
        raise UserError(f"image-pooling attention: '{name}' gives a {height}x{width} map at image-size "
                        f"{image_size}; a square map is needed")
    setattr(backbone, attribute, AttentionPool2d(dim, height))
    return backbone
