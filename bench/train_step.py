"""Training samples/s: our model vs an open_clip CustomTextCLIP built from the same towers.

Both: ResNet18 image tower (torchvision for us, timm for open_clip), the same 2-layer RoBERTa config (HF,
random init), embedding 128, mean pooling, batch 128 at 64 px, fp32 on CPU, AdamW, identical input tensors.
Steps alternate between the two models so machine noise hits both alike.

    python bench/train_step.py [--batch 128] [--image-size 64] [--steps 6]
    python bench/train_step.py --profile 2     # also: torch.profiler's per-op table of 2 steps of each

With --profile the two steps' self CPU time per operator is printed side by side (the ops that differ most
first): where one step spends more than the other.
"""
import argparse

import torch

from bench._common import demo_captions, demo_text_tower, result
from models.factory import model_from_towers
from models.loss import contrastive_loss


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--profile", type=int, default=0, metavar="STEPS",
                        help="profile this many steps of each model with torch.profiler and print the per-op table")
    args = parser.parse_args()
    torch.manual_seed(0)
    text_dir = demo_text_tower()

    ours, _, tokenizer = model_from_towers("resnet18", text_dir, pretrained=False, text_pooling="mean",
                                           embed_dim=128, image_size=args.image_size, max_length=32)
    ours.image_backbone.to(memory_format=torch.channels_last)  # our training default (channels-last: true)
    from open_clip.loss import ClipLoss
    from open_clip.model import CustomTextCLIP

    theirs = CustomTextCLIP(
        embed_dim=128,
        vision_cfg={"timm_model_name": "resnet18", "timm_model_pretrained": False, "timm_pool": "avg",
                    "timm_proj": "linear", "image_size": args.image_size},
        text_cfg={"hf_model_name": text_dir, "hf_tokenizer_name": text_dir, "hf_proj_type": "linear",
                  "hf_pooler_type": "mean_pooler", "hf_model_pretrained": False})
    images = torch.randn(args.batch, 3, args.image_size, args.image_size)
    input_ids = tokenizer(demo_captions(args.batch, seed=1))
    clip_loss = ClipLoss()

    def our_step(optimizer):
        image_features, text_features, scale = ours(images.contiguous(memory_format=torch.channels_last), input_ids)
        loss = contrastive_loss(image_features, text_features, scale)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    def their_step(optimizer):
        image_features, text_features, scale = theirs(images, input_ids)
        loss = clip_loss(image_features, text_features, scale)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    import time

    runs = {"ours": (our_step, torch.optim.AdamW(ours.parameters(), 1e-4), []),
            "open_clip": (their_step, torch.optim.AdamW(theirs.parameters(), 1e-4), [])}
    for name, (step, optimizer, _) in runs.items():
        ours.train(), theirs.train()
        step(optimizer)  # warm-up
    for _ in range(args.steps):
        for name, (step, optimizer, times) in runs.items():
            started = time.perf_counter()
            step(optimizer)
            times.append(time.perf_counter() - started)
    print(f"batch {args.batch}, {args.image_size} px, fp32, {torch.get_num_threads()} threads, "
          f"{args.steps} timed steps each (median)")
    print(f"{'model':<12} {'params':>9} {'s/step':>8} {'samples/s':>10}")
    rates = {}
    for name, (_, _, times) in runs.items():
        model = ours if name == "ours" else theirs
        median = sorted(times)[len(times) // 2]
        rates[name] = args.batch / median
        print(f"{name:<12} {sum(p.numel() for p in model.parameters()) / 1e6:>8.2f}M {median:>8.3f} "
              f"{rates[name]:>10.1f}")
    result("train_step", rates["ours"], rates["open_clip"], "higher", "samples/s")
    if args.profile:
        print_profiles({name: (step, optimizer) for name, (step, optimizer, _) in runs.items()}, args.profile)


def self_times(step, optimizer, steps):
    """{operator name: self CPU milliseconds per step} of ``steps`` calls of step(optimizer)."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU]) as profiler:
        for _ in range(steps):
            step(optimizer)
    return {event.key: event.self_cpu_time_total / 1000 / steps for event in profiler.key_averages()}


def print_profiles(runs, steps, rows=20):
    """The per-op self CPU time of each step, the operators with the largest difference first."""
    times = {name: self_times(step, optimizer, steps) for name, (step, optimizer) in runs.items()}
    ours, theirs = times["ours"], times["open_clip"]
    print(f"\nself CPU ms per step (torch.profiler, {steps} steps each): total ours {sum(ours.values()):.0f}, "
          f"open_clip {sum(theirs.values()):.0f}")
    print(f"{'operator':<44} {'ours':>8} {'open_clip':>10} {'ours - theirs':>14}")
    names = sorted(set(ours) | set(theirs), key=lambda op: -abs(ours.get(op, 0.0) - theirs.get(op, 0.0)))
    for op in names[:rows]:
        mine, other = ours.get(op, 0.0), theirs.get(op, 0.0)
        print(f"{op[:44]:<44} {mine:>8.1f} {other:>10.1f} {mine - other:>+14.1f}")


if __name__ == "__main__":
    main()
