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
              "search": "exact", "shard-timeout": 60}
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


def free_port():
    """A TCP port on 127.0.0.1 that nothing listens on now (for a torchrun rendezvous)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def train_args(checkpoint, dataset, out, *extra):
    """train.py with the demo config on ``dataset`` (a tiny one), writing into ``out``; ``extra`` overrides."""
    return ["train.py", "--config", "configs/demo/train.yaml", "--load-path", str(checkpoint),
            "--train-data", str(dataset / "train"), "--valid-data", str(dataset / "valid"),
            "--best-path", str(out / "best.pt"), "--last-path", str(out / "last.pt"),
            "--log-dir", str(out / "logs"), "--batch-size", "16", "--num-workers", "0", "--warmup-steps", "2",
            *extra]


def child_processes(parent):
    """{pid: environment} of ``parent``'s own children (torchrun's workers, for a launcher), from /proc."""
    found = {}
    for entry in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{entry}/stat") as handle:
                if int(handle.read().rsplit(")", 1)[1].split()[1]) != parent:  # field 4; the name may hold spaces
                    continue
            with open(f"/proc/{entry}/environ", "rb") as handle:
                pairs = [item.split(b"=", 1) for item in handle.read().split(b"\0") if b"=" in item]
        except (OSError, ValueError, IndexError):
            continue
        found[int(entry)] = {key.decode(errors="replace"): value.decode(errors="replace") for key, value in pairs}
    return found


def wait_for_checkpoint(path, accept, process, timeout=240):
    """The training state of the atomically replaced checkpoint ``path`` once one passes ``accept``; every
    version written while ``process`` runs is read (polled every 10 ms)."""
    import torch

    deadline, seen = time.time() + timeout, None
    while time.time() < deadline and process.poll() is None:
        try:
            stat = os.stat(path)
        except FileNotFoundError:
            stat = None
        if stat is not None and (stat.st_ino, stat.st_mtime_ns) != seen:
            seen = (stat.st_ino, stat.st_mtime_ns)
            state = torch.load(path, weights_only=True)["training"]
            if accept(state):
                return state
        time.sleep(0.01)
    pytest.fail(f"no {path} as wanted while the run ran (exit code {process.poll()})")


def assert_same_checkpoints(a_dir, b_dir):
    """best.pt and last.pt of two runs equal in every tensor (weights, optimizer moments, random streams), and
    in history (timing aside) and best metric."""
    import torch

    def tensors(value, key=""):
        if isinstance(value, torch.Tensor):
            yield key, value
        elif isinstance(value, dict):
            for name, item in value.items():
                yield from tensors(item, f"{key}/{name}")
        elif isinstance(value, (list, tuple)):
            for index, item in enumerate(value):
                yield from tensors(item, f"{key}/{index}")

    def without_timing(history):
        return [{k: v for k, v in item.items() if k not in ("samples_per_s", "train_seconds", "run_seconds")}
                for item in history]

    for name in ("best.pt", "last.pt"):
        a, b = torch.load(a_dir / name, weights_only=True), torch.load(b_dir / name, weights_only=True)
        a_tensors, b_tensors = dict(tensors(a)), dict(tensors(b))
        assert a_tensors.keys() == b_tensors.keys(), name
        for key, tensor in a_tensors.items():
            assert torch.equal(tensor, b_tensors[key]), (name, key)
        assert a["training"]["step"] == b["training"]["step"], name
    assert without_timing(a["training"]["history"]) == without_timing(b["training"]["history"])
    assert a["training"]["best-metric"] == b["training"]["best-metric"]


HF_CLIP_TEXTS = ["a photo of a dog", "两只猫在沙发上", "一个大的红色圆形在左边"]


def write_hf_clip(directory, model_type, texts=HF_CLIP_TEXTS):
    """A tiny CLIPModel / ChineseCLIPModel directory written by transformers itself (random weights), with a
    tokenizer that knows ``texts``; returns (model in eval mode, tokenizer)."""
    from transformers import BertTokenizer, ChineseCLIPConfig, ChineseCLIPModel, CLIPConfig, CLIPModel

    from scripts.make_demo_text_tower import build_tokenizer

    vision = {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 2,
              "image_size": 32, "patch_size": 8}
    if model_type == "chinese_clip":
        vocab = directory / "vocab.txt"
        characters = sorted(set("".join(texts)) - {" "}) + list("abcdefghijklmnopqrstuvwxyz")
        vocab.write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *characters]) + "\n")
        tokenizer = BertTokenizer(str(vocab))
        text = {"vocab_size": len(tokenizer), "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2,
                "num_attention_heads": 2, "max_position_embeddings": 64}
        model = ChineseCLIPModel(ChineseCLIPConfig(text_config=text, vision_config=vision, projection_dim=16))
    else:
        tokenizer = build_tokenizer(list(texts) * 20 + ["a big red circle left of a small blue square"] * 20, 300)
        text = {"vocab_size": len(tokenizer), "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2,
                "num_attention_heads": 2, "max_position_embeddings": 77, "pad_token_id": tokenizer.pad_token_id,
                "bos_token_id": tokenizer.bos_token_id, "eos_token_id": tokenizer.eos_token_id}
        model = CLIPModel(CLIPConfig(text_config=text, vision_config=vision, projection_dim=16))
    tokenizer.save_pretrained(str(directory))
    model.save_pretrained(str(directory))
    (directory / "preprocessor_config.json").write_text(
        '{"image_mean": [0.5, 0.5, 0.5], "image_std": [0.25, 0.25, 0.25]}')
    return model.eval(), tokenizer
