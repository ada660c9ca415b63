"""Shared fixtures: a tiny generated dataset, a tiny text tower and a tiny joint checkpoint; shared helpers."""
import contextlib
import io
import os
import socket
import subprocess
import sys
import threading
import time

import numpy as np
import pytest
from PIL import Image

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@contextlib.contextmanager
def serve_in_thread(app):
    """Run an ASGI app under a real uvicorn server on a free 127.0.0.1 port; yields its base URL."""
    import uvicorn

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.time() + 30
    while not server.started and time.time() < deadline:
        time.sleep(0.05)
    assert server.started
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(10)


def run_script(*args, cwd=ROOT, timeout=300):
    """Run a repo script with this interpreter; return CompletedProcess with text output."""
    return subprocess.run([sys.executable, *args], cwd=cwd, capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, "TOKENIZERS_PARALLELISM": "false"})


def png_bytes(image):
    """A PIL image encoded as PNG."""
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def truncated_png_bytes():
    """The first half of a PNG of noise: its header reads fine, its pixels do not decode."""
    data = png_bytes(Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)))
    return data[: len(data) // 2]


@pytest.fixture(scope="session")
def tiny_dataset(tmp_path_factory):
    """datasets format: train (48 images) and valid (16 images), 32x32, 5 captions each."""
    from scripts.make_demo_dataset import main

    out = tmp_path_factory.mktemp("tiny") / "data"
    assert main(["--out", str(out), "--train", "48", "--valid", "16", "--image-size", "32", "--seed", "3"]) == 0
    return out


@pytest.fixture(scope="session")
def tiny_text_tower(tiny_dataset, tmp_path_factory):
    from scripts.make_demo_text_tower import read_captions, write_text_tower

    out = tmp_path_factory.mktemp("text") / "roberta-tiny"
    write_text_tower(read_captions(str(tiny_dataset / "train" / "captions.csv")), str(out), vocab_size=300,
                     hidden_size=32, layers=1, heads=2, max_length=32)
    return out


@pytest.fixture(scope="session")
def tiny_checkpoint(tiny_text_tower, tmp_path_factory):
    """A joint checkpoint written by the real init.py."""
    path = tmp_path_factory.mktemp("ckpt") / "pretrain.pt"
    result = run_script("init.py", "--config", "configs/demo/init.yaml", "--text-model", str(tiny_text_tower),
                        "--save-path", str(path), "--image-size", "32", "--max-length", "32", "--embed-dim", "32")
    assert result.returncode == 0, result.stderr
    return path


@pytest.fixture(scope="session")
def tiny_index(tiny_checkpoint, tiny_dataset, tmp_path_factory):
    """An index folder of the tiny valid split (16 images, 80 captions), built with the library call index.py
    makes."""
    from retrieval.encoder import TorchEncoder
    from retrieval.gallery_build import build_index
    from utils.distributed import Distributed

    out = tmp_path_factory.mktemp("index") / "idx"
    config = {"out": str(out), "data": str(tiny_dataset / "valid"), "caption-key": "txt", "batch-size": 8,
              "search": "exact"}
    build_index(config, TorchEncoder(str(tiny_checkpoint)), Distributed())
    return out


@contextlib.contextmanager
def http_server(directory):
    """A loopback HTTP server over ``directory`` for the length of the block; yields its base URL."""
    import functools
    import http.server

    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(directory))
    handler.log_message = lambda *args: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
