"""Export the image and text encoders to ONNX, with dynamic batch and sequence length (configs/export.yaml).

python export.py --model-path checkpoints/best.pt --out checkpoints/onnx
"""
import logging
import os

from models.onnx_export import export_encoders
from utils.config import load_config
from utils.config_schema import EXPORT
from utils.errors import UserError, run_cli

logger = logging.getLogger(__name__)


def main(argv):
    config = load_config(EXPORT, EXPORT.defaults_path, argv)
    targets = [os.path.join(config["out"], name) for name in ("image_encoder.onnx", "text_encoder.onnx")]
    if any(os.path.exists(path) for path in targets) and not config["overwrite"]:
        raise UserError(f"{config['out']} already holds an export; pass --overwrite true to replace it")
    report = export_encoders(config["model-path"], config["out"], config["opset"])
    logger.info(f"wrote {', '.join(targets)}; ONNX Runtime vs PyTorch max abs difference: image "
                f"{report['image-max-abs-diff']:.2e}, text {report['text-max-abs-diff']:.2e}")


if __name__ == "__main__":
    run_cli(main)
