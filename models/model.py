"""The joint image-text model with the open_clip-style API."""
import math

import torch
import torch.nn.functional as F
from torch import nn

from utils.errors import UserError

MAX_LOGIT_SCALE = 100.0


class ContrastiveModel(nn.Module):
    """Image tower + text tower + projections into one L2-normalised space.

    As the original project: a Linear maps the image feature to the text feature size; with ``embed_dim`` both towers
    are projected to ``embed_dim`` instead.

    encode_image(images [B,3,H,W]) -> [B,D]; encode_text(input_ids [B,L]) -> [B,D];
    forward(images [B,3,H,W], input_ids [T,L]) -> (image_features [B,D], text_features [T,D], logit_scale
    scalar), plus logit_bias (scalar) for a model trained with loss siglip, as open_clip's forward.
    """

    def __init__(self, image_backbone, image_dim, text_tower, pad_token_id, embed_dim=None, temperature=0.07):
        super().__init__()
        self.image_backbone = image_backbone
        self.text_tower = text_tower
        self.pad_token_id = pad_token_id
        text_dim = text_tower.output_dim
        self.image_projection = nn.Linear(image_dim, embed_dim or text_dim)
        self.text_projection = nn.Linear(text_dim, embed_dim) if embed_dim else nn.Identity()
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1.0 / temperature)))
        self.register_parameter("logit_bias", None)

    def enable_logit_bias(self, value=0.0):
        """Give the model SigLIP's learnable logit bias (kept if it has one). Returns whether it was added."""
        if self.logit_bias is not None:
            return False
        self.logit_bias = nn.Parameter(torch.tensor(float(value), device=self.logit_scale.device))
        return True

    @property
    def embed_dim(self):
        return self.image_projection.out_features

    def encode_image(self, images, normalize=True):
        features = self.image_projection(self.image_backbone(images))
        return F.normalize(features, dim=-1) if normalize else features

    def encode_text(self, input_ids, normalize=True):
        attention_mask = (input_ids != self.pad_token_id).long()
        features = self.text_projection(self.text_tower(input_ids, attention_mask))
        return F.normalize(features, dim=-1) if normalize else features

    def scale(self):
        """exp(logit_scale): 1 / temperature. Training keeps it <= CLIP's 100 with ``clamp_logit_scale``."""
        return self.logit_scale.exp()

    @torch.no_grad()
    def clamp_logit_scale(self):
        """Clamp the parameter itself after each optimizer step (as CLIP does): clamping exp() in forward
        would zero its gradient at the cap and let AdamW momentum push it further out."""
        self.logit_scale.clamp_(0, math.log(MAX_LOGIT_SCALE))

    def set_temperature(self, temperature, learnable):
        with torch.no_grad():
            self.logit_scale.fill_(math.log(1.0 / temperature))
        self.logit_scale.requires_grad_(learnable)

    def lock(self, image=False, image_unlocked=0, text=False, text_unlocked=0):
        """LiT-style locking: freeze a tower except its last ``*_unlocked`` layers.

        Frozen layers get no gradient and stay in eval mode whatever ``train()`` says, so their BatchNorm
        statistics and dropout are frozen too. Projections and the logit scale always train.
        Returns a one-line summary.
        """
        self._locked = []
        notes = []
        for enabled, unlocked, label in ((image, image_unlocked, "image"), (text, text_unlocked, "text")):
            if not enabled:
                continue
            groups = self._layers(label)
            frozen = groups[:max(0, len(groups) - unlocked)]
            for module in frozen:
                module.requires_grad_(False)
            self._locked += frozen
            notes.append(f"{label} tower locked except its last {min(unlocked, len(groups))} of {len(groups)} layers")
        self.train(self.training)
        return "; ".join(notes) if notes else "no tower locked"

    def tower_layers(self):
        """(image tower layers, text tower layers), each input side first: what locking and layer-wise
        learning-rate decay count in. UserError for an imported CLIP tower whose layers miss parameters
        (embeddings or projections held outside its blocks): freezing or scaling part of it would be wrong."""
        return self._layers("image"), self._layers("text")

    def _layers(self, side):
        tower = self.image_backbone if side == "image" else self.text_tower
        declared = getattr(tower, "layer_groups", None)
        if declared is not None:  # an imported CLIP's tower: embeddings, blocks, final norm and projection
            layers = [member if isinstance(member, nn.Module) else LayerGroup(member) for member in declared()]
        else:
            layers = _image_layers(tower) if side == "image" else _text_layers(tower.encoder)
            if side == "text" and getattr(tower, "ngram", None) is not None:
                layers.append(tower.ngram)  # reads the encoder's output: the last layer
        layers = [layer for layer in layers if any(True for _ in layer.parameters())]
        ids = [id(p) for layer in layers for p in layer.parameters()]
        if len(ids) != len(set(ids)):  # a shared parameter would get two scales and two lock states
            raise UserError(f"lock-{side} and layer-decay: a parameter of the {side} tower sits in two layers")
        covered = set(ids)
        partial = getattr(tower, "imported", False) or any(True for _ in tower.parameters(recurse=False))
        if partial and any(id(p) not in covered for p in tower.parameters()):
            raise UserError(f"lock-{side} and layer-decay are not available for this {side} tower "
                            f"({type(tower).__name__}: parameters outside its layers); leave them off")
        return layers

    def train(self, mode=True):
        super().train(mode)
        for module in getattr(self, "_locked", []):
            module.eval()
        return self

    def enable_grad_checkpointing(self):
        """Trade compute for memory in both towers (the HF encoder's own switch; checkpointed CNN stages)."""
        from models.image_tower import enable_checkpointing

        enable_checkpointing(self.image_backbone)
        self.text_tower.enable_checkpointing()

    def forward(self, images, input_ids):
        outputs = self.encode_image(images), self.encode_text(input_ids), self.scale()
        return outputs if self.logit_bias is None else (*outputs, self.logit_bias)


class LayerGroup:
    """Modules and loose parameters that lock and decay as one layer, e.g. a CLIP's token table with its
    positional embedding (a bare nn.Parameter), or its final norm with its projection."""

    def __init__(self, members):
        self.members = [member for member in members if member is not None]

    def parameters(self):
        for member in self.members:
            yield from member.parameters() if isinstance(member, nn.Module) else [member]

    def requires_grad_(self, requires_grad=True):
        for parameter in self.parameters():
            parameter.requires_grad_(requires_grad)
        return self

    def eval(self):
        for member in self.members:
            if isinstance(member, nn.Module):
                member.eval()
        return self


def _image_layers(backbone):
    """The image tower's layers in order: its top-level children, with stage containers opened into their
    blocks (ResNet's layer1..4, timm's blocks, torchvision's features)."""
    layers = []
    for child in backbone.children():
        if not any(True for _ in child.parameters()):
            continue
        if isinstance(child, nn.Sequential):
            layers += [block for block in child.children() if any(True for _ in block.parameters())]
        else:
            layers.append(child)
    return layers


def _text_layers(encoder):
    """The text tower's layers in order: embeddings, then each transformer layer (the first ModuleList)."""
    embeddings = getattr(encoder, "embeddings", None)
    blocks = next((m for m in encoder.modules() if isinstance(m, nn.ModuleList)), None)
    layers = ([embeddings] if embeddings is not None else []) + (list(blocks) if blocks is not None else [])
    return layers or [encoder]
