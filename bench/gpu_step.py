"""GPU training throughput of the original project's model: ResNet50 + RoBERTa-base (random init), bf16 autocast.

Reports samples/s and peak memory at the original project's batch 192, an MFU estimate, and the largest batch that fits
with and without the gradient cache. Run through bench/gpu.sh on one GPU; `--device cpu --quick` checks the
code path anywhere.
"""
import argparse
import time

import torch
from transformers import AutoModel, RobertaConfig

from _common import result
from models.image_tower import build_image_backbone
from models.model import ContrastiveModel
from models.text_tower import TextTower
from training.step import grad_cache_step, plain_step

# Forward GFLOPs per sample: ResNet50 at 224 px (4.1 GMACs = 8.2 GFLOPs) and RoBERTa-base over L tokens
# (2 FLOPs per non-embedding parameter per token, ~85M parameters, plus attention); backward = 2x forward.
RESNET50_GFLOPS = 8.2


def text_gflops(length, hidden=768, layers=12):
    return (2 * 85e6 * length + 4 * layers * length * length * hidden) / 1e9


def build(device, text_layers):
    backbone, dim = build_image_backbone("resnet50")
    encoder = AutoModel.from_config(RobertaConfig(num_hidden_layers=text_layers), add_pooling_layer=False)
    model = ContrastiveModel(backbone, dim, TextTower(encoder, "cls"), pad_token_id=1).to(device)
    model.image_backbone.to(memory_format=torch.channels_last)
    return model


def step_fn(model, optimizer, device, dtype, chunk, image_size, length):
    scaler = torch.amp.GradScaler("cuda", enabled=False)

    def step(batch):
        images = torch.randn(batch, 3, image_size, image_size, device=device).contiguous(
            memory_format=torch.channels_last)
        input_ids = torch.randint(3, 50000, (batch, length), device=device)
        optimizer.zero_grad(set_to_none=True)
        if chunk:
            grad_cache_step(model, images, input_ids, device, dtype, scaler, chunk)
        else:
            plain_step(model, images, input_ids, device, dtype, scaler)
        optimizer.step()
    return step


def fits(step, batch, device):
    try:
        step(batch)
        if device.type == "cuda":
            torch.cuda.synchronize()
        return True
    except torch.cuda.OutOfMemoryError:
        return False
    finally:
        if device.type == "cuda":
            torch.cuda.empty_cache()


def largest_batch(step, start, cap, device):
    batch, best = start, None
    while batch <= cap and fits(step, batch, device):
        best, batch = batch, batch * 2
    return best, batch > cap


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--batch", type=int, default=192)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--length", type=int, default=32, help="caption tokens")
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--chunk", type=int, default=192, help="gradient-cache chunk for the largest-batch search")
    parser.add_argument("--cap", type=int, default=32768, help="stop the largest-batch search here")
    parser.add_argument("--peak-tflops", type=float, default=989.0, help="bf16 dense peak (H100 SXM: 989)")
    parser.add_argument("--quick", action="store_true", help="tiny settings to check the code path on CPU")
    args = parser.parse_args()
    device = torch.device(args.device)
    if args.quick:
        args.batch, args.steps, args.image_size, args.length, args.chunk, args.cap = 4, 2, 64, 8, 2, 8
    dtype = torch.bfloat16 if device.type == "cuda" else None
    torch.backends.cudnn.benchmark = True
    model = build(device, 1 if args.quick else 12).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-5, fused=device.type == "cuda")
    step = step_fn(model, optimizer, device, dtype, 0, args.image_size, args.length)
    for _ in range(3):
        step(args.batch)
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    started = time.perf_counter()
    for _ in range(args.steps):
        step(args.batch)
    if device.type == "cuda":
        torch.cuda.synchronize()
    seconds = (time.perf_counter() - started) / args.steps
    rate = args.batch / seconds
    peak_gib = torch.cuda.max_memory_allocated() / 2 ** 30 if device.type == "cuda" else float("nan")
    flops = 3 * (RESNET50_GFLOPS * (args.image_size / 224) ** 2 + text_gflops(args.length)) * 1e9
    mfu = rate * flops / (args.peak_tflops * 1e12)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    print(f"device {name}, ResNet50 + RoBERTa-base (random init), {args.image_size} px, {args.length} tokens, "
          f"{'bf16 autocast' if dtype else 'fp32'}, channels_last, {'fused ' if device.type == 'cuda' else ''}AdamW")
    print(f"batch {args.batch}: {rate:.0f} samples/s, {seconds * 1000:.0f} ms/step, peak {peak_gib:.1f} GiB, "
          f"MFU {mfu:.1%} (of {args.peak_tflops:.0f} TFLOPS, {flops / 1e9:.0f} GFLOP/sample)")
    plain_best, plain_capped = largest_batch(step, args.batch, args.cap, device)
    cached = step_fn(model, optimizer, device, dtype, args.chunk, args.image_size, args.length)
    cache_best, cache_capped = largest_batch(cached, args.batch, args.cap, device)
    print(f"largest batch (doubling from {args.batch}): plain {plain_best}{'+ (cap)' if plain_capped else ''}, "
          f"gradient cache (chunk {args.chunk}) {cache_best}{'+ (cap)' if cache_capped else ''}")
    result("gpu_largest_batch", float(cache_best or 0), float(plain_best or 1), "higher", "samples per step")


if __name__ == "__main__":
    main()
