"""GPU training throughput of the original project's model: ResNet50 + RoBERTa-base (random init), bf16 autocast.

Reports samples/s and peak memory at the original project's batch 192, an MFU estimate, and the largest batch that fits
with and without the gradient cache. Run through bench/gpu.sh on one GPU; `--device cpu --quick` checks the
code path anywhere.
"""
import argparse
import time

import torch
from transformers import AutoModel, RobertaConfig

from bench._common import result
from models.image_tower import build_image_backbone
from models.model import ContrastiveModel
from models.text_tower import TextTower
from training.step import grad_cache_step, plain_step

# Forward GFLOPs per sample: ResNet50 at 224 px (4.1 GMACs = 8.2 GFLOPs) and RoBERTa-base over L tokens
# (2 FLOPs per non-embedding parameter per token, ~85M parameters, plus attention); backward = 2x forward.
RESNET50_GFLOPS = 8.2


def text_gflops(length, hidden=768, layers=12):
    return (2 * 85e6 * length + 4 * layers * length * length * hidden) / 1e9


def training_flops_per_sample(image_size, length):
    """Forward + backward FLOPs of one sample (backward = 2x forward)."""
    return 3 * (RESNET50_GFLOPS * (image_size / 224) ** 2 + text_gflops(length)) * 1e9


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


def measure(device, quick=False, batch=192, steps=20, length=32, image_size=224, chunk=192, cap=32768,
            peak_tflops=989.0):
    """RN50 + RoBERTa-base at ``batch``: samples/s, ms/step, peak GiB, MFU, largest batch plain and cached.

    quick: tiny sizes, to check the code path on CPU.
    """
    if quick:
        batch, steps, image_size, length, chunk, cap = 4, 2, 64, 8, 2, 8
    dtype = torch.bfloat16 if device.type == "cuda" else None
    torch.backends.cudnn.benchmark = True
    model = build(device, 1 if quick else 12).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-5, fused=device.type == "cuda")
    step = step_fn(model, optimizer, device, dtype, 0, image_size, length)
    for _ in range(3):
        step(batch)
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    started = time.perf_counter()
    for _ in range(steps):
        step(batch)
    if device.type == "cuda":
        torch.cuda.synchronize()
    seconds = (time.perf_counter() - started) / steps
    peak_gib = torch.cuda.max_memory_allocated() / 2 ** 30 if device.type == "cuda" else float("nan")
    rate = batch / seconds
    flops = training_flops_per_sample(image_size, length)
    plain_best, plain_capped = largest_batch(step, batch, cap, device)
    cached = step_fn(model, optimizer, device, dtype, chunk, image_size, length)
    cache_best, cache_capped = largest_batch(cached, batch, cap, device)
    return {"device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
            "precision": "bf16 autocast" if dtype else "fp32", "batch": batch, "image_size": image_size,
            "tokens": length, "samples_per_s": rate, "ms_per_step": seconds * 1000,
            "peak_gib": peak_gib,
            "gflop_per_sample": flops / 1e9, "peak_tflops": peak_tflops,
            "mfu": rate * flops / (peak_tflops * 1e12), "largest_plain": plain_best,
            "largest_plain_capped": plain_capped, "largest_cache": cache_best, "largest_cache_capped": cache_capped,
            "cache_chunk": chunk}


def measure_compiled(device, batch=192, steps=20, length=32, image_size=224, peak_tflops=989.0):
    """The same step as ``measure`` with the model under torch.compile: samples/s, MFU, compile seconds."""
    torch.backends.cudnn.benchmark = True  # as measure() sets it: the same settings when run alone (--only)
    model = build(device, 12).train()
    compiled = torch.compile(model)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-5, fused=True)
    step = step_fn(compiled, optimizer, device, torch.bfloat16, 0, image_size, length)
    started = time.perf_counter()
    for _ in range(3):
        step(batch)
    torch.cuda.synchronize()
    compile_s = time.perf_counter() - started
    started = time.perf_counter()
    for _ in range(steps):
        step(batch)
    torch.cuda.synchronize()
    rate = batch * steps / (time.perf_counter() - started)
    flops = training_flops_per_sample(image_size, length)
    return {"batch": batch, "samples_per_s": rate, "mfu": rate * flops / (peak_tflops * 1e12), "compile_s": compile_s}


