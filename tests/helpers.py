"""Helpers shared by the test files: running the repo's scripts, killing and comparing training runs, servers,
images, tiny models, and the step and DDP helpers of the gradient tests. A test file imports helpers from here,
never from another test file; fixtures live in conftest.py. Heavy packages (torch, the project) are imported
inside the helpers that need them, so collecting a light test stays light.

rank_worker is a torch.multiprocessing.spawn target: spawn pickles it by module path, so it lives here (an
importable module), not in a test file."""
import contextlib
import io
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time

import numpy as np
import pytest
from PIL import Image

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


# --- processes -------------------------------------------------------------------------------------------------

def run_script(*args, cwd=ROOT, timeout=300):
    """Run a repo script with this interpreter; return CompletedProcess with text output.

    A run past ``timeout`` fails the test with where it hung: every process it started (torchrun's workers,
    their data-loader processes) gets SIGABRT, on which faulthandler prints its Python stacks to stderr, and
    the failure shows the tails of stdout and of that stderr."""
    process = subprocess.Popen([sys.executable, *args], cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True, env={**os.environ, "TOKENIZERS_PARALLELISM": "false",
                                               "PYTHONFAULTHANDLER": "1"})
    try:
        stdout, stderr = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        hung = [process.pid, *descendants(process.pid)]
        for pid in reversed(hung):  # the deepest first: the launcher's death must not take their stderr with it
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGABRT)
        try:
            stdout, stderr = process.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            for pid in hung:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            stdout, stderr = process.communicate()
        pytest.fail(f"{' '.join(args)} ran past {timeout} s and was stopped with SIGABRT.\n--- stdout (tail) ---\n"
                    f"{stdout[-3000:]}\n--- stderr with each process's Python stacks (tail) ---\n{stderr[-12000:]}",
                    pytrace=False)
    return subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr)


def free_port():
    """A TCP port on 127.0.0.1 that nothing listens on now (for a torchrun rendezvous or a server)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def torchrun(port, *args):
    """Arguments for run_script: ``args`` under torchrun, 2 processes on this node, rendezvous on ``port``."""
    return ["-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", str(port), *args]


def child_processes(parent):
    """{pid: environment} of ``parent``'s own children (torchrun's workers, for a launcher), from /proc. Direct
    children only: a worker's data-loader processes inherit its RANK."""
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


def descendants(root):
    """Every process below ``root`` (children, their children, ...), from /proc: what a kill must reach."""
    children = {}
    for entry in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{entry}/stat") as handle:
                parent = int(handle.read().rsplit(")", 1)[1].split()[1])  # field 4; the name may hold spaces
        except (OSError, ValueError, IndexError):
            continue
        children.setdefault(parent, []).append(int(entry))
    found, stack = [], [root]
    while stack:
        for child in children.get(stack.pop(), []):
            found.append(child)
            stack.append(child)
    return found


# --- training runs ---------------------------------------------------------------------------------------------

def snapshot(root):
    """Every path under ``root`` with its size and modification time: equal snapshots, nothing written there."""
    return sorted((str(p.relative_to(root)), p.stat().st_size, p.stat().st_mtime_ns) for p in root.rglob("*"))


def train_args(checkpoint, dataset, out, *extra):
    """train.py with the demo config on ``dataset`` (a tiny one), writing into ``out``; ``extra`` overrides."""
    return ["train.py", "--config", "configs/demo/train.yaml", "--load-path", str(checkpoint),
            "--train-data", str(dataset / "train"), "--valid-data", str(dataset / "valid"),
            "--best-path", str(out / "best.pt"), "--last-path", str(out / "last.pt"),
            "--log-dir", str(out / "logs"), "--batch-size", "16", "--num-workers", "0", "--warmup-steps", "2",
            *extra]


