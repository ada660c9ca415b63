"""One prepared check of every CUDA path of training, PASS/FAIL per path, plus the GPU numbers; writes JSON.

    bash bench/gpu.sh --out gpu-report.json          # one H100/H200, about 7 minutes (409 s on an H200)
    python bench/gpu_check.py --device cpu --quick   # the rehearsal anywhere: CUDA-only paths say SKIP

Paths: bf16 autocast and fp16 + GradScaler, plain and through the gradient cache (gradients against the fp32
reference, relative L2 error per parameter within TOLERANCES, or within FLOOR_FACTOR times the error that rounding
the weights and input images to that format once gives in float32); fused AdamW; channels_last; torch.compile;
gradient checkpointing; a 1-process torchrun run of train.py (NCCL on CUDA); kill -9 and resume of train.py.
Numbers: RN50 + RoBERTa-base samples/s, peak memory and MFU at batch 192; the largest batch with and without
the gradient cache; open_clip's training step on the same towers, side by side (ratio).
"""
import argparse
import copy
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import traceback

import torch

from bench._common import ROOT, demo_captions, result

# Largest relative L2 error ||g - g_fp32|| / ||g_fp32|| accepted, over the parameters with a gradient.
TOLERANCES = {"bf16": 5e-2, "fp16": 1e-2, "fp32": 1e-4}
# At random init every noise image maps to nearly the same embedding (cosine 0.9999 for ResNet50 at 224 px), so
# the contrastive gradient is a small difference of near-equal terms and the worst parameter's direction moves a
# lot under any rounding: rounding the weights and images to bf16 once moves the float32 gradient by 0.49 on the
# H200's fixture (0.15-0.32 for the quick ResNet18), bf16 autocast by 0.60 plain and 0.70 through the gradient
# cache (1.2x and 1.4x that floor). So the direction test is loose (3x the floor, at most FLOOR_CAP: a zeroed
# parameter fails it), and a second test is tight: each tower's gradient norm within NORM_TOLERANCE of float32's
# (the quick fixture: within 0.03 in bf16, 4 seeds), which a gradient scaled by a wrong factor (a chunk count, a
# loss scale) fails.
FLOOR_FACTOR, FLOOR_CAP = 3.0, 0.9
NORM_TOLERANCE = 0.1
# Two float32 paths compared (the gradient cache against the plain step; compiled against eager). On CUDA they run
# other kernels (cuDNN picks other convolution algorithms for a chunk of 8 than for the batch of 32; inductor
# generates its own), whose last bits differ, and this fixture's gradient amplifies that: H200, 2026-12-04, 4.6e-3
# and 6.7e-3. The bar is 3x the larger; a lost chunk is off by 0.5 or more (tests/test_gpu_check.py).
FP32_PATHS_TOLERANCE = {"cpu": 1e-4, "cuda": 2e-2}
RESUME_TOLERANCE = {"cpu": 0.0, "cuda": 1e-2}  # CUDA kernels are not bitwise deterministic


class NotApplicable(Exception):
    """The path does not exist on this device (reported as SKIP with the reason)."""


def tiny_model(text_dir, image_model, image_size):
    from models.factory import model_from_towers

    # mean pooling: a random tower's CLS output is the same for every caption (cosine 0.999999), mean pooling's is not
    model, spec, tokenizer = model_from_towers(image_model, text_dir, pretrained=False, text_pooling="mean",
                                               image_size=image_size, max_length=32)
    return model, tokenizer


def gradients(model):
    return {n: p.grad.detach().float().clone() for n, p in model.named_parameters() if p.grad is not None}


def worst_relative_error(measured, reference):
    """max over parameters of ||g - g_ref|| / ||g_ref||, for parameters whose gradient is not negligible
    (norm above 1e-3 of the largest: the relative error of a near-zero gradient is rounding noise)."""
    assert measured.keys() == reference.keys() and measured, "different parameters got gradients"
    largest = max(g.norm().item() for g in reference.values())
    return max(((measured[n] - reference[n]).norm() / reference[n].norm()).item()
               for n in reference if reference[n].norm().item() > 1e-3 * largest)


