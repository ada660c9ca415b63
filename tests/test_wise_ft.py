"""WiSE-FT: weight-space interpolation of a zero-shot and a fine-tuned checkpoint, alpha swept on a split."""
import json

import pytest
import torch

from data.caption_table import read_caption_table
from data.transforms import eval_transform
from evaluation.embedding import evaluate_table
from evaluation.recall import mean_recall
from models.checkpoint import model_from_checkpoint, read_checkpoint, save_checkpoint
from models.interpolate import interpolate_weights
from tests.helpers import run_script
from utils.errors import UserError

CPU = torch.device("cpu")


def test_interpolation_is_exact_at_the_ends_and_linear_between():
    start = {"w": torch.zeros(3), "n": torch.tensor(1)}
    end = {"w": torch.tensor([2.0, 4.0, 6.0]), "n": torch.tensor(7)}
    assert torch.equal(interpolate_weights(start, end, 0.0)["w"], start["w"])
    assert torch.equal(interpolate_weights(start, end, 1.0)["w"], end["w"])
    half = interpolate_weights(start, end, 0.5)
    assert torch.equal(half["w"], torch.tensor([1.0, 2.0, 3.0])) and int(half["n"]) == 7  # counters: fine-tuned's
    with pytest.raises(UserError, match="alpha"):
        interpolate_weights(start, end, 1.5)
    with pytest.raises(UserError, match="not one architecture"):
        interpolate_weights(start, {"w": torch.zeros(4), "n": end["n"]}, 0.5)
    with pytest.raises(UserError, match="different weights"):
        interpolate_weights(start, {"w": end["w"]}, 0.5)


def _recall(payload, dataset, split="valid"):
    model, spec, tokenizer = model_from_checkpoint(payload)
    table = read_caption_table(str(dataset / split))
    return mean_recall(evaluate_table(model, tokenizer, table, eval_transform(spec.image_size), 64, 0, CPU, None))


@pytest.mark.slow
def test_sweep_reports_each_alpha_and_writes_the_best(tiny_checkpoint, tiny_dataset, tmp_path):
    payload = read_checkpoint(str(tiny_checkpoint))
    model, spec, _ = model_from_checkpoint(payload)
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for parameter in model.parameters():  # a stand-in for fine-tuning: same architecture, moved weights
            parameter.add_(0.05 * torch.randn(parameter.shape, generator=generator))
    fine_tuned = tmp_path / "fine.pt"
    # as train.py with learn-temperature writes it: same architecture, the temperature marked as learned
    save_checkpoint(str(fine_tuned), model, spec.replace(learned_logit_scale=True), payload["tokenizer"])
    out, report = tmp_path / "wise.pt", tmp_path / "sweep.json"
    splits = [str(tiny_dataset / "valid"), str(tiny_dataset / "train")]  # two domains to keep at once
    result = run_script("scripts/wise_ft.py", "--zero-shot", str(tiny_checkpoint), "--fine-tuned", str(fine_tuned),
                        "--valid-data", splits[0], "--valid-data", splits[1], "--alphas", "0,0.5,1",
                        "--out", str(out), "--report", str(report))
    assert result.returncode == 0, result.stderr
    sweep = json.loads(report.read_text())
    means = {row["alpha"]: {path: split["mean_recall"] for path, split in row["valid-data"].items()}
             for row in sweep["sweep"]}
    assert set(means) == {0.0, 0.5, 1.0} and all(set(row) == set(splits) for row in means.values())
    for split in ("valid", "train"):
        path = str(tiny_dataset / split)
        assert means[0.0][path] == pytest.approx(_recall(payload, tiny_dataset, split), abs=1e-4)
        assert means[1.0][path] == pytest.approx(_recall(read_checkpoint(str(fine_tuned)), tiny_dataset, split),
                                                 abs=1e-4)
    printed = [line for line in result.stdout.splitlines() if line.startswith("| 0 |")]
    assert len(printed) == 2 and float(printed[0].split("|")[-2]) == pytest.approx(means[0.0][splits[0]], abs=1e-4)
    best = max(means, key=lambda alpha: sum(means[alpha].values()))
    written = read_checkpoint(str(out))
    assert sweep["chosen-alpha"] == best and written["training"]["wise-ft"]["alpha"] == best
    expected = interpolate_weights(payload["state_dict"], read_checkpoint(str(fine_tuned))["state_dict"], best)
    for name, tensor in expected.items():
        assert torch.equal(written["state_dict"][name], tensor), name

    again = run_script("scripts/wise_ft.py", "--zero-shot", str(tiny_checkpoint), "--fine-tuned", str(fine_tuned),
                       "--alpha", "0.5", "--out", str(out))
    assert again.returncode == 2 and "--overwrite" in again.stderr and "Traceback" not in again.stderr

    chosen = run_script("scripts/wise_ft.py", "--zero-shot", str(tiny_checkpoint), "--fine-tuned", str(fine_tuned),
                        "--valid-data", splits[0], "--alphas", "0,1", "--alpha", "0.5", "--out", str(out),
                        "--report", str(report), "--overwrite")
    assert chosen.returncode == 0, chosen.stderr  # the sweep is reported, the given alpha is written
    assert [row["alpha"] for row in json.loads(report.read_text())["sweep"]] == [0.0, 1.0, 0.5]
    assert read_checkpoint(str(out))["training"]["wise-ft"]["alpha"] == 0.5

    other = tmp_path / "other.pt"  # another architecture: refused, not interpolated
    save_checkpoint(str(other), model, spec.replace(embed_dim=64), payload["tokenizer"])
    refused = run_script("scripts/wise_ft.py", "--zero-shot", str(tiny_checkpoint), "--fine-tuned", str(other),
                         "--alpha", "0.5", "--out", str(tmp_path / "mixed.pt"))
    assert refused.returncode == 2 and "differ in architecture" in refused.stderr
    assert not (tmp_path / "mixed.pt").exists()
