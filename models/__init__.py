"""ResNet + RoBERTa joint model, its loss, tokenizer and checkpoints."""
import os

# Nothing is downloaded at run time: towers come from local files only (set before transformers loads).
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from models.checkpoint import build_model, load_checkpoint, read_checkpoint, save_checkpoint
from models.loss import contrastive_loss
from models.model import ContrastiveModel

__all__ = ["ContrastiveModel", "build_model", "contrastive_loss", "load_checkpoint", "read_checkpoint",
           "save_checkpoint"]
