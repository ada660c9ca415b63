"""Top-k gallery images for a text or an image query (configs/search.yaml).

python search.py --index checkpoints/index --text "a red circle left of a blue square" [--k 5] [--json true]
"""
import json

from retrieval.image_files import open_image_argument
from retrieval.searcher import Searcher, format_results
from retrieval.vector_search import SearchSettings
from utils.config import load_config
from utils.config_schema import SEARCH
from utils.device import resolve_device
from utils.errors import UserError, run_cli


def main(argv):
    config = load_config(SEARCH, SEARCH.defaults_path, argv)
    if (config["text"] is None) == (config["image"] is None):
        raise UserError("give exactly one of --text \"...\" or --image FILE")
    searcher = Searcher(config["index"], config["model-path"], config["onnx-dir"],
                        resolve_device(config["device"]), SearchSettings.from_config(config))
    if config["text"] is not None:
        results = searcher.search_text(config["text"], config["k"])
    else:
        results = searcher.search_image(open_image_argument(config["image"]), config["k"])
    print(json.dumps({"results": results}, ensure_ascii=False, indent=2) if config["json"]
          else format_results(results))


if __name__ == "__main__":
    run_cli(main)
