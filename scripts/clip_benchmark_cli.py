"""clip_benchmark's command line with this kit's checkpoints as a model type: ``--model_type contrastive``.

    python -m scripts.clip_benchmark_cli eval --model_type contrastive --model contrastive \
        --pretrained checkpoints/best.pt --dataset wds/mine --dataset_root DIR --task zeroshot_retrieval \
        --no_amp --output result.json

Everything after the script name is clip_benchmark's own arguments (``clip_benchmark eval --help``); this only
registers the loader, ``--pretrained`` being a checkpoint path. ``--no_amp`` gives eval.py's numbers exactly: by
default clip_benchmark runs the model under autocast (bfloat16 on CPU), which moves scores in the last digits
and can swap close ranks.
"""
import sys

from models.checkpoint import load_checkpoint
from utils.errors import UserError

MODEL_TYPE = "contrastive"


def load_contrastive(model_name, pretrained, cache_dir=None, device="cpu"):
    """clip_benchmark's loader signature: (model, transform, tokenizer) of the checkpoint ``pretrained``."""
    return load_checkpoint(pretrained, device)


def register():
    """Add the model type to clip_benchmark's registry (the list its --model_type choices are built from)."""
    from clip_benchmark import models

    if MODEL_TYPE not in models.TYPE2FUNC:
        models.TYPE2FUNC[MODEL_TYPE] = load_contrastive
        models.MODEL_TYPES.append(MODEL_TYPE)


def main(argv):
    try:
        from clip_benchmark import cli
    except ImportError as error:
        raise UserError(f"clip_benchmark is not installed ({error}); pip install clip-benchmark") from None
    register()
    sys.argv = ["clip_benchmark", *argv]
    return cli.main() or 0


if __name__ == "__main__":
    try:  # not run_cli: clip_benchmark's own --verbose must reach it
        sys.exit(main(sys.argv[1:]))
    except UserError as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(error.exit_code)
