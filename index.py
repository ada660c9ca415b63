"""Embed a gallery for search and the web service into an index folder (configs/index.yaml).

python index.py --model-path checkpoints/best.pt --data datasets/valid --out checkpoints/index
"""
import logging

from retrieval.encoder import load_encoder
from retrieval.gallery import add_to_gallery, find_sources, open_or_create
from retrieval.vector_search import VectorIndex, exact_recall_notice, vector_index_settings
from utils.config import load_config
from utils.config_schema import INDEX
from utils.device import resolve_device
from utils.errors import UserError, run_cli

logger = logging.getLogger(__name__)


def main(argv):
    config = load_config(INDEX, INDEX.defaults_path, argv)
    encoder = load_encoder(config["model-path"], config["onnx-dir"], resolve_device(config["device"]))
    gallery = open_or_create(config["out"], encoder)
    sources = find_sources(config["data"])
    added = add_to_gallery(gallery, encoder, sources, config["batch-size"])
    if not gallery.items:
        raise UserError(f"no image in '{config['data']}' could be decoded; nothing indexed")
    gallery.save(config["out"])
    logger.info(f"{config['out']}: added {added} image(s); {len(gallery.items)} images and "
                f"{len(gallery.text_item)} captions indexed ({len(sources) - added} already present or skipped)")
    if config["search"] != "exact":
        vector_index = VectorIndex(gallery.image_features, **vector_index_settings(config))
        logger.info(f"{config['search']}: recall@10 against exact search {exact_recall_notice(vector_index):.3f} "
                    f"(gallery items as queries)")


if __name__ == "__main__":
    run_cli(main)
