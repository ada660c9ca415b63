"""Retrieval R@k: our chunked one-pass recall vs clip_benchmark's, and the bare GEMM as the floor.

Random normalised embeddings (dim 512, 5 captions per image, captions = image + noise) at 5k x 25k and
50k x 250k. clip_benchmark builds the full caption x image score matrix, so at the large size (50 GB) it
cannot run on this machine and is reported as such. Each measurement runs in its own process (peak RSS
above the embeddings' own memory).

    python bench/recall.py [--skip-large]
"""
import argparse
import json
import subprocess
import sys
import time

from bench._common import reset_peak_rss, result, rss_mb

SIZES = {"5k x 25k": (5_000, 25_000), "50k x 250k": (50_000, 250_000)}


def embeddings(images, texts, dim=512, seed=0):
    import torch
    import torch.nn.functional as F

    generator = torch.Generator().manual_seed(seed)
    image_features = F.normalize(torch.randn(images, dim, generator=generator), dim=-1)
    owner = torch.arange(texts) * images // texts
    text_features = torch.randn(texts, dim, generator=generator).mul_(1.2).add_(image_features[owner])
    return image_features, F.normalize(text_features, dim=-1), owner


def measure(method, images, texts):
    import torch

    from evaluation.recall import CHUNK_ELEMENTS, retrieval_recall

    image_features, text_features, owner = embeddings(images, texts)
    before = rss_mb("VmRSS")
    reset_peak_rss()
    started = time.perf_counter()
    if method == "ours":
        metrics = retrieval_recall(image_features, text_features, owner)
    elif method == "gemm":
        chunk = CHUNK_ELEMENTS // images
        for start in range(0, texts, chunk):
            text_features[start:start + chunk] @ image_features.t()
        metrics = {}
    else:
        from clip_benchmark.metrics.zeroshot_retrieval import batchify, recall_at_k

        scores = text_features @ image_features.t()
        positive = torch.zeros_like(scores, dtype=torch.bool)
        positive[torch.arange(texts), owner] = True
        metrics = {}
        for k in (1, 5, 10):
            metrics[f"t2i_r{k}"] = (batchify(recall_at_k, scores, positive, 1024, "cpu", k=k) > 0).float().mean().item()
            metrics[f"i2t_r{k}"] = (batchify(recall_at_k, scores.T, positive.T, 1024, "cpu", k=k) > 0).float().mean().item()
    return {"seconds": time.perf_counter() - started, "peak_mb": rss_mb("VmHWM") - before, "metrics": metrics}


def run(method, images, texts):
    output = subprocess.run([sys.executable, __file__, "--worker", method, "--images", str(images), "--texts",
                             str(texts)], capture_output=True, text=True)
    if output.returncode:
        raise RuntimeError(output.stderr[-2000:])
    return json.loads(output.stdout.strip().splitlines()[-1])


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--skip-large", action="store_true")
    parser.add_argument("--worker", choices=("ours", "gemm", "clip_benchmark"))
    parser.add_argument("--images", type=int)
    parser.add_argument("--texts", type=int)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(measure(args.worker, args.images, args.texts)))
        return
    print(f"{'size':<11} {'method':<15} {'seconds':>8} {'peak MiB':>9}  i2t R@1/5/10  t2i R@1/5/10")
    results = {}
    for label, (images, texts) in SIZES.items():
        if args.skip_large and images > 10_000:
            continue
        rows = {"gemm (floor)": run("gemm", images, texts), "ours": run("ours", images, texts)}
        matrix_gb = images * texts * 4 / 2 ** 30
        if matrix_gb < 4:
            rows["clip_benchmark"] = run("clip_benchmark", images, texts)
        for name, row in rows.items():
            m = row["metrics"]
            recalls = (" ".join(f"{m[f'i2t_r{k}']:.4f}" for k in (1, 5, 10)) + "  "
                       + " ".join(f"{m[f't2i_r{k}']:.4f}" for k in (1, 5, 10))) if m else ""
            print(f"{label:<11} {name:<15} {row['seconds']:>8.2f} {row['peak_mb']:>9.0f}  {recalls}")
        if "clip_benchmark" in rows:
            same = all(abs(rows["ours"]["metrics"][k] - v) < 1e-6 for k, v in rows["clip_benchmark"]["metrics"].items())
            print(f"{label:<11} numbers equal clip_benchmark's: {same}")
        else:
            print(f"{label:<11} clip_benchmark: not run (its full score matrix alone needs {matrix_gb:.0f} GiB)")
        results[label] = rows
    for label, rows in results.items():
        print(f"{label}: ours / GEMM floor = {rows['ours']['seconds'] / rows['gemm (floor)']['seconds']:.2f}x "
              f"time (target <= 1.5x), peak {rows['ours']['peak_mb']:.0f} MiB")
    small = results["5k x 25k"]
    result("recall", small["ours"]["seconds"], small["clip_benchmark"]["seconds"], "lower", "seconds (5k x 25k)")
    for label, rows in results.items():  # the goal: at most 1.5x the bare GEMM, i.e. ratio >= 0.667
        result(f"recall_vs_gemm_{label.replace(' ', '')}", rows["ours"]["seconds"], rows["gemm (floor)"]["seconds"],
               "lower", "seconds (ours vs the bare GEMM)")


if __name__ == "__main__":
    main()
