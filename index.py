"""Embed a gallery for search and the web service into an index folder (configs/index.yaml).

python index.py --model-path checkpoints/best.pt --data datasets/valid --out checkpoints/index
torchrun --nproc-per-node 2 index.py --data 'shards/{00000..00099}.tar' --out big-index --search faiss-ivfpq
"""
import logging
from datetime import timedelta

from retrieval.encoder import load_encoder
from retrieval.gallery_build import build_index
from retrieval.gallery_sources import GallerySource
from retrieval.vector_search import SearchSettings
from utils.config import load_config
from utils.config_schema import INDEX
from utils.device import resolve_device
from utils.distributed import init_distributed, shutdown
from utils.errors import run_cli

logger = logging.getLogger(__name__)


def main(argv):
    config = load_config(INDEX, INDEX.defaults_path, argv)
    # ranks whose share is done wait for the others at one gather: allow for very uneven shares
    distributed, device = init_distributed(resolve_device(config["device"]), timeout=timedelta(hours=24))
    try:
        encoder = load_encoder(config["model-path"], config["onnx-dir"], device)
        source = GallerySource(config["data"], config["caption-key"], config["shard-timeout"])
        build_index(source, config["out"], encoder, distributed, config["batch-size"], SearchSettings.from_config(config))
    finally:
        shutdown()


if __name__ == "__main__":
    run_cli(main)
