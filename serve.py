"""Serve retrieval and zero-shot classification over HTTP, with a front end at / (configs/serve.yaml).

python serve.py --model-path checkpoints/best.pt --index checkpoints/index [--port 8000]
"""
import logging
import re

from retrieval.searcher import Searcher
from retrieval.vector_search import SearchSettings
from utils.config import load_config
from utils.config_schema import SERVE
from utils.device import resolve_device
from utils.errors import UserError, run_cli

logger = logging.getLogger(__name__)


def parse_origins(value):
    """The cors-origins key as a tuple of origins (scheme://host[:port], no path); UserError otherwise."""
    origins = tuple(origin.strip().rstrip("/") for origin in (value or "").split(",") if origin.strip())
    for origin in origins:
        if origin != "*" and not re.fullmatch(r"https?://[^/\s]+", origin):
            raise UserError(f"cors-origins: '{origin}' is not an origin such as http://127.0.0.1:1235")
    return origins


def main(argv):
    config = load_config(SERVE, SERVE.defaults_path, argv)
    import uvicorn

    from service.app import create_app

    searcher = Searcher(config["index"], config["model-path"], config["onnx-dir"], resolve_device(config["device"]),
                        SearchSettings.from_config(config))
    app = create_app(searcher, int(config["max-upload-mb"] * 2 ** 20), config["max-k"], config["thumbnail-size"],
                     config["allow-image-url"], parse_origins(config["cors-origins"]))
    logger.info(f"serving {len(searcher.gallery.items)} items from {config['index']} ({searcher.encoder.kind} "
                f"encoder, {searcher.vector_index.kind} search) on http://{config['host']}:{config['port']}/  "
                f"(API docs: /docs)")
    uvicorn.run(app, host=config["host"], port=config["port"], log_level="warning")


if __name__ == "__main__":
    run_cli(main)
