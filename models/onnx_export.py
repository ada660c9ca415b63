"""ONNX export of the two encoders, checked against PyTorch with ONNX Runtime."""
import os

import numpy as np
import torch
from torch import nn

from models.checkpoint import model_fingerprint, model_from_checkpoint, read_checkpoint
from utils.atomic_file import atomic_write, atomic_write_json
from utils.errors import UserError

PARITY_TOLERANCE = 1e-3


class _ImageEncoder(nn.Module):
    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, images):
        return self.model.encode_image(images)


class _TextEncoder(nn.Module):
    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, input_ids):
        return self.model.encode_text(input_ids)


def _export(module, example, name, axes, path, opset):
    """torch.onnx.export (TorchScript-based exporter) to bytes, written atomically."""
    import io

    buffer = io.BytesIO()
    torch.onnx.export(module, (example,), buffer, input_names=[name], output_names=["features"],
                      dynamic_axes={name: axes, "features": {0: "batch"}}, opset_version=opset, dynamo=False)
    atomic_write(path, lambda stream: stream.write(buffer.getvalue()))


def export_encoders(model_path, out_dir, opset=17):
    """Write image_encoder.onnx ([B,3,S,S] -> [B,D]), text_encoder.onnx ([B,L] int64 -> [B,D]) and
    export.json (model fingerprint, parity); returns the parity report."""
    import onnxruntime

    payload = read_checkpoint(model_path)
    model, spec, tokenizer = model_from_checkpoint(payload)
    model.text_tower.prepare_for_export()
    try:
        os.makedirs(out_dir, exist_ok=True)
        meta_path = os.path.join(out_dir, "export.json")
        if os.path.exists(meta_path):
            os.remove(meta_path)  # until the new export passes its check, no fingerprint vouches for the files
    except OSError as error:
        raise UserError(f"cannot write to --out '{out_dir}': {error.strerror}") from None
    size = spec.image_size
    images = torch.randn(2, 3, size, size)
    input_ids = tokenizer(["a short caption", "a somewhat longer caption with more words in it"])
    image_path, text_path = (os.path.join(out_dir, name) for name in ("image_encoder.onnx", "text_encoder.onnx"))
    with torch.no_grad():
        # Wrappers in eval mode: the exporter restores the wrapper's mode afterwards, recursively, which
        # for a wrapper left in the default training mode would switch the whole model to training.
        _export(_ImageEncoder(model).eval(), images, "images", {0: "batch"}, image_path, opset)
        _export(_TextEncoder(model).eval(), input_ids, "input_ids", {0: "batch", 1: "sequence"}, text_path, opset)
        # Parity on inputs of other shapes than the export examples: dynamic axes must really be dynamic.
        image_checks = [torch.randn(3, 3, size, size), torch.randn(1, 3, size, size)]  # the service sends 1
        text_checks = [tokenizer(["one", "two words", "and a third caption that is the longest of all"]),
                       tokenizer(["a single query"])]
        expected_images = [model.encode_image(x).numpy() for x in image_checks]
        expected_texts = [model.encode_text(x).numpy() for x in text_checks]
    image_session = onnxruntime.InferenceSession(image_path, providers=["CPUExecutionProvider"])
    text_session = onnxruntime.InferenceSession(text_path, providers=["CPUExecutionProvider"])
    image_diff = max(float(np.abs(image_session.run(None, {"images": x.numpy()})[0] - e).max())
                     for x, e in zip(image_checks, expected_images))
    text_diff = max(float(np.abs(text_session.run(None, {"input_ids": x.numpy()})[0] - e).max())
                    for x, e in zip(text_checks, expected_texts))
    if max(image_diff, text_diff) > PARITY_TOLERANCE:
        raise UserError(f"ONNX export differs from PyTorch (image {image_diff:.2e}, text {text_diff:.2e} > "
                        f"{PARITY_TOLERANCE}); not marking {out_dir} as usable")
    report = {"fingerprint": model_fingerprint(payload), "model-path": model_path, "opset": opset,
              "image-max-abs-diff": image_diff, "text-max-abs-diff": text_diff}
    atomic_write_json(meta_path, report)
    return report
