"""WiSE-FT: interpolate a zero-shot and a fine-tuned checkpoint, sweep alpha on a validation split.

    python scripts/wise_ft.py --zero-shot checkpoints/pretrain.pt --fine-tuned checkpoints/best.pt \
        --valid-data datasets/valid --alphas 0,0.25,0.5,0.75,1 --out checkpoints/wise-ft.pt

Prints R@k and mean recall for every alpha and writes the checkpoint of the best alpha (or of --alpha).
Give --valid-data several times (the new domain's split and one of the domain the zero-shot model knew) to
choose the alpha that does best on all of them together: the mean of their mean recalls.
Both checkpoints must share the architecture and tokenizer (a model fine-tuned from the other).
"""
import argparse
import logging
import os

import torch

from data.caption_table import read_caption_table
from data.transforms import preprocess_for
from evaluation.embedding import evaluate_table
from evaluation.recall import mean_recall
from models.checkpoint import (checkpoint_contents, model_from_checkpoint, read_checkpoint,
                               same_architecture, save_checkpoint)
from models.interpolate import interpolate_weights
from utils.atomic_file import atomic_write_json, check_writable
from utils.device import resolve_device
from utils.errors import UserError, run_cli

logger = logging.getLogger(__name__)


def parse_alphas(text):
    try:
        alphas = [float(value) for value in text.split(",") if value.strip()]
    except ValueError:
        raise UserError(f"--alphas: expected comma-separated numbers, got '{text}'") from None
    if not alphas or any(not 0.0 <= a <= 1.0 for a in alphas):
        raise UserError(f"--alphas: give numbers in [0, 1], got '{text}'")
    return alphas


def main(argv):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--zero-shot", required=True, help="the starting checkpoint (init.py's or an import)")
    parser.add_argument("--fine-tuned", required=True, help="a checkpoint train.py fine-tuned from it")
    parser.add_argument("--valid-data", action="append", default=[],
                        help="dataset folder to choose alpha on (images/ + captions.csv); repeat for several")
    parser.add_argument("--alphas", default="0,0.25,0.5,0.75,1", help="alphas to evaluate (0 = zero-shot)")
    parser.add_argument("--alpha", type=float,
                        help="write this alpha instead of the best one (without --valid-data: no sweep)")
    parser.add_argument("--out", required=True, help="checkpoint to write")
    parser.add_argument("--report", help="also write every alpha's recall on every split to this JSON file")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing --out")
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--device", default="auto")
    args = parser.parse_args(argv)
    for path in (args.out, args.report):
        if path and os.path.exists(path) and not args.overwrite:
            raise UserError(f"{path} already exists; pass --overwrite to replace it")
        if path:
            check_writable(path)  # before the sweep, not after it
    if args.alpha is None and not args.valid_data:
        raise UserError("give --valid-data to sweep --alphas, or --alpha to write one interpolation")
    start, end = read_checkpoint(args.zero_shot), read_checkpoint(args.fine_tuned)
    with checkpoint_contents():
        same_tokenizer = start["tokenizer"].keys() == end["tokenizer"].keys() and all(
            torch.equal(start["tokenizer"][name], end["tokenizer"][name]) for name in start["tokenizer"])
        if not same_architecture(start["spec"], end["spec"]) or not same_tokenizer:
            raise UserError(f"{args.zero_shot} and {args.fine_tuned} differ in architecture or tokenizer")
    model, spec, tokenizer = model_from_checkpoint(end)
    alphas = parse_alphas(args.alphas) if args.valid_data else []
    if args.alpha is not None and args.alpha not in alphas:
        alphas.append(args.alpha)
    scores, sweep = {}, []
    if args.valid_data:
        device = resolve_device(args.device)
        tables = [(path, read_caption_table(path)) for path in args.valid_data]
        print("| alpha | valid-data | i2t R@1 | i2t R@5 | i2t R@10 | t2i R@1 | t2i R@5 | t2i R@10 | mean |")
        print("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
        for alpha in alphas:
            model.load_state_dict(interpolate_weights(start["state_dict"], end["state_dict"], alpha))
            model.to(device)
            splits = {}
            for path, table in tables:
                metrics = evaluate_table(model, tokenizer, table, preprocess_for(spec), args.batch_size, 0,
                                         device, None)
                splits[path] = {**metrics, "mean_recall": mean_recall(metrics)}
                print(f"| {alpha:g} | {path} | " + " | ".join(f"{metrics[k]:.4f}" for k in (
                    "i2t_r1", "i2t_r5", "i2t_r10", "t2i_r1", "t2i_r5", "t2i_r10")) +
                    f" | {splits[path]['mean_recall']:.4f} |")
            scores[alpha] = sum(split["mean_recall"] for split in splits.values()) / len(splits)
            sweep.append({"alpha": alpha, "score": scores[alpha], "valid-data": splits})
    alpha = args.alpha if args.alpha is not None else max(alphas, key=lambda a: scores[a])
    model.load_state_dict(interpolate_weights(start["state_dict"], end["state_dict"], alpha))
    save_checkpoint(args.out, model.cpu(), spec, end["tokenizer"], {
        "wise-ft": {"alpha": alpha, "zero-shot": args.zero_shot, "fine-tuned": args.fine_tuned,
                    "mean-recall": scores.get(alpha)}})
    if args.report:
        atomic_write_json(args.report, {"chosen-alpha": alpha, "sweep": sweep})
    logger.info(f"wrote {args.out}: alpha {alpha:g}" + (f", mean recall {scores[alpha]:.4f}" if scores else ""))
    return 0


if __name__ == "__main__":
    run_cli(main)
