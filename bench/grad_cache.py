"""Peak memory of one training step at a big batch: gradient cache vs plain.

Demo-sized model (ResNet18 + 2-layer RoBERTa, embedding 128) at 32 px, batch 4096, fp32 on CPU. Each mode
runs in its own process; the number is the peak RSS during the step above the RSS before it
(on CUDA, torch.cuda.max_memory_allocated). Also checks that both give the same loss.

    python bench/grad_cache.py [--batch 4096] [--chunk 256] [--image-size 32]
"""
import argparse
import json
import subprocess
import sys
import time

from bench._common import demo_captions, demo_text_tower, reset_peak_rss, result, rss_mb


def one_step(mode, batch, chunk, image_size, text_dir):
    import torch

    from models.factory import model_from_towers
    from training.step import grad_cache_step, plain_step

    torch.manual_seed(0)
    model, _, tokenizer = model_from_towers("resnet18", text_dir, pretrained=False, text_pooling="mean",
                                            embed_dim=128, image_size=image_size, max_length=32)
    model.train()
    model.image_backbone.to(memory_format=torch.channels_last)
    images = torch.randn(batch, 3, image_size, image_size).contiguous(memory_format=torch.channels_last)
    input_ids = tokenizer(demo_captions(batch, seed=2))
    device = torch.device("cpu")
    scaler = torch.amp.GradScaler("cuda", enabled=False)
    before = rss_mb("VmRSS")
    reset_peak_rss()
    started = time.perf_counter()
    if mode == "plain":
        loss = plain_step(model, images, input_ids, device, None, scaler)
    else:
        loss = grad_cache_step(model, images, input_ids, device, None, scaler, chunk)
    seconds = time.perf_counter() - started
    return {"peak_mb": rss_mb("VmHWM") - before, "seconds": seconds, "loss": loss.item()}


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--batch", type=int, default=4096)
    parser.add_argument("--chunk", type=int, default=256)
    parser.add_argument("--image-size", type=int, default=32)
    parser.add_argument("--worker", choices=("plain", "cache"))
    parser.add_argument("--text-dir")
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(one_step(args.worker, args.batch, args.chunk, args.image_size, args.text_dir)))
        return
    text_dir = demo_text_tower()
    runs = {}
    for mode in ("plain", "cache"):
        output = subprocess.run([sys.executable, __file__, "--worker", mode, "--batch", str(args.batch), "--chunk",
                                 str(args.chunk), "--image-size", str(args.image_size), "--text-dir", text_dir],
                                capture_output=True, text=True, check=True).stdout
        runs[mode] = json.loads(output.strip().splitlines()[-1])
    print(f"one training step, batch {args.batch}, {args.image_size} px, demo-sized model, fp32 CPU")
    print(f"{'mode':<22} {'peak MiB':>9} {'seconds':>8} {'loss':>9}")
    for mode, label in (("plain", "plain"), ("cache", f"grad cache (chunk {args.chunk})")):
        run = runs[mode]
        print(f"{label:<22} {run['peak_mb']:>9.0f} {run['seconds']:>8.1f} {run['loss']:>9.4f}")
    assert abs(runs["plain"]["loss"] - runs["cache"]["loss"]) < 1e-3 * abs(runs["plain"]["loss"])
    result("grad_cache_memory", runs["cache"]["peak_mb"], runs["plain"]["peak_mb"], "lower", "MiB")


if __name__ == "__main__":
    main()
