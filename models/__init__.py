"""ResNet + RoBERTa joint model, its loss, tokenizer and checkpoints."""
from models.checkpoint import build_model, load_checkpoint, read_checkpoint, save_checkpoint
from models.loss import contrastive_loss
from models.model import ContrastiveModel

__all__ = ["ContrastiveModel", "build_model", "contrastive_loss", "load_checkpoint", "read_checkpoint",
           "save_checkpoint"]
