"""Embed a gallery for search and the web service (configs/index.yaml).

python index.py --model-path checkpoints/best.pt --data datasets/valid --out checkpoints/index
"""
import sys

from retrieval.encoder import load_encoder
from retrieval.gallery import add_to_gallery, find_sources, open_or_create
from retrieval.searcher import exact_recall_notice, search_settings
from retrieval.vector_search import VectorSearch
from utils.config import load_config
from utils.config_schema import INDEX
from utils.device import resolve_device
from utils.errors import UserError, run_cli


def main(argv):
    config = load_config(INDEX, "configs/index.yaml", argv)
    encoder = load_encoder(config["model-path"], config["onnx-dir"], resolve_device(config["device"]))
    gallery = open_or_create(config["out"], encoder)
    sources = find_sources(config["data"], report=lambda line: print(line, file=sys.stderr))
    added = add_to_gallery(gallery, encoder, sources, config["batch-size"],
                           report=lambda line: print(line, file=sys.stderr))
    if not gallery.items:
        raise UserError(f"no image in '{config['data']}' could be decoded; nothing indexed")
    gallery.save(config["out"])
    print(f"{config['out']}: added {added} image(s); {len(gallery.items)} images and {len(gallery.text_item)} "
          f"captions indexed ({len(sources) - added} already present or skipped)")
    if config["search"] != "exact":
        vectors = VectorSearch(gallery.image_features, **search_settings(config))
        print(f"{config['search']}: recall@10 against exact search {exact_recall_notice(vectors):.3f} "
              f"(gallery items as queries)")


if __name__ == "__main__":
    run_cli(main)
