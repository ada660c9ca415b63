"""The word-order block (models/word_order.py, init key text-ngram): what it adds to a bag of words, that it
starts as the identity, ignores padding, round-trips through checkpoints and ONNX, and sits last in the text
tower's layers."""
import itertools

import numpy as np
import pytest
import torch

import init
from evaluation.binding_probe import fact_targets, fact_vocabulary, fit_linear_probe, swap_pair_wins
from models.checkpoint import build_model, load_checkpoint, read_checkpoint, save_checkpoint
from models.factory import model_from_towers
from models.word_order import WIDTHS, NgramBlock
from utils.errors import UserError
from tests.helpers import exported_checkpoint

COLORS, SHAPES = ("red", "blue", "green", "yellow"), ("circle", "square", "cross", "star")


def _scenes():
    """Token ids of "c1 s1 c2 s2" for every two distinct colors and shapes, their facts ("c1 s1", "c2 s2") and
    those of the scene with the two colors exchanged (the same bag of words)."""
    rows = []
    for (c1, c2), (s1, s2) in itertools.product(itertools.permutations(range(4), 2), repeat=2):
        ids = [c1, 4 + s1, c2, 4 + s2]
        rows.append((ids, [f"{c1} {s1}", f"{c2} {s2}"], [f"{c2} {s1}", f"{c1} {s2}"]))
    return rows


def _mean(hidden):
    return hidden.mean(1)


def _random_block(dim, width, seed):
    torch.manual_seed(seed)
    block = NgramBlock(dim, width)
    torch.nn.init.normal_(block.out.weight, std=dim ** -0.5)
    return block.eval()


def test_an_ngram_block_lets_a_linear_probe_bind_what_a_bag_of_words_cannot():
    """Swap-pair accuracy (as scripts/probe_binding.py) of a linear probe on mean-pooled features of random
    token embeddings: chance for the plain mean (the swap has the same words), near 1 with the block."""
    rows = _scenes()
    torch.manual_seed(0)
    embeddings = torch.randn(8, 32)
    hidden = embeddings[torch.tensor([ids for ids, _, _ in rows])]  # [N,4,32]
    mask = torch.ones(hidden.shape[:2])
    vocabulary = fact_vocabulary(facts for _, facts, _ in rows)
    true = fact_targets([facts for _, facts, _ in rows], vocabulary)
    swapped = fact_targets([swap for _, _, swap in rows], vocabulary)
    with torch.no_grad():
        plain = _mean(hidden)
        grams = _mean(_random_block(32, 2, seed=1)(hidden, mask))
    accuracy = {name: swap_pair_wins(fit_linear_probe(f, true)(f), true, swapped).float().mean().item()
                for name, f in (("plain", plain), ("ngram", grams))}
    assert accuracy["plain"] <= 0.55, accuracy
    assert accuracy["ngram"] >= 0.95, accuracy


def test_the_block_is_the_identity_until_trained_and_ignores_padding():
    hidden, mask = torch.randn(3, 7, 16), torch.ones(3, 7)
    mask[1, 4:] = 0
    assert torch.equal(NgramBlock(16, 3)(hidden, mask), hidden)
    block = _random_block(16, 3, seed=0)
    garbage = hidden.clone()
    garbage[1, 4:] = 100.0  # whatever the padded positions hold, the real ones read zeros there
    with torch.no_grad():
        out, again = block(hidden, mask), block(garbage, mask)
    assert torch.allclose(out[1, :4], again[1, :4], atol=1e-6)
    assert not torch.allclose(out[0], hidden[0], atol=1e-3)  # trained weights do change the features


