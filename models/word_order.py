"""A word-order block for a text tower: which word stands next to which, before pooling.

Why: a small encoder trained from scratch on captions keeps each token's hidden state close to its own embedding
(on the demo, "circle" after "red" and after "blue": cosine 0.998), so mean pooling returns a bag of words and
"a red circle left of a blue square" equals its swap (docs/objectives.md, "Where binding is lost"). A
convolution over neighbouring tokens followed by a non-linearity gives each position features of its n-gram;
their mean is a bag of n-grams, which holds the binding ("red circle").
"""
import torch.nn.functional as F
from torch import nn

WIDTHS = (0, 2, 3, 4, 5, 7, 9, 13, 17)  # 0: no block; 13, 17: character-level (Chinese) captions


class NgramBlock(nn.Module):
    """Residual n-gram features over a text encoder's hidden states.

    forward(hidden [B,L,D], attention_mask [B,L]) -> hidden [B,L,D]: ``hidden + W2 gelu(conv_n(hidden))``,
    where conv_n reads the ``width`` tokens centred on each position (padding counts as zeros, so a caption's
    features do not depend on how much padding its batch has). W2 starts at zero: the block is the identity
    at initialisation, so a pretrained text tower's features are unchanged until training moves it.
    """

    def __init__(self, dim, width, expansion=4):
        super().__init__()
        if width not in WIDTHS[1:]:
            raise ValueError(f"n-gram width must be one of {WIDTHS[1:]}, got {width}")
        self.width = width
        self.conv = nn.Conv1d(dim, expansion * dim, kernel_size=width)
        self.out = nn.Linear(expansion * dim, dim)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def forward(self, hidden, attention_mask):
        mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
        tokens = (hidden * mask).transpose(1, 2)  # [B,D,L]
        left = (self.width - 1) // 2
        tokens = F.pad(tokens, (left, self.width - 1 - left))
        grams = F.gelu(self.conv(tokens)).transpose(1, 2)  # [B,L,expansion*D]
        return hidden + self.out(grams)
