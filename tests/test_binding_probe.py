"""Binding probes (evaluation/binding_probe.py, scripts/probe_binding.py): a probe reaches 1.0 on features that
hold the binding and stays near chance on a bag of the same properties; the script's table on a real model."""
import json
import random
import shutil

import pytest
import torch

from evaluation.binding_probe import fact_targets, fact_vocabulary, fit_linear_probe, pair_accuracy, swap_pair_wins
from scripts import demo_shapes
from scripts.make_demo_dataset import main as make_dataset
from scripts.probe_binding import main as probe_main
from tests.helpers import run_script


def _scenes(count, seed):
    rng, scenes = random.Random(seed), []
    while len(scenes) < count:
        scene = demo_shapes.sample_scene(rng)
        swap, other = demo_shapes.swapped_scene(scene, rng)
        if sorted(other) != sorted(scene):  # two equal objects exchanging places: no swap at all
            scenes.append((scene, other, swap))
    return scenes


def _properties(scene):
    """The bag: which sizes, colors, shapes and cells occur, unbound."""
    return sorted({f"{field}" for obj in scene for field in (obj[0], obj[1], obj[2], f"cell{obj[3]}{obj[4]}")})


def test_pair_wins_are_the_log_likelihood_comparison_done_by_brute_force():
    generator = torch.Generator().manual_seed(0)
    logits = torch.randn(50, 12, generator=generator)
    true = (torch.rand(50, 12, generator=generator) > 0.5).float()
    swapped = (torch.rand(50, 12, generator=generator) > 0.5).float()

    def likelihood(z, t):
        return sum(t[k] * torch.log(torch.sigmoid(z[k])) + (1 - t[k]) * torch.log(torch.sigmoid(-z[k]))
                   for k in range(len(z)))

    expected = [bool(likelihood(logits[r], true[r]) > likelihood(logits[r], swapped[r])) for r in range(50)]
    assert swap_pair_wins(logits, true, swapped).tolist() == expected
    assert not swap_pair_wins(logits, true, true).any()  # a tie is a loss
    accuracy = pair_accuracy(torch.tensor([True, False, True, True]), ["color", "color", "size", ""])
    assert accuracy == {"all": 0.75, "color": 0.5, "size": 1.0}


def test_a_probe_finds_binding_where_the_features_hold_it_and_not_in_a_bag_of_the_same_words():
    train, valid = _scenes(1500, seed=1), _scenes(400, seed=2)
    vocabulary = fact_vocabulary(demo_shapes.binding_facts(scene) for scene, _, _ in train)
    assert len(vocabulary) == 16 + 8 + 18 + 32 + 72 + 36  # every pairing of size, color, shape, cell
    targets = fact_targets([demo_shapes.binding_facts(scene) for scene, _, _ in train], vocabulary)
    true = fact_targets([demo_shapes.binding_facts(scene) for scene, _, _ in valid], vocabulary)
    swapped = fact_targets([demo_shapes.binding_facts(other) for _, other, _ in valid], vocabulary)
    assert (true != swapped).any(dim=1).all()  # every swap changes some fact
    swaps = [swap for _, _, swap in valid]

    # features that hold the facts (plus noise): the probe tells every scene from its swap
    generator = torch.Generator().manual_seed(0)
    mixing = torch.randn(len(vocabulary), 64, generator=generator)
    bound = pair_accuracy(swap_pair_wins(fit_linear_probe(targets @ mixing, targets)(true @ mixing), true, swapped),
                          swaps)
    assert bound["all"] > 0.97, bound

    # features that hold only which properties occur: a swap leaves them unchanged, the probe can only guess
    words = sorted({word for scene, _, _ in train for word in _properties(scene)})
    bag = fact_targets([_properties(scene) for scene, _, _ in train], words)
    valid_bag = fact_targets([_properties(scene) for scene, _, _ in valid], words)
    assert torch.equal(valid_bag, fact_targets([_properties(other) for _, other, _ in valid], words))
    unbound = pair_accuracy(swap_pair_wins(fit_linear_probe(bag, targets)(valid_bag), true, swapped), swaps)
    assert 0.38 < unbound["all"] < 0.62, unbound


def test_the_generator_writes_each_images_facts_and_its_swapped_scenes(tmp_path):
    assert make_dataset(["--out", str(tmp_path), "--train", "20", "--valid", "10", "--seed", "4"]) == 0
    records = [json.loads(line) for line in (tmp_path / "valid" / "scenes.jsonl").read_text().splitlines()]
    assert [record["filename"] for record in records] == [f"{i:06d}.png" for i in range(10)]
    for record in records:
        assert record["swap"] in demo_shapes.SWAPS
        assert record["facts"] == sorted(record["facts"]) and all(len(f.split()) == 2 for f in record["facts"])
    # the facts are the generator's own scenes: the first image's captions name its facts' colors and shapes
    caption = (tmp_path / "valid" / "captions.csv").read_text().splitlines()[1]
    named = {word for fact in records[0]["facts"] for word in fact.split() if word in demo_shapes.COLORS}
    assert named and all(color in caption for color in named), (caption, named)
    assert make_dataset(["--out", str(tmp_path / "glyphs"), "--kind", "glyphs", "--train", "5", "--valid", "5"]) == 0
    assert not (tmp_path / "glyphs" / "valid" / "scenes.jsonl").exists()  # glyphs have no objects to swap