def kill_during_run(args, out, after_seconds=0.3, timeout=240):
    """Start ``args``, SIGKILL it and every process it started soon after the first last.pt exists (so
    mid-way through a later epoch), and return the epoch that last.pt holds."""
    import torch

    process = subprocess.Popen([sys.executable, *args], cwd=ROOT, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
    deadline = time.time() + timeout
    while not (out / "last.pt").exists() and process.poll() is None and time.time() < deadline:
        time.sleep(0.02)
    time.sleep(after_seconds)
    for pid in [process.pid, *descendants(process.pid)]:  # torchrun starts its workers in their own sessions
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    process.wait()
    return torch.load(out / "last.pt", weights_only=True)["training"]["epoch"]


def kill_inside_an_epoch(args, out, accept=lambda batches: True):
    """Kill runs of ``args`` (checkpoint-every-steps 1; a list, or a function of the attempt number that gives
    one, e.g. a fresh torchrun port) until last.pt holds a position inside an epoch after a number of batches
    ``accept`` takes; return that training state. A kill lands where timing puts it, so up to 12 tries."""
    import torch

    for attempt in range(12):
        shutil.rmtree(out, ignore_errors=True)
        kill_during_run(args(attempt) if callable(args) else args, out, after_seconds=(0.2, 0.7, 1.2, 0.4)[attempt % 4])
        state = torch.load(out / "last.pt", weights_only=True)["training"]
        if state.get("epoch-progress") and accept(state["epoch-progress"]["batches"]):
            return state
    pytest.fail("no kill landed inside an epoch where wanted")


def resumed_inside_an_epoch(args, tmp_path):
    """Train ``args(out)`` (checkpoint-every-steps 1) straight, then killed inside an epoch and resumed; assert
    both runs end in the same checkpoints, bit for bit. Returns (straight run, killed run's training state
    at the kill, resumed run)."""
    straight, killed = tmp_path / "straight", tmp_path / "killed"
    result = run_script(*args(straight))
    assert result.returncode == 0, result.stderr[-3000:]
    state = kill_inside_an_epoch(args(killed), killed, accept=lambda batches: batches > 0)
    resumed = run_script(*args(killed), "--resume", str(killed / "last.pt"))
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert_same_checkpoints(straight, killed)
    return result, state, resumed


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


def assert_same_checkpoints(a_dir, b_dir, random_streams=True):
    """best.pt and last.pt of two runs equal in every tensor (weights, optimizer moments, random streams) and
    in step; last.pt's history (timing aside) and best metric equal too. ``random_streams=False`` leaves out the
    saved random streams, for runs whose loaders differ in num-workers: a run with 0 reseeds the main process's
    generator per image, one with workers does not, while what they learn is the same."""
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

    def compared(checkpoint):
        return {key: tensor for key, tensor in tensors(checkpoint)
                if random_streams or not key.startswith("/training/rng")}

    def without_timing(history):
        return [{k: v for k, v in item.items() if k not in ("samples_per_s", "train_seconds", "run_seconds")}
                for item in history]

    for name in ("best.pt", "last.pt"):
        a, b = torch.load(a_dir / name, weights_only=True), torch.load(b_dir / name, weights_only=True)
        a_tensors, b_tensors = compared(a), compared(b)
        assert a_tensors.keys() == b_tensors.keys(), name
        for key, tensor in a_tensors.items():
            other = b_tensors[key]
            assert torch.equal(tensor, other), (name, key, (tensor.float() - other.float()).abs().max()
                                                if tensor.shape == other.shape and tensor.is_floating_point()
                                                else "shape or dtype")
        assert a["training"]["step"] == b["training"]["step"], name
    assert without_timing(a["training"]["history"]) == without_timing(b["training"]["history"])  # last.pt's
    assert a["training"]["best-metric"] == b["training"]["best-metric"]


# --- servers and images ----------------------------------------------------------------------------------------

@contextlib.contextmanager
def serve_in_thread(app):
    """Run an ASGI app under a real uvicorn server on a free 127.0.0.1 port; yields its base URL."""
    import uvicorn

    port = free_port()
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


@contextlib.contextmanager
def http_server(directory=None, handler=None):
    """A loopback HTTP server for the length of the block, serving the files of ``directory`` (python's
    http.server: no Range support) or answering with ``handler`` (a BaseHTTPRequestHandler class); yields its
    base URL."""
    import functools
    import http.server

    if handler is None:
        handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(directory))
        handler.log_message = lambda *args: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True  # a handler that stalls must not keep the test process alive
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()