@pytest.mark.parametrize("width", WIDTHS[1:])
def test_each_position_reads_exactly_the_tokens_of_its_window(width):
    """Brute force: position 11's output moves when a token within the window (centred, the extra one on the
    right for even widths) changes, and only then; 9 tokens span "a big red circle left of a blue square", 17
    characters "一个大的青色三角形在一个大的橙色正方形的左边" from the first colour to the direction."""
    hidden, mask = torch.randn(1, 23, 8), torch.ones(1, 23)
    block = _random_block(8, width, seed=4)
    left = (width - 1) // 2
    with torch.no_grad():
        base = block(hidden, mask)[0, 11]
        for other in range(23):
            if other == 11:
                continue
            moved = hidden.clone()
            moved[0, other] += 1.0
            changed = not torch.allclose(block(moved, mask)[0, 11], base, atol=1e-6)
            assert changed == (-left <= other - 11 <= width - 1 - left), (width, other)


def test_the_block_gives_the_same_caption_the_same_feature_at_any_padding(tiny_checkpoint):
    model, _, tokenizer = load_checkpoint(str(tiny_checkpoint))
    model.text_tower.ngram = _random_block(model.text_tower.output_dim, 3, seed=2)
    model.text_tower.pooling = "mean"
    short = tokenizer(["a red circle"])
    padded = tokenizer(["a red circle", "a big blue square left of a small green cross and a yellow star"])
    with torch.no_grad():
        assert torch.allclose(model.encode_text(short)[0], model.encode_text(padded)[0], atol=1e-5)


@pytest.fixture()
def ngram_model(tiny_text_tower):
    model, spec, tokenizer = model_from_towers("resnet18", str(tiny_text_tower), pretrained=False,
                                               text_pooling="mean", embed_dim=32, image_size=32, max_length=32,
                                               text_ngram=3)
    model.text_tower.ngram = _random_block(model.text_tower.output_dim, 3, seed=3)
    return model.eval(), spec, tokenizer


def test_a_checkpoint_with_the_block_round_trips(ngram_model, tmp_path):
    model, spec, tokenizer = ngram_model
    path = tmp_path / "ngram.pt"
    save_checkpoint(str(path), model, spec, tokenizer.to_files())
    assert torch.load(path, weights_only=True)["spec"]["text-ngram"] == 3
    loaded, _, loaded_tokenizer = load_checkpoint(str(path))
    ids = loaded_tokenizer(["a red circle left of a blue square", "a blue circle left of a red square"])
    with torch.no_grad():
        assert torch.equal(loaded.encode_text(ids), model.encode_text(ids))
    older = {key: value for key, value in read_checkpoint(str(path))["spec"].items() if key != "text-ngram"}
    assert build_model(older).text_tower.ngram is None  # a spec written before the key: no block


def test_the_block_is_the_text_towers_last_layer_for_locking(ngram_model):
    model, _, _ = ngram_model
    _, text_layers = model.tower_layers()
    assert text_layers[-1] is model.text_tower.ngram
    model.lock(text=True, text_unlocked=1)
    assert all(p.requires_grad for p in model.text_tower.ngram.parameters())
    assert not any(p.requires_grad for p in model.text_tower.encoder.parameters())


@pytest.mark.parametrize("extra", [["--text-pooling", "cls"], ["--clip-model", "open_clip:RN50"]])
def test_init_refuses_the_block_where_it_cannot_work(tiny_text_tower, tmp_path, extra):
    with pytest.raises(UserError, match="text-ngram 3 needs"):
        init.main(["--config", "configs/demo/init.yaml", "--text-model", str(tiny_text_tower), "--text-ngram", "3",
                   "--save-path", str(tmp_path / "x.pt"), *extra])
    assert not (tmp_path / "x.pt").exists()


@pytest.mark.slow
def test_onnx_export_of_a_model_with_the_block_matches_pytorch(ngram_model, tmp_path):
    from retrieval.encoder import OnnxEncoder, TorchEncoder

    path, out, report = exported_checkpoint(*ngram_model, tmp_path)
    assert report["text-max-abs-diff"] <= 1e-4
    texts = ["a red circle", "a big blue square left of a small green cross", "x"]
    torch_encoder, onnx_encoder = TorchEncoder(str(path)), OnnxEncoder(str(path), str(out))
    assert np.abs(torch_encoder.encode_texts(texts) - onnx_encoder.encode_texts(texts)).max() <= 1e-4