def test_relation_facts_say_how_each_object_stands_to_the_others():
    red, blue = ("small", "red", "circle", 0, 0), ("large", "blue", "square", 0, 2)
    assert demo_shapes.relation_facts((red, blue)) == ["blue square right of", "red circle left of"]
    swapped = (red[:3] + blue[3:], blue[:3] + red[3:])  # places exchanged: every relation turns round
    assert demo_shapes.relation_facts(swapped) == ["blue square left of", "red circle right of"]
    green = ("small", "green", "cross", 2, 0)  # same column as red: above / below
    assert demo_shapes.relation_facts((red, blue, green)) == [
        "blue square right of", "green cross below", "green cross left of", "red circle above",
        "red circle left of"]
    assert demo_shapes.relation_facts((red, red[:3] + (1, 1))) == ["red circle left of", "red circle right of"]


@pytest.fixture(scope="module")
def probe_data(tmp_path_factory):
    out = tmp_path_factory.mktemp("probe") / "data"
    assert make_dataset(["--out", str(out), "--train", "160", "--valid", "40", "--image-size", "32",
                         "--seed", "3"]) == 0
    return out


@pytest.mark.slow
def test_probe_binding_prints_every_probe_on_a_real_model(probe_data, tiny_checkpoint, tmp_path, capsys):
    out = tmp_path / "probe.json"
    assert probe_main(["--model-path", str(tiny_checkpoint), "--data", str(probe_data), "--num-workers", "0",
                       "--train-towers", "1", "--out", str(out)]) in (None, 0)
    table = capsys.readouterr().out
    results = json.loads(out.read_text())
    rows = ["image tower", "text tower", "image embedding", "text embedding", "model", "text bag of words",
            "text bag of word pairs",
            "image tower trained", "text tower trained"]
    for row in rows:
        assert f"| {row} | {results[row]['all']:.3f} |" in table
        assert 0.0 <= results[row]["all"] <= 1.0 and set(results[row]) <= {"all", *demo_shapes.SWAPS, "position/places",
                                                                        "position/relation"}
    scenes = [json.loads(line) for line in (probe_data / "valid" / "scenes.jsonl").read_text().splitlines()]
    assert results["image-pairs"] == sum(record["facts"] != record["swapped-facts"] for record in scenes)
    assert results["facts"] == 182 and results["image-pairs"] >= 38
    # word pairs hold the binding that single words lack, even on 160 training images
    assert results["text bag of word pairs"]["all"] > results["text bag of words"]["all"] + 0.1, results
    # the model row is eval.py's compositional accuracy on the same pairs
    evaluated = run_script("eval.py", "--model-path", str(tiny_checkpoint), "--valid-data",
                           str(probe_data / "valid"), "--num-workers", "0", "--output", str(tmp_path / "eval.json"))
    assert evaluated.returncode == 0, evaluated.stderr
    reported = json.loads((tmp_path / "eval.json").read_text())
    assert results["model"]["all"] == pytest.approx(reported["compositional"], abs=1e-6)


@pytest.mark.slow
def test_probe_binding_scores_relation_facts(probe_data, tiny_checkpoint, tmp_path, capsys):
    out = tmp_path / "relations.json"
    assert probe_main(["--model-path", str(tiny_checkpoint), "--data", str(probe_data), "--num-workers", "0",
                       "--facts", "relations", "--out", str(out)]) in (None, 0)
    results = json.loads(out.read_text())
    scenes = [json.loads(line) for line in (probe_data / "valid" / "scenes.jsonl").read_text().splitlines()]
    # a size swap leaves every relation as it was: only pairs whose relations differ are scored
    assert results["image-pairs"] == sum(record["relations"] != record["swapped-relations"] for record in scenes)
    assert 0 < results["image-pairs"] < len(scenes)
    assert f"| image tower | {results['image tower']['all']:.3f} |" in capsys.readouterr().out
    assert "size" not in results["image tower"] and "size" not in results["text tower"]


@pytest.mark.slow
def test_a_folder_without_facts_is_one_clear_error(tiny_checkpoint, probe_data, tmp_path):
    shutil.copytree(probe_data, tmp_path / "data")
    (tmp_path / "data" / "train" / "scenes.jsonl").unlink()
    result = run_script("scripts/probe_binding.py", "--model-path", str(tiny_checkpoint), "--data",
                        str(tmp_path / "data"))
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
    assert f"{tmp_path / 'data' / 'train' / 'scenes.jsonl'} not found" in result.stderr
    assert "make_demo_dataset.py" in result.stderr


@pytest.mark.parametrize("lang", sorted(demo_shapes.CAPTIONERS))
def test_position_swaps_are_labelled_by_the_frame_of_their_caption(lang):
    # the captioners write each frame once, in order, before repeating: frames 1 and 2 relate two objects
    # ("a red circle left of a blue square"), frames 0, 3 and 5 place each object ("... on the left")
    relation_frames, place_frames = {1, 2}, {0, 3, 5}
    checked = 0
    for scene, _, _ in _scenes(60, seed=3):
        captions = demo_shapes.CAPTIONERS[lang](scene, random.Random(checked), 7)
        if len(captions) < 7:
            continue
        for frame, caption in enumerate(captions):
            label = demo_shapes.swap_label("position", caption, lang)
            if frame in relation_frames | place_frames:
                assert label == ("position/relation" if frame in relation_frames else "position/places"), caption
                checked += 1
        assert demo_shapes.swap_label("color", captions[1], lang) == "color"
    assert checked >= 200