def png_bytes(image):
    """A PIL image encoded as PNG."""
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def truncated_png_bytes():
    """The first half of a PNG of noise: its header reads fine, its pixels do not decode."""
    data = png_bytes(Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)))
    return data[: len(data) // 2]


# --- tiny Hugging Face CLIPs -----------------------------------------------------------------------------------

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


# --- training steps and gradients ------------------------------------------------------------------------------

class NoScaler:
    """GradScaler stand-in with scaling off (what training uses on CPU)."""

    def scale(self, loss):
        return loss


def batch(tokenizer, size=8, captions_per_image=1):
    """(images [size,3,32,32], input_ids [size*captions_per_image, L]), the same on every call."""
    import torch

    generator = torch.Generator().manual_seed(11)
    images = torch.randn(size, 3, 32, 32, generator=generator)
    words = ["red", "blue", "green", "circle", "square", "left", "right", "big"]
    captions = [" ".join(words[(i * 3 + j) % len(words)] for j in range(2 + i % 4))
                for i in range(size * captions_per_image)]
    return images, tokenizer(captions)


def gradients(model):
    """{name: gradient} of ``model``'s parameters that have one, copied."""
    return {name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None}


def assert_same(a, b, tol=1e-5):
    """Two gradients() dicts (of more than 10 parameters) agree within ``tol``."""
    import torch

    assert a.keys() == b.keys() and len(a) > 10
    for name in a:
        assert torch.allclose(a[name], b[name], atol=tol, rtol=1e-4), (name, (a[name] - b[name]).abs().max())


def prepared_model(checkpoint, objective=None, siglip_checkpoint=False):
    """The tiny model made ready for ``objective`` (infonce by default) as train.py does (training.objective),
    in eval mode: per-rank or per-chunk BatchNorm statistics would differ from the full batch's.
    ``siglip_checkpoint``: a model that already has SigLIP's bias (trained on with another loss, the bias is
    frozen)."""
    from models.checkpoint import model_from_checkpoint, read_checkpoint
    from models.loss import INFONCE
    from training.objective import prepare_for_objective

    model, spec, tokenizer = model_from_checkpoint(read_checkpoint(checkpoint))
    model.logit_scale.requires_grad_(True)
    if siglip_checkpoint:
        model.enable_logit_bias(-10.0)
    prepare_for_objective(model, spec, INFONCE if objective is None else objective, learn_temperature=True)
    model.eval()
    return model, tokenizer


def local_step(model, images, ids, rank, world, mode, chunk_size, objective=None):
    """This rank's share of the batch (images [B], ids [B*k], image-major) through DDP: plain, grad cache, or
    grad cache under torch.compile (as train.py wraps them: compile(DDP(model)))."""
    import torch
    from torch.nn.parallel import DistributedDataParallel

    from models.loss import INFONCE
    from training.step import grad_cache_step, plain_step

    objective, device = INFONCE if objective is None else objective, torch.device("cpu")
    half, k = images.shape[0] // world, ids.shape[0] // images.shape[0]
    local_images, local_ids = images[rank * half:(rank + 1) * half], ids[rank * half * k:(rank + 1) * half * k]
    ddp = DistributedDataParallel(model)
    if mode == "compiled-cache":
        ddp = torch.compile(ddp, backend="eager")
    if mode == "plain":
        plain_step(ddp, local_images, local_ids, device, None, NoScaler(), objective)
    else:
        grad_cache_step(ddp, local_images, local_ids, device, None, NoScaler(), chunk_size=chunk_size,
                        objective=objective)


def rank_worker(rank, world, checkpoint, rendezvous, out_dir, cases):
    """One DDP process (a torch.multiprocessing.spawn target): for each case (name, mode, objective, captions
    per image, chunk) a step on this rank's share of the batch; rank 0 saves the gradients to out_dir/name.pt."""
    import torch
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"file://{rendezvous}", rank=rank, world_size=world)
    try:
        for name, mode, objective, captions_per_image, chunk in cases:
            model, tokenizer = prepared_model(checkpoint, objective)
            local_step(model, *batch(tokenizer, captions_per_image=captions_per_image), rank, world, mode, chunk,
                       objective)
            if rank == 0:
                torch.save(gradients(model), os.path.join(out_dir, f"{name}.pt"))
    finally:
        dist.destroy_process_group()


def exported_checkpoint(model, spec, tokenizer, folder):
    """Save ``model`` as folder/model.pt and export it with export.py to folder/onnx, as a user does.
    -> (checkpoint path, ONNX folder, export.json's report)."""
    import json

    from models.checkpoint import save_checkpoint

    path, out = folder / "model.pt", folder / "onnx"
    save_checkpoint(str(path), model, spec, tokenizer.to_files())
    result = run_script("export.py", "--model-path", str(path), "--out", str(out))
    assert result.returncode == 0, result.stderr
    return path, out, json.loads((out / "export.json").read_text())
