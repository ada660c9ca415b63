"""Build the joint model from the pretrained towers and save it (configs/init.yaml)."""
import logging
import os

import torch

from models.checkpoint import save_checkpoint
from models.factory import model_from_clip, model_from_towers
from utils.config import load_config
from utils.config_schema import INIT
from utils.errors import UserError, run_cli

logger = logging.getLogger(__name__)


def main(argv):
    config = load_config(INIT, INIT.defaults_path, argv)
    path = config["save-path"]
    if os.path.exists(path) and not config["overwrite"]:
        raise UserError(f"{path} already exists; pass --overwrite true to replace it")
    torch.manual_seed(config["seed"])
    if config["clip-torchscript"] and not config["clip-model"]:
        raise UserError("clip-torchscript reads a CLIP archive: give clip-model open_clip:<name>-quickgelu too")
    if config["text-ngram"] and (config["clip-model"] or config["text-pooling"] != "mean"):
        raise UserError(f"text-ngram {config['text-ngram']} needs a separate text tower with text-pooling: mean "
                        f"(a first-token feature would see only the first tokens' n-grams; an imported CLIP "
                        f"keeps its own text tower): set text-ngram: 0 or text-pooling: mean")
    if config["clip-model"] and config["image-pooling"] != "avg":
        raise UserError(f"image-pooling {config['image-pooling']} replaces a separate image tower's pooling; an "
                        f"imported CLIP keeps its own: set image-pooling: avg")
    if config["clip-model"]:
        model, spec, tokenizer = model_from_clip(config["clip-model"], config["clip-checkpoint"],
                                                 config["clip-torchscript"])
        source = f"{config['clip-model']} from {config['clip-checkpoint']}"
    else:
        model, spec, tokenizer = model_from_towers(
            config["image-model"], config["text-model"], config["pretrained"], config["image-weights"],
            config["text-pooling"], config["embed-dim"], config["image-size"], config["max-length"],
            config["text-ngram"], config["image-pooling"])
        source = (f"{config['image-model']} + {config['text-model']} "
                  f"({'pretrained' if config['pretrained'] else 'random init'})")
    save_checkpoint(path, model, spec, tokenizer.to_files())
    parameters = sum(p.numel() for p in model.parameters())
    logger.info(f"saved {path}: {source}, {parameters / 1e6:.1f}M parameters, embedding size {model.embed_dim}")


if __name__ == "__main__":
    run_cli(main)
