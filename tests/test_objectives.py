"""The loss key's objectives: each against a hand computation or open_clip, through the gradient cache and
under 2-process DDP with the global batch, and train.py with each of them."""
import math
import re

import pytest
import torch
import torch.multiprocessing as mp
import torch.nn.functional as F
from open_clip.loss import SigLipLoss

from models.loss import INFONCE, Objective, info_nce, max_violation, siglip
from models.pairing import Pairing, text_keys
from tests.helpers import NoScaler, assert_same, batch, gradients, prepared_model, rank_worker, run_script, train_args
from training.step import grad_cache_step, plain_step

CPU = torch.device("cpu")


def _features(images, texts, dim=12, seed=0):
    generator = torch.Generator().manual_seed(seed)
    return (F.normalize(torch.randn(images, dim, generator=generator), dim=-1),
            F.normalize(torch.randn(texts, dim, generator=generator), dim=-1))


def _brute_info_nce(image, text, scale, k, beta, negatives=0):
    """Both directions from the definitions, one similarity at a time: -log(sum over positives / (sum over
    positives + sum over negatives of w * exp)), w = n_neg * exp(beta l) / sum over negatives of exp(beta l).
    Each image's k captions are followed by ``negatives`` extra negatives (no query of their own)."""
    logits = (scale * image @ text.t()).tolist()
    group = k + negatives
    owner = [j // group if j % group < k else -1 for j in range(len(text))]

    def direction(rows):
        total = 0.0
        for row, positive in rows:
            pos = [math.exp(l) for l, p in zip(row, positive) if p]
            neg = [l for l, p in zip(row, positive) if not p]
            norm = sum(math.exp(beta * l) for l in neg)
            weighted = sum(len(neg) * math.exp(beta * l) / norm * math.exp(l) for l in neg)
            total += -math.log(sum(pos) / (sum(pos) + weighted))
        return total / len(rows)

    image_rows = [(logits[i], [owner[j] == i for j in range(len(text))]) for i in range(len(image))]
    text_rows = [([logits[i][j] for i in range(len(image))], [owner[j] == i for i in range(len(image))])
                 for j in range(len(text)) if owner[j] >= 0]
    return direction(image_rows) + direction(text_rows)


@pytest.mark.parametrize("k,beta", [(1, 0.0), (1, 0.5), (3, 0.0), (3, 0.5)])
def test_info_nce_multi_positive_and_hn_nce_match_their_definitions(k, beta):
    image, text = _features(5, 5 * k, seed=k)
    ours = info_nce(image, text, torch.tensor(10.0), hard_negative_beta=beta)
    assert math.isclose(ours.item(), _brute_info_nce(image, text, 10.0, k, beta), rel_tol=1e-5)
    if beta == 0 and k == 1:  # the original objective: CE over rows + CE over columns
        labels = torch.arange(5)
        logits = 10.0 * image @ text.t()
        assert torch.allclose(ours, F.cross_entropy(logits, labels) + F.cross_entropy(logits.t(), labels))


@pytest.mark.parametrize("k,beta", [(1, 0.0), (2, 0.5)])
def test_compositional_negatives_are_extra_negatives_for_image_to_text_only(k, beta):
    image, text = _features(4, 4 * (k + 1), seed=7)
    ours = Objective(hard_negative_beta=beta, negatives_per_image=1)(image, text, torch.tensor(10.0))
    assert math.isclose(ours.item(), _brute_info_nce(image, text, 10.0, k, beta, negatives=1), rel_tol=1e-5)
    owner = torch.tensor([j // (k + 1) if j % (k + 1) < k else -1 for j in range(4 * (k + 1))])
    plain = Objective(negatives_per_image=1)(image, text, torch.tensor(10.0))
    assert torch.allclose(plain, info_nce(image, text, torch.tensor(10.0), owner))
    assert plain > info_nce(image, text[owner >= 0], torch.tensor(10.0))  # they only add to the denominators


@pytest.mark.parametrize("owner", [[0, 1, 2, 3, 4, 5], [3, 0, 5, 1, 4, 2], [0, 0, 1, 1, 2, 2, 3, 3],
                                   [0, -1, 1, -1, 2, -1], [0, 0, -1, 1, 1, -1]])
def test_cross_entropy_path_equals_the_masked_path_in_value_and_gradient(owner):
    owner = torch.tensor(owner)
    image, text = _features(int(owner.max()) + 1, len(owner), seed=11)
    results = []
    for keys in (None, torch.arange(len(owner))):  # unique keys: the same positives, through the mask
        leaves = [image.clone().requires_grad_(), text.clone().requires_grad_(), torch.tensor(10.0, requires_grad=True)]
        loss = info_nce(*leaves, Pairing(owner, keys))
        loss.backward()
        results.append((loss.detach(), [leaf.grad for leaf in leaves]))
    (fast, fast_grads), (masked, masked_grads) = results
    assert torch.allclose(fast, masked, atol=1e-6)
    assert all(torch.allclose(a, b, atol=1e-6) for a, b in zip(fast_grads, masked_grads))


@pytest.mark.parametrize("k", [1, 3])
def test_the_objective_records_each_batch_swap_margin(k):
    image, text = _features(5, 5 * (k + 1), seed=9)
    objective = Objective(negatives_per_image=1)
    assert objective.last_swap_margin is None
    objective(image, text, torch.tensor(10.0))
    # one image at a time: its first caption's cosine minus its negative's (the last of its k + 1 texts)
    expected = sum(float(image[i] @ text[i * (k + 1)] - image[i] @ text[i * (k + 1) + k]) for i in range(5)) / 5
    assert objective.last_swap_margin == pytest.approx(expected, abs=1e-6)
    plain = Objective()
    plain(image, text[:5], torch.tensor(10.0))
    assert plain.last_swap_margin is None  # no negatives: nothing to measure


def test_hard_negative_weighting_raises_the_loss_of_batches_with_hard_negatives():
    image, text = _features(8, 8, seed=3)
    text[1] = F.normalize(text[0] + 0.05 * text[1], dim=0)  # a near-duplicate: a hard negative for image 0
    plain, weighted = (info_nce(image, text, torch.tensor(10.0), hard_negative_beta=b) for b in (0.0, 0.5))
    assert weighted > plain


@pytest.mark.parametrize("chunk", [3, 1024])
def test_siglip_equals_open_clip_in_value_and_gradient(chunk):
    image, text = _features(7, 7, seed=4)
    leaves = [tensor.clone().requires_grad_() for tensor in (image, text, torch.tensor(10.0), torch.tensor(-10.0))]
    ours = siglip(*leaves, chunk=chunk)
    ours.backward()
    theirs_leaves = [tensor.clone().detach().requires_grad_() for tensor in (image, text, torch.tensor(10.0),
                                                                             torch.tensor(-10.0))]
    theirs = SigLipLoss()(*theirs_leaves)
    theirs.backward()
    assert torch.allclose(ours, theirs, atol=1e-5)
    for mine, reference in zip(leaves, theirs_leaves):
        assert torch.allclose(mine.grad, reference.grad, atol=1e-5)


def test_siglip_with_several_captions_per_image_counts_each_as_a_positive():
    image, text = _features(4, 8, seed=5)
    logits = (10.0 * image @ text.t() - 10.0).tolist()
    brute = -sum(math.log(1 / (1 + math.exp(-(l if j // 2 == i else -l))))
                 for i, row in enumerate(logits) for j, l in enumerate(row)) / 4
    assert math.isclose(siglip(image, text, torch.tensor(10.0), torch.tensor(-10.0), chunk=3).item(), brute,
                        rel_tol=1e-5)


@pytest.mark.parametrize("k", [1, 2])
def test_max_violation_matches_its_definition(k):
    image, text = _features(5, 5 * k, seed=6)
    s = (image @ text.t()).tolist()
    owner = [j // k for j in range(5 * k)]
    image_terms = [max(0.0, 0.2 - s[i][p] + max(s[i][j] for j in range(5 * k) if owner[j] != i))
                   for i in range(5) for p in range(5 * k) if owner[p] == i]
    text_terms = [max(0.0, 0.2 - s[owner[j]][j] + max(s[i][j] for i in range(5) if i != owner[j]))
                  for j in range(5 * k)]
    brute = sum(image_terms) / len(image_terms) + sum(text_terms) / len(text_terms)
    assert math.isclose(max_violation(image, text, margin=0.2).item(), brute, rel_tol=1e-5)


def _loss_config(**changes):
    config = {"loss": "infonce", "hard-negative-beta": 0.0, "max-violation-margin": 0.2,
              "compositional-negatives": False, "same-caption-positives": False, "config-path": "configs/train.yaml"}
    return {**config, **changes}


def test_the_loss_key_offers_exactly_the_registered_losses_and_their_keys():
    from models.loss_registry import LOSSES
    from utils.config_schema import TRAIN

    keys = {key.name: key for key in TRAIN}
    assert keys["loss"].choices == tuple(LOSSES)
    assert all(option in keys for loss in LOSSES.values() for option in loss.options)


def test_a_key_of_another_loss_is_refused_unless_it_asks_nothing_of_it():
    from training.objective import objective_from_config
    from utils.errors import UserError

    with pytest.raises(UserError, match=r"hard-negative-beta applies to loss infonce; configs/train.yaml chooses "
                                        r"loss siglip \(set hard-negative-beta: 0.0, or loss: infonce\)"):
        objective_from_config(_loss_config(loss="siglip", **{"hard-negative-beta": 0.5}))
    margin = objective_from_config(_loss_config(loss="max-violation", **{"max-violation-margin": 0.3}))
    assert margin.loss.margin == 0.3 and margin.describe() == "loss: max-violation (VSE++ hinge, margin 0.3)"
    assert objective_from_config(_loss_config(**{"max-violation-margin": 0.3})).kind == "infonce"  # unused there
    hn = objective_from_config(_loss_config(**{"hard-negative-beta": 0.5, "compositional-negatives": True}))
    assert hn.loss.beta == 0.5 and hn.negatives_per_image == 1 and hn.describe().endswith("per image")


def test_a_new_loss_is_one_registered_class(tiny_checkpoint):
    """What docs/ARCHITECTURE.md promises: a class with @register_loss trains, bias and temperature included."""
    from models.loss_registry import LOSSES, Loss, register_loss
    from training.objective import objective_from_config

    @register_loss("test-sigmoid-hinge", options={"hard-negative-beta": ("weight", 0.0)})
    class SigmoidHinge(Loss):
        learns_bias = True
        start_scale_and_bias = (5.0, -2.0)

        def __init__(self, weight=0.0):
            self.weight = weight

        def __call__(self, image_features, text_features, logit_scale, logit_bias, pairs):
            logits = logit_scale * image_features @ text_features.t() + logit_bias
            positive = pairs.block(len(image_features))
            return F.softplus(torch.where(positive, -logits, logits)).mean() * (1 + self.weight)

    try:
        objective = objective_from_config(_loss_config(loss="test-sigmoid-hinge", **{"hard-negative-beta": 0.5}))
        assert objective.loss.weight == 0.5 and objective.describe() == "loss: test-sigmoid-hinge"
        model, tokenizer = prepared_model(str(tiny_checkpoint), objective)
        assert model.scale().item() == pytest.approx(5.0) and model.logit_bias.item() == -2.0
        plain_step(model, *batch(tokenizer), CPU, None, NoScaler(), objective)
        grads = gradients(model)
        assert grads["logit_bias"].abs() > 0 and grads["logit_scale"].abs() > 0
    finally:
        del LOSSES["test-sigmoid-hinge"]


OBJECTIVES = {"siglip-k2": (Objective("siglip", chunk=5), 2), "infonce-k2-hn": (Objective(hard_negative_beta=0.5), 2),
              "max-violation": (Objective("max-violation"), 1),
              "infonce-negative": (Objective(negatives_per_image=1), 2),  # a caption and a swapped one per image
              # helpers.batch with 2 captions per image repeats captions across images 0 and 4 (one per rank)
              "infonce-k2-same": (Objective(same_caption_positives=True), 2),
              "siglip-k2-same": (Objective("siglip", chunk=5, same_caption_positives=True), 2)}


@pytest.mark.parametrize("name", list(OBJECTIVES))
@pytest.mark.slow
def test_every_objective_through_the_gradient_cache_equals_the_plain_step(tiny_checkpoint, name):
    objective, k = OBJECTIVES[name]
    model, tokenizer = prepared_model(str(tiny_checkpoint), objective)
    images, ids = batch(tokenizer, captions_per_image=k)
    plain_step(model, images, ids, CPU, None, NoScaler(), objective)
    reference = gradients(model)
    model.zero_grad(set_to_none=True)
    grad_cache_step(model, images, ids, CPU, None, NoScaler(), chunk_size=3, objective=objective)
    assert_same(reference, gradients(model))
    assert ("logit_bias" in reference) == objective.needs_bias
    assert ("logit_scale" in reference) == (objective.kind != "max-violation")


@pytest.mark.slow
def test_two_processes_give_each_objective_the_global_batch_gradient(tiny_checkpoint, tmp_path):
    # one spawn for every case: starting the two processes costs more than the steps
    cases = [(mode, mode, INFONCE, 1, 2) for mode in ("plain", "cache", "compiled-cache")]
    cases += [(f"{name}-{mode}", mode, objective, k, 3) for name, (objective, k) in OBJECTIVES.items()
              for mode in ("plain", "cache")]
    cases.append(("frozen-bias-cache", "cache", INFONCE, 1, 3))  # infonce on a siglip model: no wait on the bias
    mp.spawn(rank_worker, args=(2, str(tiny_checkpoint), str(tmp_path / "rendezvous"), str(tmp_path), cases), nprocs=2)
    model, tokenizer = prepared_model(str(tiny_checkpoint))
    images, ids = batch(tokenizer)
    plain_step(model, images, ids, CPU, None, NoScaler())
    reference = gradients(model)
    assert_same(reference, torch.load(tmp_path / "plain.pt"))
    assert_same(reference, torch.load(tmp_path / "cache.pt"))  # gradient cache under DDP, chunks per rank
    assert_same(reference, torch.load(tmp_path / "compiled-cache.pt"))  # no_sync found inside the compiled wrapper
    for name, (objective, k) in OBJECTIVES.items():
        model, tokenizer = prepared_model(str(tiny_checkpoint), objective)
        plain_step(model, *batch(tokenizer, captions_per_image=k), CPU, None, NoScaler(), objective)
        reference = gradients(model)
        for mode in ("plain", "cache"):
            assert_same(reference, torch.load(tmp_path / f"{name}-{mode}.pt"))
    model, tokenizer = prepared_model(str(tiny_checkpoint), INFONCE, siglip_checkpoint=True)
    plain_step(model, *batch(tokenizer), CPU, None, NoScaler(), INFONCE)
    reference = gradients(model)
    assert "logit_bias" not in reference and not model.logit_bias.requires_grad
    assert_same(reference, torch.load(tmp_path / "frozen-bias-cache.pt"))


@pytest.mark.slow
def test_train_py_with_siglip_two_captions_per_image_and_compositional_negatives(tiny_checkpoint, tiny_dataset,
                                                                                    tmp_path):
    out = tmp_path / "run"
    result = run_script(*train_args(tiny_checkpoint, tiny_dataset, out, "--epochs", "1", "--num-workers", "2",
                                    "--loss", "siglip", "--captions-per-image", "2", "--grad-cache-chunk", "4",
                                    "--compositional-negatives", "true"))
    assert result.returncode == 0, result.stderr[-3000:]
    assert "loss siglip: logit scale 10 and bias -10 to start" in result.stdout
    assert "images x 2 captions each" in result.stdout and "compositional negatives:" in result.stdout
    assert "a compositional negative per image" in result.stdout
    import json

    record = json.loads((out / "logs" / "metrics.jsonl").read_text().splitlines()[-1])
    assert -2 <= record["train_swap_margin"] <= 2 and 0 <= record["compositional"] <= 1  # valid has negatives.csv
    assert re.search(r"compositional \d\.\d{3} \(margin [+-]\d\.\d{4}\)  train swap margin [+-]\d\.\d{4}",
                     result.stdout)
    best = torch.load(out / "best.pt", weights_only=True)
    assert best["spec"]["logit-bias"] is True and best["state_dict"]["logit_bias"].item() != -10.0  # it learned
    evaluated = run_script("eval.py", "--config", "configs/demo/eval.yaml", "--model-path", str(out / "best.pt"),
                           "--valid-data", str(tiny_dataset / "valid"), "--output", str(tmp_path / "recall.json"))
    assert evaluated.returncode == 0 and "text → image" in evaluated.stdout

    wrong = run_script(*train_args(tiny_checkpoint, tiny_dataset, tmp_path / "bad", "--loss", "siglip",
                                   "--hard-negative-beta", "0.5"))
    assert wrong.returncode == 2 and "hard-negative-beta applies to loss infonce" in wrong.stderr
    bare = tmp_path / "bare"
    import shutil

    shutil.copytree(tiny_dataset / "train", bare)
    (bare / "negatives.csv").unlink()
    missing = run_script(*train_args(tiny_checkpoint, tiny_dataset, tmp_path / "bad", "--train-data", str(bare),
                                     "--compositional-negatives", "true"))
    assert missing.returncode == 2 and "negatives.csv not found" in missing.stderr


def test_captions_per_image_draws_distinct_captions_of_the_image_reproducibly(tiny_dataset, tmp_path):
    from data.caption_table import read_caption_table
    from data.datasets import TrainImages
    from data.shard_dataset import ShardBatches
    from scripts.make_shards import main as make_shards

    table = read_caption_table(str(tiny_dataset / "train"))
    dataset = TrainImages(table, lambda image: torch.zeros(1), seed=3, captions_per_image=3)

    def epoch(number):
        dataset.set_epoch(number)
        return [dataset[index][1] for index in range(len(dataset))]

    first = epoch(0)
    assert all(len(drawn) == 3 == len(set(drawn)) and set(drawn) <= set(record.captions)
               for drawn, record in zip(first, table.images))
    assert epoch(0) == first and epoch(1) != first
    every = TrainImages(table, lambda image: torch.zeros(1), seed=3, captions_per_image=7)  # 5 captions each
    every.set_epoch(0)
    assert all(set(every[index][1]) == set(record.captions) for index, record in enumerate(table.images))

    assert make_shards(["--data", str(tiny_dataset / "train"), "--out", str(tmp_path / "s"), "--quiet"]) == 0
    shards = ShardBatches([str(tmp_path / "s" / "00000.tar")], lambda image: torch.zeros(1), list, ["captions"],
                          seed=3, rank=0, world_size=1, local_batch=8, batches=6, captions_per_image=2)
    shards.set_epoch(0)
    batches = list(torch.utils.data.DataLoader(shards, batch_size=None, num_workers=2))
    drawn = [caption for batch in batches for _, caption in batch]
    assert len(drawn) == 48 and all(len(pair) == 2 == len(set(pair)) for pair in drawn)


@pytest.mark.slow
def test_demo_negatives_swap_two_objects_bindings_and_eval_scores_them(tiny_dataset, tiny_checkpoint, tmp_path):
    import csv

    with open(tiny_dataset / "valid" / "negatives.csv", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    with open(tiny_dataset / "valid" / "captions.csv", encoding="utf-8") as handle:
        captions = {(row["filename"], row["caption"]) for row in csv.DictReader(handle)}
    assert len(rows) > 60 and {row["swap"] for row in rows} == {"color", "shape", "size", "position/places",
                                                             "position/relation"}
    assert all((row["filename"], row["caption"]) in captions and row["negative"] != row["caption"] for row in rows)
    same_words = [row for row in rows if row["swap"] in ("color", "shape")]
    words = lambda text: sorted(re.findall(r"\w+", text))  # noqa: E731
    assert same_words and all(words(r["caption"]) == words(r["negative"]) for r in same_words)  # same bag of words

    result = run_script("eval.py", "--config", "configs/demo/eval.yaml", "--model-path", str(tiny_checkpoint),
                        "--valid-data", str(tiny_dataset / "valid"), "--output", str(tmp_path / "r.json"))
    assert result.returncode == 0, result.stderr
    assert f"over {len(rows)} caption pairs" in result.stdout
    import json

    from evaluation.compositional import compositional_accuracy, format_compositional

    measured = json.loads((tmp_path / "r.json").read_text())
    assert 0 <= measured["compositional"] <= 1 and measured["compositional-pairs"] == len(rows)
    image = F.normalize(torch.eye(3), dim=-1)
    metrics = compositional_accuracy(image, image[[0, 1, 2]], image[[1, 1, 0]], [0, 1, 2], ["a", "b", "a"])
    assert metrics["compositional"] == pytest.approx(2 / 3) and metrics["compositional/b"] == 0.0  # a tie fails
    assert metrics["compositional-margin"] == pytest.approx(2 / 3)  # cosines 1 - 0, 1 - 1, 1 - 0
    # a position/part label also counts under position, its parts together (and the report names each)
    nested = compositional_accuracy(image, image[[0, 1, 2]], image[[1, 1, 0]], [0, 1, 2],
                                    ["position/places", "position/relation", "position/relation"])
    assert nested["compositional/position"] == pytest.approx(2 / 3)
    assert nested["compositional/position/places"] == 1.0 and nested["compositional/position/relation"] == 0.5
    assert "position 0.667, position/places 1.000, position/relation 0.500" in format_compositional(nested)
    swapped_relation = [row for row in rows if row["swap"] == "position/relation"]
    assert swapped_relation and all(re.search(r"\b(left of|right of|above|below)\b", row["caption"])
                                    for row in swapped_relation)
    assert all(not re.search(r"\b(left of|right of|above|below)\b", row["caption"])
               for row in rows if row["swap"] == "position/places")


def test_wise_ft_mixes_a_siglip_fine_tune_with_its_zero_shot_model(tiny_checkpoint):
    from models.checkpoint import same_architecture
    from models.interpolate import interpolate_weights

    spec = torch.load(tiny_checkpoint, weights_only=True)["spec"]
    assert same_architecture(spec, {**spec, "logit-bias": True, "learned-logit-scale": True})  # on-disk dicts
    zero_shot = {"w": torch.zeros(2), "logit_scale": torch.tensor(2.0)}
    fine_tuned = {"w": torch.ones(2), "logit_scale": torch.tensor(3.0), "logit_bias": torch.tensor(-7.0)}
    mixed = interpolate_weights(zero_shot, fine_tuned, 0.5)
    assert torch.equal(mixed["w"], torch.full((2,), 0.5)) and mixed["logit_bias"].item() == -7.0


def test_cue_only_recall_is_the_expected_recall_of_a_random_ranking_within_a_cue(tmp_path):
    from evaluation.cue_recall import cue_only_recall
    from scripts.make_demo_dataset import main as make_demo_dataset

    metrics = cue_only_recall([1, 2, 1], {0: "red", 1: "red", 2: "blue"})
    assert metrics["cue-text_to_image_R@1"] == pytest.approx((0.5 + 0.5 + 0.5 + 1) / 4)
    assert metrics["cue-image_to_text_R@1"] == pytest.approx((1 / 3 + 2 / 3 + 1) / 3)
    assert metrics["cue-image_to_text_R@5"] == metrics["cue-text_to_image_R@5"] == 1.0
    # image -> text R@2 by enumerating every order of the three "red" captions (owners 0, 1, 1)
    from itertools import permutations

    orders = list(permutations([0, 1, 1]))
    hits = [sum(image in order[:2] for order in orders) / len(orders) for image in (0, 1)]
    two = cue_only_recall([1, 2, 1], {0: "red", 1: "red", 2: "blue"}, ks=(2,))
    assert two["cue-image_to_text_R@2"] == pytest.approx((hits[0] + hits[1] + 1.0) / 3)

    assert make_demo_dataset(["--kind", "glyphs", "--out", str(tmp_path / "g"), "--train", "20", "--valid", "30",
                              "--image-size", "32"]) == 0
    assert (tmp_path / "g" / "valid" / "cues.csv").read_text().splitlines()[1].endswith(tuple(
        f"on {name}" for name in ("red", "green", "blue", "yellow", "purple", "orange", "black", "cyan", "white",
                                   "gray")))


def _same_caption_case():
    """6 images with 2 captions each, several captions shared between images; owner, keys and the positive mask
    written out from the strings."""
    captions = ["a dog", "a brown dog", "a cat", "a dog", "a bird", "a cat", "a fish", "a dog", "a cow", "a bird",
                "a dog", "a cat"]
    owner = torch.arange(6).repeat_interleave(2)
    keys = torch.tensor([hash(caption) for caption in captions])
    mask = [[captions[j] in captions[2 * i:2 * i + 2] for j in range(12)] for i in range(6)]
    return captions, owner, keys, mask


def test_equal_captions_are_positives_of_each_others_images_in_every_objective():
    captions, owner, keys, mask = _same_caption_case()
    pairs = Pairing(owner, keys)
    assert pairs.block(6).tolist() == mask
    assert pairs.block(6, 5, 9).tolist() == [row[5:9] for row in mask]  # a block of texts, as siglip takes them
    image, text = _features(6, 12, seed=3)
    logits = (10.0 * image @ text.t()).tolist()

    def nce(rows):  # -log(sum over positives / sum over all), mean over rows
        return sum(-math.log(sum(math.exp(l) for l, p in zip(row, positive) if p) / sum(map(math.exp, row)))
                   for row, positive in rows) / len(rows)
    expected = (nce([(logits[i], mask[i]) for i in range(6)])
                + nce([([logits[i][j] for i in range(6)], [mask[i][j] for i in range(6)]) for j in range(12)]))
    ours = info_nce(image, text, torch.tensor(10.0), pairs)
    assert math.isclose(ours.item(), expected, rel_tol=1e-5)
    assert not math.isclose(info_nce(image, text, torch.tensor(10.0), owner).item(), expected, rel_tol=1e-3)

    bias = -2.0
    expected = -sum(math.log(1 / (1 + math.exp(-(1 if mask[i][j] else -1) * (logits[i][j] + bias))))
                    for i in range(6) for j in range(12)) / 6
    assert math.isclose(siglip(image, text, torch.tensor(10.0), torch.tensor(bias), pairs, chunk=5).item(), expected,
                        rel_tol=1e-5)

    s = (image @ text.t()).tolist()
    hinge = (sum(max(0.0, 0.2 - s[i][p] + max(s[i][j] for j in range(12) if not mask[i][j]))
                 for i in range(6) for p in range(12) if mask[i][p])
             + sum(max(0.0, 0.2 - s[i][p] + max(s[r][p] for r in range(6) if not mask[r][p]))
                   for i in range(6) for p in range(12) if mask[i][p])) / sum(map(sum, mask))
    assert math.isclose(max_violation(image, text, pairs).item(), hinge, rel_tol=1e-5)


def test_text_keys_are_equal_for_equal_captions_whatever_the_padding(tiny_checkpoint):
    _, tokenizer = prepared_model(str(tiny_checkpoint))
    pad = tokenizer.pad_token_id
    short = tokenizer(["red circle", "blue square", "red circle"])
    long = tokenizer(["red circle", "blue square", "red circle left of a big blue square"])
    assert long.shape[1] > short.shape[1]
    keys, wide = text_keys(short, pad), text_keys(long, pad)
    assert keys[0] == keys[2] == wide[0] and keys[1] == wide[1] and keys[0] != keys[1] and wide[2] != keys[0]
    many = tokenizer([f"{a} {b} {c}" for a in ("red", "blue", "green", "big") for b in ("circle", "square", "cross")
                      for c in ("left", "right", "above", "below", "top")])
    assert len(set(text_keys(many, pad).tolist())) == 60


def test_same_caption_positives_change_the_step_only_where_captions_repeat(tiny_checkpoint):
    model, tokenizer = prepared_model(str(tiny_checkpoint))
    images, ids = batch(tokenizer, captions_per_image=2)
    assert torch.equal(ids[0], ids[8])  # image 0's first caption is image 4's too
    same = Objective(same_caption_positives=True)
    plain_step(model, images, ids, CPU, None, NoScaler(), same)
    repeated = gradients(model)
    model.zero_grad(set_to_none=True)
    plain_step(model, images, ids, CPU, None, NoScaler(), Objective())
    assert any(not torch.allclose(repeated[name], grad) for name, grad in gradients(model).items())
    images, ids = batch(tokenizer, captions_per_image=1)  # no caption repeats: the same gradient
    for objective in (same, Objective()):
        model.zero_grad(set_to_none=True)
        plain_step(model, images, ids, CPU, None, NoScaler(), objective)
        gradient = gradients(model)
        if objective is same:
            reference = gradient
    assert_same(reference, gradient)
    assert "equal captions are positives" in same.describe()


@pytest.mark.parametrize("broken", [False, True])
def test_compositional_accuracy_in_evaluation_equals_a_caption_by_caption_count(tiny_dataset, tiny_checkpoint,
                                                                                 tmp_path, broken):
    """evaluate_table reuses the true captions' features from the recall pass; the swap-pair wins must equal
    those of encoding every caption and its twin on its own (and skip the pairs of an image that fails)."""
    import shutil

    from data.negatives import read_negatives
    from data.sources import open_source
    from data.transforms import preprocess_for
    from evaluation.embedding import embed_captions, embed_images, evaluate_table
    from models.checkpoint import model_from_checkpoint

    valid = tmp_path / "valid"
    shutil.copytree(tiny_dataset / "valid", valid)
    table = open_source(str(valid), "caption", 60).validation_table(False)
    if broken:  # a file that no longer decodes: its image and its pairs are left out
        (valid / "images" / table.images[1].filename).write_bytes(b"not an image")
    negatives = read_negatives(str(valid), table)
    model, spec, tokenizer = model_from_checkpoint(torch.load(tiny_checkpoint, weights_only=True))
    model.eval()
    cpu = torch.device("cpu")
    metrics = evaluate_table(model, tokenizer, table, preprocess_for(spec), 4, 0, cpu, None, negatives)

    images, kept = embed_images(model, table, preprocess_for(spec), 4, 0, cpu, None)
    row = {int(image): position for position, image in enumerate(kept)}
    pairs = [pair for pair in negatives if pair.image in row]
    assert len(pairs) < len(negatives) if broken else len(pairs) == len(negatives)
    wins = 0
    for pair in pairs:
        true, swapped = (embed_captions(model, tokenizer, [text], 1, cpu, None)[0] for text in
                         (pair.caption, pair.negative))
        wins += float(images[row[pair.image]] @ true) > float(images[row[pair.image]] @ swapped)
    assert metrics["compositional"] == pytest.approx(wins / len(pairs), abs=1e-6), (metrics["compositional"], wins)
    assert metrics["compositional-pairs"] == len(pairs)
