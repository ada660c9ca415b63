"""make demo-finetune: fine-tune a pretrained model on a new domain with each recipe, then compare.

A stand-in "pretrained CLIP" is trained on the shapes domain (configs/demo-finetune/pretrain.yaml), then
fine-tuned on a few hundred images of the glyphs domain with each recipe in configs/demo-finetune/, and each
fine-tuned model is interpolated with the pretrained one (scripts/wise_ft.py). Every step runs the real
scripts, as a user would. Prints and writes a table: recall on both domains' valid splits (how much of the
old domain is kept, how much of the new is gained) and each recipe's wall time.

    python scripts/demo_finetune.py            # after the datasets and tokenizer exist (make demo-finetune)
"""
import argparse
import json
import os
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIGS = "configs/demo-finetune"
RUNS = "checkpoints/demo-finetune"
DOMAINS = {"shapes (old)": "datasets/demo-finetune/shapes/valid", "glyphs (new)": "datasets/demo-finetune/glyphs/valid"}
RECIPES = {
    "naive": "naive: make demo's lr 2e-3, no warmup",
    "full": "full fine-tuning (lr 3e-4, warmup, layer decay 0.75, early stop)",
    "locked-image": "locked-image tuning (LiT: image tower frozen, lr 1e-3)",
}
ALPHAS = (0.0, 0.25, 0.5, 0.75, 1.0)
WISE_ALPHA = 0.5  # the WiSE-FT paper's fixed choice: no peeking at the splits reported


def run(*args):
    """Run one of the project's scripts; return its wall time in seconds. Stops the demo if it fails."""
    started = time.perf_counter()
    print("$ python " + " ".join(args), flush=True)
    if subprocess.run([sys.executable, *args], cwd=ROOT).returncode != 0:
        sys.exit(f"error: python {' '.join(args)} failed; see its message above")
    return time.perf_counter() - started


def sweep(recipe):
    """Recall of every alpha on every domain: {alpha: {domain: metrics}} (alpha 0 = pretrained, 1 = fine-tuned)."""
    report = f"{RUNS}/{recipe}/wise-ft.json"
    seconds = run("scripts/wise_ft.py", "--zero-shot", f"{RUNS}/pretrained/best.pt",
                  "--fine-tuned", f"{RUNS}/{recipe}/best.pt", *[arg for path in DOMAINS.values()
                                                                 for arg in ("--valid-data", path)],
                  "--alphas", ",".join(f"{a:g}" for a in ALPHAS), "--alpha", f"{WISE_ALPHA:g}",
                  "--out", f"{RUNS}/{recipe}/wise-ft.pt", "--report", report, "--overwrite")
    with open(os.path.join(ROOT, report), encoding="utf-8") as handle:
        rows = json.load(handle)["sweep"]
    by_domain = {row["alpha"]: {name: row["valid-data"][path] for name, path in DOMAINS.items()} for row in rows}
    return by_domain, seconds


def table(rows):
    """Markdown: one row per model, R@1 both ways and mean recall on each domain, kept/gained, wall time."""
    zero = rows[0][1]
    head = ["model", "wall time (train, + sweep)"]
    for name in DOMAINS:
        head += [f"{name} i2t R@1", f"{name} t2i R@1", f"{name} mean R"]
    old, new = DOMAINS
    head += ["old kept", "new gained"]
    lines = ["| " + " | ".join(head) + " |", "|" + " --- |" * len(head)]
    for label, metrics, seconds in rows:
        cells = [label, f"{seconds:.0f} s" if seconds else "–"]
        for name in DOMAINS:
            cells += [f"{metrics[name]['i2t_r1']:.3f}", f"{metrics[name]['t2i_r1']:.3f}",
                      f"{metrics[name]['mean_recall']:.3f}"]
        kept = metrics[old]["mean_recall"] / zero[old]["mean_recall"]
        gained = metrics[new]["mean_recall"] - zero[new]["mean_recall"]
        cells += [f"{kept:.0%}", f"{gained:+.3f}"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--recipes", default=",".join(RECIPES), help="comma-separated subset of: " + ", ".join(RECIPES))
    args = parser.parse_args(argv)
    recipes = [name.strip() for name in args.recipes.split(",") if name.strip()]
    unknown = [name for name in recipes if name not in RECIPES]
    if unknown or not recipes:
        print(f"error: --recipes: unknown recipe '{unknown[0] if unknown else args.recipes}'; "
              f"choose from {', '.join(RECIPES)}", file=sys.stderr)
        return 2
    missing = [path for path in DOMAINS.values() if not os.path.isfile(os.path.join(ROOT, path, "captions.csv"))]
    if missing:
        print(f"error: {missing[0]} not found; run 'make demo-finetune' (it generates the datasets first)",
              file=sys.stderr)
        return 2
    started = time.perf_counter()
    run("init.py", "--config", f"{CONFIGS}/init.yaml", "--overwrite", "true")
    pretrain_seconds = run("train.py", "--config", f"{CONFIGS}/pretrain.yaml", "--overwrite", "true")
    rows = []
    for recipe in recipes:
        seconds = run("train.py", "--config", f"{CONFIGS}/{recipe}.yaml", "--overwrite", "true")
        by_alpha, sweep_seconds = sweep(recipe)
        if not rows:
            rows.append(("pretrained on shapes (zero-shot on glyphs)", by_alpha[0.0], pretrain_seconds))
        rows.append((RECIPES[recipe], by_alpha[1.0], seconds))
        rows.append((f"… + WiSE-FT, alpha {WISE_ALPHA:g}", by_alpha[WISE_ALPHA], seconds + sweep_seconds))
    text = table(rows)
    with open(os.path.join(ROOT, RUNS, "table.md"), "w", encoding="utf-8") as handle:
        handle.write(text + "\n")
    print(f"\n{text}\n\nwritten to {RUNS}/table.md; every alpha's recall in {RUNS}/<recipe>/wise-ft.json; "
          f"total {time.perf_counter() - started:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
