"""Hard-negative batches (neighbours mined in the current embedding) and a run's length as samples or minutes."""
import json

import numpy as np
import pytest
import torch

from tests.helpers import resumed_inside_an_epoch, run_script, torchrun, train_args
from training.hard_batches import MinedOrder, neighbour_groups
from training.run_length import RunLength
from training.schedule import warmup_cosine


def _clusters(count, size, dim=16, seed=0):
    """count clusters of ``size`` points each, tight around random centres, rows shuffled; (features, label)."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(count, dim))
    labels = np.repeat(np.arange(count), size)
    features = centres[labels] + 0.01 * rng.normal(size=(count * size, dim))
    features /= np.linalg.norm(features, axis=1, keepdims=True)
    shuffle = rng.permutation(len(labels))
    return features[shuffle].astype(np.float32), labels[shuffle]


@pytest.mark.parametrize("group", [4, 8])
def test_neighbour_groups_put_each_cluster_in_one_group_and_reorder_with_the_seed(group):
    features, labels = _clusters(count=12, size=group)
    order = neighbour_groups(features, group, torch.Generator().manual_seed(0))
    assert sorted(order.tolist()) == list(range(len(labels)))  # a permutation
    for start in range(0, len(order), group):
        assert len(set(labels[order[start:start + group].numpy()])) == 1  # brute force: one cluster per group
    again = neighbour_groups(features, group, torch.Generator().manual_seed(0))
    other = neighbour_groups(features, group, torch.Generator().manual_seed(1))
    assert torch.equal(order, again) and not torch.equal(order, other)


def test_neighbour_groups_cover_every_image_when_groups_do_not_fit():
    features, _ = _clusters(count=5, size=3)  # 15 images in groups of 4: some groups must mix
    order = neighbour_groups(features, 4, torch.Generator().manual_seed(0))
    assert sorted(order.tolist()) == list(range(15))


def test_mined_order_gives_each_rank_its_slice_of_every_global_batch():
    order = torch.randperm(22, generator=torch.Generator().manual_seed(0))
    ranks = [MinedOrder(22, 8, rank, 2) for rank in range(2)]
    for sampler in ranks:
        sampler.order = order
    parts = [list(sampler) for sampler in ranks]
    assert [len(part) for part in parts] == [len(sampler) for sampler in ranks] == [8, 8]  # 2 full batches
    for batch in range(2):
        together = parts[0][4 * batch:4 * batch + 4] + parts[1][4 * batch:4 * batch + 4]
        assert together == order[8 * batch:8 * batch + 8].tolist()


def _config(**keys):
    return {"train-samples": None, "time-budget": None, "epochs": 8, "warmup-steps": 50, "config-path": "c.yaml",
            **keys}


def test_train_samples_set_the_steps_and_epochs_and_both_budgets_are_refused():
    run = RunLength.from_config(_config(**{"train-samples": 1000}), steps_per_epoch=3, batch_size=16)
    assert (run.total_steps, run.epochs, run.warmup_steps) == (62, 21, 12)  # warmup: at most a fifth
    assert not run.finished(61, 1e9) and run.finished(62, 0)
    with pytest.raises(Exception, match="train-samples and time-budget both set"):
        RunLength.from_config(_config(**{"train-samples": 1000, "time-budget": 1.0}), 3, 16)


def test_a_time_budget_fits_the_cosine_schedule_to_the_pace():
    run = RunLength.from_config(_config(**{"time-budget": 1.0}), steps_per_epoch=10, batch_size=16)
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    scheduler = warmup_cosine(optimizer, run.warmup_steps, run.total_steps)
    for step in range(1, 31):  # 2 s a step: 30 steps fill the minute
        optimizer.step()
        scheduler.step()
        run.steer(scheduler, step, 2.0 * step)
        assert run.finished(step, 2.0 * step) == (step == 30)
    assert (run.total_steps, scheduler.lr_lambdas[0].warmup_steps) == (31, 6)  # 50 warmup steps would never end
    assert scheduler.get_last_lr()[0] < 0.01  # the decay ends with the budget


@pytest.mark.slow
def test_train_py_mines_hard_negative_batches_and_stops_at_train_samples(tiny_checkpoint, tiny_dataset, tmp_path):
    out = tmp_path / "run"
    result = run_script(*train_args(tiny_checkpoint, tiny_dataset, out, "--num-workers", "2",
                                    "--batching", "hard-negatives", "--hard-negative-group", "4",
                                    "--train-samples", "112"))
    assert result.returncode == 0, result.stderr[-3000:]
    assert "length: train-samples 112 = 7 steps of 16 (3 epoch(s)" in result.stdout
    assert result.stdout.count("hard-negative batches: 48 images grouped in 4s") == 3  # re-mined each epoch
    history = [json.loads(line) for line in (out / "logs" / "metrics.jsonl").read_text().splitlines()]
    assert [item["step"] for item in history] == [3, 6, 7]  # the last epoch stops at the budget

    shards = run_script(*train_args(tiny_checkpoint, tiny_dataset, tmp_path / "bad", "--train-data",
                                    str(tmp_path / "x-{0..1}.tar"), "--batching", "hard-negatives"))
    assert shards.returncode == 2 and "batching hard-negatives" in shards.stderr and "Traceback" not in shards.stderr


@pytest.mark.slow
def test_hard_negative_batches_resume_inside_an_epoch_bit_for_bit(tiny_checkpoint, tiny_dataset, tmp_path):
    def args(out):
        return train_args(tiny_checkpoint, tiny_dataset, out, "--epochs", "3", "--num-workers", "2",
                          "--batching", "hard-negatives", "--hard-negative-group", "4", "--checkpoint-every-steps", "1")

    _, state, resumed = resumed_inside_an_epoch(args, tmp_path)
    # the epoch's mined order is kept: the resumed epoch must not re-mine with the moved weights
    assert state["epoch-progress"]["order"].shape == (48,)
    assert resumed.stdout.count("hard-negative batches:") == 2 - state["epoch"]


@pytest.mark.slow
def test_torchrun_time_budget_stops_every_rank_at_the_same_step(tiny_checkpoint, tiny_dataset, tmp_path):
    out = tmp_path / "run"
    result = run_script(*torchrun(29531, *train_args(tiny_checkpoint, tiny_dataset, out, "--num-workers", "2",
                                                     "--time-budget", "0.2", "--batching", "hard-negatives",
                                                     "--hard-negative-group", "4")))
    assert result.returncode == 0, result.stderr[-3000:]
    last = torch.load(out / "last.pt", weights_only=True)["training"]
    assert last["metrics"]["run_seconds"] >= 12.0  # 0.2 min of training, validation not counted
    # the cosine decay was fitted to end with the budget: (s - warmup) / (s + 1 - warmup) of the way at step s
    assert last["step"] >= 6 and last["metrics"]["lr"] < 0.1 * 0.002
    assert "time-budget 0.2 min" in result.stdout and "hard-negative batches: 48 images" in result.stdout
    # resumed, a run keeps the time it spent: its budget is used up, so it trains no further
    resumed = run_script(*torchrun(29532, *train_args(tiny_checkpoint, tiny_dataset, out, "--num-workers", "2",
                                                      "--time-budget", "0.2", "--batching", "hard-negatives",
                                                      "--hard-negative-group", "4", "--resume", str(out / "last.pt"))))
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    after = torch.load(out / "last.pt", weights_only=True)["training"]
    assert after["step"] == last["step"] and len(after["history"]) == len(last["history"])


@pytest.mark.slow
def test_the_recipe_trains_a_new_domain_in_one_command_and_refuses_bad_folders(tiny_dataset, tmp_path):
    out = tmp_path / "mine"
    result = run_script("scripts/recipe.py", "--data", str(tiny_dataset), "--out", str(out), "--samples", "48",
                        "--", "--batch-size", "16", "--num-workers", "2")
    assert result.returncode == 0, result.stderr[-3000:]
    for name in ("text-tower/config.json", "pretrain.pt", "best.pt", "last.pt", "recall.json"):
        assert (out / name).exists(), name
    # the tokenizer is the domain's own: learned from its training captions
    vocab = json.loads((out / "text-tower" / "tokenizer.json").read_text())["model"]["vocab"]
    assert "Ġtriangle" in vocab and "length: train-samples 48 = 3 steps of 16" in result.stdout
    recall = json.loads((out / "recall.json").read_text())
    assert f"R@1 image→text {recall['i2t_r1']:.3f}" in result.stdout

    again = run_script("scripts/recipe.py", "--data", str(tiny_dataset), "--out", str(out), "--minutes", "1")
    assert again.returncode == 2 and "--overwrite" in again.stderr  # an earlier run is never replaced silently
    empty = run_script("scripts/recipe.py", "--data", str(tmp_path / "nothing"), "--out", str(tmp_path / "x"))
    assert empty.returncode == 2 and f"{tmp_path / 'nothing' / 'train'} not found" in empty.stderr
    assert "Traceback" not in again.stderr + empty.stderr


def test_the_recipe_passes_init_overrides_to_init_py(tiny_dataset, tmp_path):
    """bench/objectives.py --text-ngram N reaches init.py: the model the recipe trains has the word-order block."""
    from models.checkpoint import model_from_checkpoint, read_checkpoint
    from scripts.recipe import run_recipe

    out = tmp_path / "ngram"
    recall = run_recipe(str(tiny_dataset), str(out), samples=16, quiet=True, init_overrides=["--text-ngram", "5"],
                        train_overrides=["--batch-size", "16", "--num-workers", "0"])
    assert 0.0 <= recall["i2t_r1"] <= 1.0
    model, spec, _ = model_from_checkpoint(read_checkpoint(str(out / "best.pt")))
    assert spec.text_ngram == 5 and model.text_tower.ngram is not None