class Fixture:
    """A model and one batch; ``step`` runs a training step's forward and backward on a fresh copy."""

    def __init__(self, args, device, text_dir):
        self.args, self.device = args, device
        self.model, tokenizer = tiny_model(text_dir, args.image_model, args.image_size)
        self.model.logit_scale.requires_grad_(True)
        generator = torch.Generator().manual_seed(0)
        self.images = torch.randn(args.batch, 3, args.image_size, args.image_size, generator=generator).to(device)
        self.input_ids = tokenizer(demo_captions(args.batch, seed=3)).to(device)
        self.state = {k: v.clone() for k, v in self.model.state_dict().items()}

    def fresh(self):
        """A copy of the starting model, in eval mode: no dropout, BatchNorm on running statistics."""
        model = copy.deepcopy(self.model)
        model.load_state_dict(self.state)
        return model.to(self.device).eval()

    def step(self, dtype=None, chunk=0, scaler_enabled=False, model=None, channels_last=False, init_scale=2.0 ** 16,
             images=None):
        from training.step import grad_cache_step, plain_step

        model = model if model is not None else self.fresh()  # a compiled module has no truth value
        torch.manual_seed(0)  # attention dropout draws in train mode: the same masks in every compared run
        images = self.images if images is None else images
        images = images.contiguous(memory_format=torch.channels_last) if channels_last else images
        scaler = torch.amp.GradScaler(self.device.type, init_scale=init_scale, enabled=scaler_enabled)
        optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.0)
        if chunk:
            grad_cache_step(model, images, self.input_ids, self.device, dtype, scaler, chunk)
        else:
            plain_step(model, images, self.input_ids, self.device, dtype, scaler)
        if scaler_enabled:
            scaler.unscale_(optimizer)
        return gradients(getattr(model, "_orig_mod", model))


def check_precision(fixture, reference, dtype, chunk):
    if fixture.device.type != "cuda" and dtype == torch.float16:
        raise NotApplicable("fp16 autocast is CUDA's; a CPU trains in bf16 (use-amp) or float32")
    scaled = dtype == torch.float16
    name = "fp16" if scaled else "bf16"
    for init_scale in (2.0 ** 16, 2.0 ** 12, 2.0 ** 8):  # an overflow makes training skip the step and lower
        measured = fixture.step(dtype, chunk, scaler_enabled=scaled, init_scale=init_scale)  # the scale: so do we
        if all(torch.isfinite(g).all() for g in measured.values()):
            break
    else:
        return False, "non-finite gradients at every loss scale tried (2**16, 2**12, 2**8)"
    error = worst_relative_error(measured, reference)
    floor = rounding_floor(fixture, reference, dtype)
    tolerance = max(TOLERANCES[name], min(FLOOR_FACTOR * floor, FLOOR_CAP))
    tower, ratio = worst_norm_ratio(measured, reference)
    scale = f", loss scale {init_scale:g}" if scaled else ""
    ok = error <= tolerance and abs(ratio - 1) <= NORM_TOLERANCE
    return ok, (f"relative gradient error {error:.2e} (tolerance {tolerance:.1e}: the larger of {TOLERANCES[name]:.0e} "
                f"and {FLOOR_FACTOR:g} x {floor:.2e} (at most {FLOOR_CAP:g}), the float32 error from rounding weights "
                f"and images to {name}); gradient norm of {tower} {ratio:.3f}x float32's (tolerance "
                f"{NORM_TOLERANCE:g}){scale}")


def worst_norm_ratio(measured, reference):
    """(part, ||g_part|| / ||g_fp32_part||) for the part of the model (image_backbone, image_projection,
    text_tower, logit_scale, ...) whose gradient norm is furthest from float32's."""
    parts = {}
    for name in reference:
        parts.setdefault(name.split(".")[0], []).append(name)
    ratios = {part: torch.cat([measured[n].flatten() for n in names]).norm().item()
              / max(torch.cat([reference[n].flatten() for n in names]).norm().item(), 1e-30)
              for part, names in parts.items()}
    return max(ratios.items(), key=lambda item: abs(item[1] - 1))


def rounding_floor(fixture, reference, dtype):
    """The float32 gradient's relative error when the weights and the input images are rounded to ``dtype`` once:
    how far this fixture's gradient moves under that format's rounding at all."""
    model = fixture.fresh()
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.copy_(parameter.to(dtype).float())
    return worst_relative_error(fixture.step(model=model, images=fixture.images.to(dtype).float()), reference)


