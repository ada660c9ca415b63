"""Encoders behind index, search, classify and serve: one interface, PyTorch or ONNX Runtime."""
import json
import os
import threading

import numpy as np
import torch

from data.transforms import preprocess_for
from models.checkpoint import checkpoint_contents, model_fingerprint, model_from_checkpoint, read_checkpoint
from models.spec import ModelSpec
from models.tokenizer import tokenizer_from_files
from utils.errors import UserError, first_line


def _checkpoint_parts(payload):
    """(spec, tokenizer, embed_dim, logit_scale) from a read_checkpoint() dict, without building the model:
    what the ONNX encoder needs besides its sessions (model_from_checkpoint builds the same spec and tokenizer)."""
    with checkpoint_contents():
        spec = ModelSpec.from_dict(payload["spec"])
        tokenizer = tokenizer_from_files(payload["tokenizer"], spec.max_length)
        embed_dim = int(payload["state_dict"]["image_projection.weight"].shape[0])
        logit_scale = payload["state_dict"]["logit_scale"].exp().item()
    return spec, tokenizer, embed_dim, logit_scale


class TorchEncoder:
    """encode_images(list of PIL) -> float32 [B, D]; encode_texts(list of str) -> float32 [B, D].

    Both L2-normalised. Thread-safe: one lock serialises the model (CPU inference uses every core anyway).
    Also exposes model_path, fingerprint, spec, embed_dim and logit_scale, as OnnxEncoder does.
    """

    kind = "torch"

    def __init__(self, model_path, device="cpu"):
        payload = read_checkpoint(model_path)
        self.model_path = model_path
        self.fingerprint = model_fingerprint(payload)
        self.model, self.spec, self.tokenizer = model_from_checkpoint(payload)
        self.device = torch.device(device)
        self.model.to(self.device)
        self.preprocess = preprocess_for(self.spec)
        self.embed_dim = self.model.embed_dim
        self.logit_scale = self.model.scale().detach().item()
        self._lock = threading.Lock()

    @torch.no_grad()
    def encode_images(self, images):
        batch = torch.stack([self.preprocess(image) for image in images]).to(self.device)
        with self._lock:
            return self.model.encode_image(batch).float().cpu().numpy()

    @torch.no_grad()
    def encode_texts(self, texts):
        with self._lock:  # the fast tokenizer is not safe to call from several threads at once
            input_ids = self.tokenizer(list(texts)).to(self.device)
            return self.model.encode_text(input_ids).float().cpu().numpy()


class OnnxEncoder:
    """TorchEncoder's interface, with the towers exported by export.py running in ONNX Runtime (CPU).

    Reads the checkpoint for its fingerprint, spec, tokenizer and logit scale; never builds the PyTorch model.
    """

    kind = "onnx"

    def __init__(self, model_path, onnx_dir):
        import onnxruntime

        payload = read_checkpoint(model_path)
        self.model_path = model_path
        self.fingerprint = model_fingerprint(payload)
        self.spec, self.tokenizer, self.embed_dim, self.logit_scale = _checkpoint_parts(payload)
        self.preprocess = preprocess_for(self.spec)
        self._lock = threading.Lock()  # for the tokenizer; ONNX Runtime sessions are thread-safe
        meta_path = os.path.join(onnx_dir, "export.json")
        if not os.path.isfile(meta_path):
            raise UserError(f"'{onnx_dir}' holds no export.json: run export.py --model-path {model_path} --out {onnx_dir}")
        with open(meta_path, encoding="utf-8") as handle:
            meta = json.load(handle)
        if meta.get("fingerprint") != self.fingerprint:
            raise UserError(f"the ONNX files in '{onnx_dir}' were exported from another model than {model_path}")
        try:
            self.image_session, self.text_session = (
                onnxruntime.InferenceSession(os.path.join(onnx_dir, name), providers=["CPUExecutionProvider"])
                for name in ("image_encoder.onnx", "text_encoder.onnx"))
        except Exception as error:  # missing or corrupt files: onnxruntime raises its own exception types
            raise UserError(f"ONNX files in '{onnx_dir}' cannot be loaded ({first_line(error)}); "
                            f"re-run export.py") from None

    def encode_images(self, images):
        batch = torch.stack([self.preprocess(image) for image in images]).numpy()
        return self.image_session.run(None, {"images": batch})[0].astype(np.float32)

    def encode_texts(self, texts):
        with self._lock:
            input_ids = self.tokenizer(list(texts)).numpy()
        return self.text_session.run(None, {"input_ids": input_ids})[0].astype(np.float32)


def load_encoder(model_path, onnx_dir=None, device="cpu"):
    return OnnxEncoder(model_path, onnx_dir) if onnx_dir else TorchEncoder(model_path, device)
