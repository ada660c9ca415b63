"""Service latency: per-query encode time, PyTorch vs ONNX Runtime, and search time at 1M stored vectors,
exact vs FAISS IVF.

Demo-sized model (ResNet18 64 px + 2-layer RoBERTa, embedding 128), random init (latency does not depend
on the weights). Target: p99 <= 50 ms for a text query (encode + search) on 2 cores.

    python bench/serve.py [--queries 200] [--gallery 1000000]
"""
import argparse
import tempfile
import time

import numpy as np
from PIL import Image

from bench._common import demo_captions, demo_text_tower, result
from models.checkpoint import save_checkpoint
from models.factory import model_from_towers
from models.onnx_export import export_encoders
from retrieval.encoder import OnnxEncoder, TorchEncoder
from retrieval.vector_search import VectorIndex, recall_against_exact


def percentiles(function, inputs):
    times = []
    for item in inputs:
        started = time.perf_counter()
        function(item)
        times.append((time.perf_counter() - started) * 1000)
    times.sort()
    return times[len(times) // 2], times[min(len(times) - 1, int(0.99 * len(times)))]


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--gallery", type=int, default=1_000_000)
    args = parser.parse_args()
    directory = tempfile.mkdtemp(prefix="bench-serve-")
    model, spec, tokenizer = model_from_towers("resnet18", demo_text_tower(), pretrained=False, text_pooling="mean",
                                               embed_dim=128, image_size=64, max_length=32)
    checkpoint = f"{directory}/model.pt"
    save_checkpoint(checkpoint, model, spec, tokenizer.to_files())
    export_encoders(checkpoint, f"{directory}/onnx")
    encoders = {"pytorch": TorchEncoder(checkpoint), "onnxruntime": OnnxEncoder(checkpoint, f"{directory}/onnx")}
    texts = demo_captions(args.queries, seed=5)
    image = Image.new("RGB", (64, 64), (200, 40, 40))
    print(f"{'encoder':<12} {'text p50':>9} {'text p99':>9} {'image p50':>10} {'image p99':>10}  (ms, 1 query)")
    encode = {}
    for name, encoder in encoders.items():
        for warm in texts[:5]:
            encoder.encode_texts([warm])
        text_p50, text_p99 = percentiles(lambda t: encoder.encode_texts([t]), texts)
        image_p50, image_p99 = percentiles(lambda i: encoder.encode_images([i]), [image] * (args.queries // 2))
        encode[name] = (text_p50, text_p99)
        print(f"{name:<12} {text_p50:>9.2f} {text_p99:>9.2f} {image_p50:>10.2f} {image_p99:>10.2f}")

    # Real embeddings cluster; a gallery of 1,000 clusters with spread makes the FAISS recall meaningful.
    rng = np.random.default_rng(0)
    centres = rng.standard_normal((1000, 128), dtype=np.float32)
    gallery = centres[rng.integers(0, 1000, args.gallery)] + 0.6 * rng.standard_normal((args.gallery, 128),
                                                                                         dtype=np.float32)
    gallery /= np.linalg.norm(gallery, axis=1, keepdims=True)
    queries = gallery[rng.integers(0, args.gallery, 100)] + 0.05 * rng.standard_normal((100, 128), dtype=np.float32)
    queries /= np.linalg.norm(queries, axis=1, keepdims=True)
    print(f"\nsearch over {args.gallery:,} vectors (dim 128), top 10, one query at a time")
    print(f"{'index':<12} {'build s':>8} {'p50 ms':>8} {'p99 ms':>8} {'recall@10':>10}")
    search = {}
    for kind in ("exact", "faiss-ivf"):
        started = time.perf_counter()
        vector_index = VectorIndex(gallery, kind, ivf_nlist=1024, ivf_nprobe=16)
        build = time.perf_counter() - started
        p50, p99 = percentiles(lambda q: vector_index.search(q[None, :], 10), queries)
        recall = recall_against_exact(vector_index, queries[:20])
        search[kind] = (p50, p99)
        print(f"{kind:<12} {build:>8.1f} {p50:>8.2f} {p99:>8.2f} {recall:>10.3f}")
    best = min(encode.values(), key=lambda pair: pair[1])
    total_p99 = best[1] + search["faiss-ivf"][1]
    print(f"\ntext query end to end (best encoder + IVF search at {args.gallery:,}): p99 about {total_p99:.1f} ms "
          f"(target <= 50 ms)")
    result("serve_text_encode_p99", encode["onnxruntime"][1], encode["pytorch"][1], "lower", "ms (ONNX Runtime vs PyTorch)")


if __name__ == "__main__":
    main()