def check_grad_cache_fp32(fixture, reference):
    error = worst_relative_error(fixture.step(None, chunk=max(1, fixture.args.batch // 4)), reference)
    tolerance = FP32_PATHS_TOLERANCE[fixture.device.type]
    return error <= tolerance, f"relative gradient error {error:.2e} (tolerance {tolerance:.0e})"


def check_fused_adamw(fixture, reference):
    """One AdamW step, fused kernel against the for-loop one, from the same gradients (a second backward on CUDA
    differs in the last bits, and Adam's first step is about lr * sign(g)). Training uses the fused kernel on CUDA;
    on a CPU this checks the check (torch has a CPU fused kernel too)."""
    start = fixture.fresh()
    grads = fixture.step(model=start)
    weights = []
    for fused in (False, True):
        model = copy.deepcopy(start)  # a deep copy leaves .grad behind: set it from the one backward
        for name, parameter in model.named_parameters():
            parameter.grad = grads[name].clone() if name in grads else None
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, fused=fused, foreach=None if fused else False)
        optimizer.step()
        weights.append({n: p.detach().clone() for n, p in model.named_parameters()})
    initial = dict(start.named_parameters())
    moved = max((weights[1][n] - initial[n]).abs().max().item() for n in grads)
    difference = max((weights[0][n] - weights[1][n]).abs().max().item() for n in weights[0])
    return difference <= 1e-6 and moved > 1e-4, (f"max weight difference fused vs plain {difference:.1e} after one "
                                                 f"step of lr 1e-3 that moved weights by up to {moved:.1e}")


def check_channels_last(fixture, reference):
    model = fixture.fresh()
    with torch.no_grad():
        plain = model.encode_image(fixture.images)
        model.image_backbone.to(memory_format=torch.channels_last)
        last = model.encode_image(fixture.images.contiguous(memory_format=torch.channels_last))
        model.image_backbone.to(memory_format=torch.contiguous_format)
    difference = (plain - last).abs().max().item()
    return difference <= 1e-3, f"max embedding difference {difference:.1e}"


def check_compile(fixture, reference):
    if fixture.device.type != "cuda":
        raise NotApplicable("compiled kernels are checked on CUDA (on CPU inductor needs a C compiler and minutes)")
    compiled = torch.compile(fixture.fresh())
    error = worst_relative_error(fixture.step(model=compiled), reference)
    tolerance = FP32_PATHS_TOLERANCE[fixture.device.type]
    return error <= tolerance, f"relative gradient error {error:.2e} (tolerance {tolerance:.0e})"


def _train_mode_without_dropout(model):
    model.train()
    for module in model.modules():
        if isinstance(module, torch.nn.Dropout):
            module.eval()
    return model


def check_checkpointing(fixture, reference):
    checkpointed = _train_mode_without_dropout(fixture.fresh())
    checkpointed.enable_grad_checkpointing()
    measured = fixture.step(model=checkpointed)
    trained_reference = fixture.step(model=_train_mode_without_dropout(fixture.fresh()))
    error = worst_relative_error(measured, trained_reference)
    return error <= 1e-4, f"relative gradient error {error:.2e} (train mode, BatchNorm on batch statistics)"


def tiny_run_args(work, device, out, epochs):
    return ["train.py", "--config", "configs/demo/train.yaml", "--load-path", os.path.join(work, "pretrain.pt"),
            "--train-data", os.path.join(work, "data", "train"), "--valid-data", os.path.join(work, "data", "valid"),
            "--best-path", os.path.join(out, "best.pt"), "--last-path", os.path.join(out, "last.pt"),
            "--log-dir", os.path.join(out, "logs"), "--batch-size", "16", "--num-workers", "2", "--epochs",
            str(epochs), "--warmup-steps", "2", "--device", device.type]


def check_torchrun(work, device):
    out = os.path.join(work, "torchrun")
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "1", "--master_port", "29561",
               *tiny_run_args(work, device, out, 1)]
    run = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=240)
    backend = "nccl" if device.type == "cuda" else "gloo"
    ok = run.returncode == 0 and "epoch 1/1" in run.stdout and f"distributed: {backend}, 1 process" in run.stdout
    return ok, f"{backend} process group, exit {run.returncode}" + ("" if ok else f": {run.stderr.strip()[-400:]}")