def compare_open_clip(device, quick=False, batch=192, steps=10, image_size=224, length=32):
    """Training samples/s of ours and of open_clip's CustomTextCLIP on the same towers (ResNet50: torchvision /
    timm; the same RoBERTa-base-sized HF config), bf16 autocast on CUDA, alternating steps."""
    import tempfile

    from open_clip.loss import ClipLoss
    from open_clip.model import CustomTextCLIP

    from bench._common import demo_captions
    from models.factory import model_from_towers
    from models.loss import contrastive_loss
    from scripts.make_demo_text_tower import write_text_tower
    from utils.device import autocast

    image_model, hidden, layers, heads = ("resnet50", 768, 12, 12) if not quick else ("resnet18", 32, 1, 2)
    if quick:
        batch, steps, image_size, length = 4, 2, 64, 8
    text_dir = tempfile.mkdtemp(prefix="gpu-step-text-")
    write_text_tower(demo_captions(2000), text_dir, vocab_size=1000, hidden_size=hidden, layers=layers,
                     heads=heads, max_length=max(length, 16))
    ours, _, tokenizer = model_from_towers(image_model, text_dir, pretrained=False, text_pooling="cls",
                                           embed_dim=512, image_size=image_size, max_length=length)
    theirs = CustomTextCLIP(
        embed_dim=512,
        vision_cfg={"timm_model_name": image_model, "timm_model_pretrained": False, "timm_pool": "avg",
                    "timm_proj": "linear", "image_size": image_size},
        text_cfg={"hf_model_name": text_dir, "hf_tokenizer_name": text_dir, "hf_proj_type": "linear",
                  "hf_pooler_type": "cls_pooler", "hf_model_pretrained": False})
    ours.to(device).train()
    ours.image_backbone.to(memory_format=torch.channels_last)
    theirs.to(device).train()
    dtype = torch.bfloat16 if device.type == "cuda" else None
    images = torch.randn(batch, 3, image_size, image_size, device=device)
    input_ids = tokenizer(demo_captions(batch, seed=1)).to(device)
    clip_loss = ClipLoss()

    def our_step(optimizer):
        with autocast(device, dtype):
            image_features, text_features, scale = ours(images.contiguous(memory_format=torch.channels_last),
                                                        input_ids)
        loss = contrastive_loss(image_features.float(), text_features.float(), scale.float())
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    def their_step(optimizer):
        with autocast(device, dtype):
            image_features, text_features, scale = theirs(images, input_ids)
            loss = clip_loss(image_features, text_features, scale)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    fused = device.type == "cuda"
    runs = {"ours": (our_step, torch.optim.AdamW(ours.parameters(), 1e-5, fused=fused), []),
            "open_clip": (their_step, torch.optim.AdamW(theirs.parameters(), 1e-5, fused=fused), [])}
    for step, optimizer, _ in runs.values():
        for _ in range(2):
            step(optimizer)  # warm-up (cudnn autotuning)
    for _ in range(steps):
        for step, optimizer, times in runs.values():
            if device.type == "cuda":
                torch.cuda.synchronize()
            started = time.perf_counter()
            step(optimizer)
            if device.type == "cuda":
                torch.cuda.synchronize()
            times.append(time.perf_counter() - started)
    return {name: batch / sorted(times)[len(times) // 2] for name, (_, _, times) in runs.items()} | {
        "batch": batch, "image_size": image_size, "tokens": length}


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
    n = measure(torch.device(args.device), args.quick, args.batch, args.steps, args.length, args.image_size,
                args.chunk, args.cap, args.peak_tflops)
    print(f"device {n['device']}, ResNet50 + RoBERTa-base (random init), {n['image_size']} px, {n['tokens']} tokens, "
          f"{n['precision']}, channels_last, AdamW")
    print(f"batch {n['batch']}: {n['samples_per_s']:.0f} samples/s, {n['ms_per_step']:.0f} ms/step, peak "
          f"{n['peak_gib']:.1f} GiB, MFU {n['mfu']:.1%} (of {n['peak_tflops']:.0f} TFLOPS, "
          f"{n['gflop_per_sample']:.0f} GFLOP/sample)")
    print(f"largest batch (doubling from {n['batch']}): plain {n['largest_plain']}"
          f"{'+ (cap)' if n['largest_plain_capped'] else ''}, gradient cache (chunk {n['cache_chunk']}) "
          f"{n['largest_cache']}{'+ (cap)' if n['largest_cache_capped'] else ''}")
    result("gpu_largest_batch", float(n["largest_cache"] or 0), float(n["largest_plain"] or 1), "higher",
           "samples per step")


if __name__ == "__main__":
    main()
