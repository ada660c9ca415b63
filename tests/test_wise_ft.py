"""WiSE-FT: weight-space interpolation of a zero-shot and a fine-tuned checkpoint, alpha swept on a split."""
import pytest
import torch

from data.caption_table import read_caption_table
from data.transforms import eval_transform
from models.checkpoint import model_from_checkpoint, read_checkpoint, save_checkpoint
from models.interpolate import interpolate_weights
from tests.conftest import run_script
from training.evaluate import evaluate_table
from training.recall import mean_recall
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


def _recall(payload, dataset):
    model, spec, tokenizer = model_from_checkpoint(payload)
    table = read_caption_table(str(dataset / "valid"))
    return mean_recall(evaluate_table(model, tokenizer, table, eval_transform(spec["image-size"]), 64, 0, CPU, None))


def test_sweep_reports_each_alpha_and_writes_the_best(tiny_checkpoint, tiny_dataset, tmp_path):
    payload = read_checkpoint(str(tiny_checkpoint))
    model, spec, _ = model_from_checkpoint(payload)
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for parameter in model.parameters():  # a stand-in for fine-tuning: same architecture, moved weights
            parameter.add_(0.05 * torch.randn(parameter.shape, generator=generator))
    fine_tuned = tmp_path / "fine.pt"
    save_checkpoint(str(fine_tuned), model, spec, payload["tokenizer"])
    out = tmp_path / "wise.pt"
    result = run_script("scripts/wise_ft.py", "--zero-shot", str(tiny_checkpoint), "--fine-tuned", str(fine_tuned),
                        "--valid-data", str(tiny_dataset / "valid"), "--alphas", "0,0.5,1", "--out", str(out))
    assert result.returncode == 0, result.stderr
    rows = {float(line.split("|")[1]): float(line.split("|")[-2]) for line in result.stdout.splitlines()
            if line.startswith("| 0") or line.startswith("| 1")}
    assert set(rows) == {0.0, 0.5, 1.0}
    assert rows[0.0] == pytest.approx(_recall(payload, tiny_dataset), abs=1e-4)
    assert rows[1.0] == pytest.approx(_recall(read_checkpoint(str(fine_tuned)), tiny_dataset), abs=1e-4)
    written = read_checkpoint(str(out))
    best = max(rows, key=rows.get)
    assert written["training"]["wise-ft"]["alpha"] == best
    expected = interpolate_weights(payload["state_dict"], read_checkpoint(str(fine_tuned))["state_dict"], best)
    for name, tensor in expected.items():
        assert torch.equal(written["state_dict"][name], tensor), name

    again = run_script("scripts/wise_ft.py", "--zero-shot", str(tiny_checkpoint), "--fine-tuned", str(fine_tuned),
                       "--alpha", "0.5", "--out", str(out))
    assert again.returncode == 2 and "--overwrite" in again.stderr and "Traceback" not in again.stderr
