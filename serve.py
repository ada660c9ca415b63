"""Serve retrieval and zero-shot classification over HTTP, with a front end at / (configs/serve.yaml).

python serve.py --model-path checkpoints/best.pt --index checkpoints/index [--port 8000]
"""
from retrieval.searcher import Searcher, search_settings
from utils.config import load_config
from utils.config_schema import SERVE
from utils.device import resolve_device
from utils.errors import run_cli


def main(argv):
    config = load_config(SERVE, "configs/serve.yaml", argv)
    import uvicorn

    from service.app import create_app

    searcher = Searcher(config["index"], config["model-path"], config["onnx-dir"], resolve_device(config["device"]),
                        **search_settings(config))
    app = create_app(searcher, int(config["max-upload-mb"] * 2 ** 20), config["max-k"], config["thumbnail-size"])
    print(f"serving {len(searcher.gallery.items)} items from {config['index']} ({searcher.encoder.kind} encoder, "
          f"{searcher.vectors.kind} search) on http://{config['host']}:{config['port']}/  (API docs: /docs)")
    uvicorn.run(app, host=config["host"], port=config["port"], log_level="warning")


if __name__ == "__main__":
    run_cli(main)