def check_kill_and_resume(work, device):
    straight, killed = os.path.join(work, "straight"), os.path.join(work, "killed")
    run = subprocess.run([sys.executable, *tiny_run_args(work, device, straight, 3)], cwd=ROOT,
                         capture_output=True, text=True, timeout=240)
    if run.returncode:
        return False, f"uninterrupted run failed: {run.stderr.strip()[-400:]}"
    process = subprocess.Popen([sys.executable, *tiny_run_args(work, device, killed, 3)], cwd=ROOT,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 240
    while not os.path.exists(os.path.join(killed, "last.pt")) and process.poll() is None and time.time() < deadline:
        time.sleep(0.02)
    process.send_signal(signal.SIGKILL)
    process.wait()
    epoch = torch.load(os.path.join(killed, "last.pt"), weights_only=True)["training"]["epoch"]
    if epoch >= 3:
        return False, "the run finished before the kill: nothing was resumed"
    resume = subprocess.run([sys.executable, *tiny_run_args(work, device, killed, 3), "--resume",
                             os.path.join(killed, "last.pt")], cwd=ROOT, capture_output=True, text=True, timeout=240)
    if resume.returncode:
        return False, f"resume failed: {resume.stderr.strip()[-400:]}"
    a = torch.load(os.path.join(straight, "last.pt"), weights_only=True)["state_dict"]
    b = torch.load(os.path.join(killed, "last.pt"), weights_only=True)["state_dict"]
    difference = max((a[k].float() - b[k].float()).abs().max().item() for k in a)
    tolerance = RESUME_TOLERANCE[device.type]
    return difference <= tolerance, (f"killed after epoch {epoch} of 3; max weight difference to the "
                                     f"uninterrupted run {difference:.1e} (tolerance {tolerance:.0e})")


def prepare_tiny_run(work):
    """The demo format at test size: 48 + 16 images of 32 px, a tiny RoBERTa directory, init.py's model."""
    from scripts.make_demo_dataset import main as make_dataset
    from scripts.make_demo_text_tower import read_captions, write_text_tower

    data = os.path.join(work, "data")
    assert make_dataset(["--out", data, "--train", "48", "--valid", "16", "--image-size", "32", "--seed", "3"]) == 0
    text = os.path.join(work, "text")
    write_text_tower(read_captions(os.path.join(data, "train")), text, vocab_size=300,
                     hidden_size=32, layers=1, heads=2, max_length=32)
    run = subprocess.run([sys.executable, "init.py", "--config", "configs/demo/init.yaml", "--text-model", text,
                          "--save-path", os.path.join(work, "pretrain.pt"), "--image-size", "32", "--max-length",
                          "32", "--embed-dim", "32"], cwd=ROOT, capture_output=True, text=True, timeout=240)
    assert run.returncode == 0, run.stderr
    return text


def throughput_numbers(args, device, report):
    """gpu_step's measurements (samples/s, memory, MFU, largest batches), recorded in ``report``."""
    from bench import gpu_step

    report["throughput"] = gpu_step.measure(device, quick=args.quick)
    numbers = report["throughput"]
    return True, (f"batch {numbers['batch']}: {numbers['samples_per_s']:.0f} samples/s, peak "
                  f"{numbers['peak_gib']:.1f} GiB, MFU {numbers['mfu']:.1%}; largest batch plain "
                  f"{numbers['largest_plain']}, gradient cache {numbers['largest_cache']}")


def compiled_throughput(args, device, report):
    """samples/s and MFU of the same step with torch.compile (last: inductor takes a minute or more on RN50)."""
    from bench import gpu_step

    if device.type != "cuda":
        raise NotApplicable("compiled kernels are measured on CUDA (on CPU inductor needs a C compiler and minutes)")
    numbers = gpu_step.measure_compiled(device)
    report["throughput_compiled"] = numbers
    return True, (f"batch {numbers['batch']}: {numbers['samples_per_s']:.0f} samples/s, MFU {numbers['mfu']:.1%} "
                  f"(compile {numbers['compile_s']:.0f} s)")


def open_clip_side_by_side(args, device, report):
    from bench import gpu_step

    try:
        import open_clip  # noqa: F401
    except ImportError:
        raise NotApplicable("open_clip_torch is not installed (carry its wheel and ftfy's)") from None
    numbers = gpu_step.compare_open_clip(device, quick=args.quick)
    report["open_clip"] = numbers
    return True, (f"ours {numbers['ours']:.0f} vs open_clip {numbers['open_clip']:.0f} samples/s "
                  f"(ratio {numbers['ours'] / numbers['open_clip']:.2f})")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--quick", action="store_true", help="small sizes: the rehearsal on CPU")
    parser.add_argument("--out", default="gpu-report.json", help="the JSON report")
    parser.add_argument("--only", default="", help="comma-separated words: run only the checks whose names hold one "
                        "(a rerun after a fix, inside the device minutes left)")
    args = parser.parse_args()
    device = torch.device(args.device)
    torch.manual_seed(0)  # the fixture's random towers: the same model in every run
    if device.type == "cuda" and not torch.cuda.is_available():
        sys.exit("error: CUDA is not available here; rehearse with --device cpu --quick")
    args.batch, args.image_size, args.image_model = (8, 32, "resnet18") if args.quick else (32, 224, "resnet50")
    torch.backends.cuda.matmul.allow_tf32 = False  # the fp32 reference must be fp32
    torch.backends.cudnn.allow_tf32 = False
    import transformers

    report = {"device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
              "torch": torch.__version__, "transformers": transformers.__version__,
              "date": time.strftime("%Y-%m-%d"), "checks": {}}
    work = tempfile.mkdtemp(prefix="gpu-check-")
    tiny_text = prepare_tiny_run(work)
    fixture = Fixture(args, device, tiny_text if args.quick else write_base_text_tower(work))
    reference = fixture.step()
    checks = [
        ("bf16 autocast", lambda: check_precision(fixture, reference, torch.bfloat16, 0)),
        ("fp16 + GradScaler", lambda: check_precision(fixture, reference, torch.float16, 0)),
        ("gradient cache fp32", lambda: check_grad_cache_fp32(fixture, reference)),
        ("gradient cache bf16", lambda: check_precision(fixture, reference, torch.bfloat16, args.batch // 4)),
        ("gradient cache fp16 + GradScaler", lambda: check_precision(fixture, reference, torch.float16,
                                                                     args.batch // 4)),
        ("fused AdamW", lambda: check_fused_adamw(fixture, reference)),
        ("channels_last", lambda: check_channels_last(fixture, reference)),
        ("torch.compile", lambda: check_compile(fixture, reference)),
        ("gradient checkpointing", lambda: check_checkpointing(fixture, reference)),
        ("torchrun 1 process", lambda: check_torchrun(work, device)),
        ("kill -9 and resume", lambda: check_kill_and_resume(work, device)),
        ("throughput, memory, MFU, largest batch", lambda: throughput_numbers(args, device, report)),
        ("open_clip side by side", lambda: open_clip_side_by_side(args, device, report)),
        ("throughput compiled", lambda: compiled_throughput(args, device, report)),
    ]
    if args.only:
        words = [word.strip().lower() for word in args.only.split(",") if word.strip()]
        checks = [(name, check) for name, check in checks if any(word in name.lower() for word in words)]
        if not checks:
            sys.exit(f"error: --only {args.only!r} names no check")
    failed = 0
    for name, check in checks:
        started = time.perf_counter()
        try:
            ok, detail = check()
            status = "PASS" if ok else "FAIL"
        except NotApplicable as reason:
            status, detail = "SKIP", str(reason)
        except Exception as error:  # a crash is a failed path, reported with the rest
            status, detail = "FAIL", f"{type(error).__name__}: {error}"
            traceback.print_exc()
        if device.type == "cuda":
            torch.cuda.empty_cache()
        failed += status == "FAIL"
        seconds = time.perf_counter() - started
        report["checks"][name] = {"status": status, "detail": detail, "seconds": round(seconds, 1)}
        print(f"{status}  {name}: {detail}  ({seconds:.0f} s)", flush=True)
        write_report(report, args.out)  # after every check: a timeout keeps what was measured
    print(f"wrote {args.out}: {failed} failed of {len(checks)}")
    if "throughput" in report:
        numbers = report["throughput"]
        result("gpu_largest_batch", float(numbers["largest_cache"] or 0), float(numbers["largest_plain"] or 1),
               "higher", "samples per step")
    sys.exit(1 if failed else 0)


def write_report(report, path):
    temporary = path + ".tmp"
    with open(temporary, "w", encoding="utf-8") as handle:
        json.dump(report, handle, indent=2)
    os.replace(temporary, path)


def write_base_text_tower(work):
    """A RoBERTa-base-sized directory (12 layers, 768 wide) with a small vocabulary, for the checks' model."""
    from scripts.make_demo_text_tower import write_text_tower

    text = os.path.join(work, "text-base")
    write_text_tower(demo_captions(2000), text, vocab_size=1000, hidden_size=768, layers=12, heads=12,
                     max_length=32)
    return text


if __name__ == "__main__":
    main()
