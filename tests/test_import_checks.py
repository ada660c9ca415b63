"""What init.py refuses to import: tokenizers without their vocabulary, and weights files that leave part of the
model random. Each is a one-line error naming what is wrong, never a model that runs on empty ids or holes."""
import json
import shutil

import pytest
import torch

from tests.helpers import run_script, write_hf_clip
from utils.errors import UserError

SPECIAL_TOKENS = ["<s>", "<pad>", "</s>", "<unk>", "<mask>"]


def error_line(result):
    """The one line run_cli prints for a UserError (transformers may log above it)."""
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
    line = result.stderr.strip().splitlines()[-1]
    assert line.startswith("error: ")
    return line


def init_text_model(text_model, out, *extra):
    return run_script("init.py", "--config", "configs/demo/init.yaml", "--text-model", str(text_model),
                      "--save-path", str(out), "--image-size", "32", "--max-length", "32", "--embed-dim", "32", *extra)


@pytest.fixture
def hf_clip_dir(tmp_path):
    directory = tmp_path / "clip"
    directory.mkdir()
    write_hf_clip(directory, "clip")
    return directory


@pytest.mark.slow
def test_a_clip_directory_without_tokenizer_files_is_refused(hf_clip_dir, tmp_path):
    for name in ("tokenizer.json", "tokenizer_config.json"):
        (hf_clip_dir / name).unlink()
    out = tmp_path / "x.pt"
    result = run_script("init.py", "--clip-model", f"hf:{hf_clip_dir}", "--save-path", str(out))
    line = error_line(result)
    assert str(hf_clip_dir) in line and "no tokenizer files" in line and "tokenizer.json" in line
    assert not out.exists()


def _only_config(directory, text_model):
    shutil.copy(text_model / "config.json", directory / "config.json")


def _only_special_tokens(directory, text_model):
    _only_config(directory, text_model)
    (directory / "vocab.json").write_text(json.dumps({token: i for i, token in enumerate(SPECIAL_TOKENS)}))
    (directory / "merges.txt").write_text("#version: 0.2\n")


def _unknown_words_become_padding(directory, text_model):
    """A vocabulary of ten colours whose unknown token is its pad token: every probe caption is all padding."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    _only_config(directory, text_model)
    words = ["<pad>", "red", "green", "blue", "cyan", "pink", "gray", "black", "white", "brown"]
    backend = Tokenizer(models.WordLevel({word: i for i, word in enumerate(words)}, unk_token="<pad>"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    PreTrainedTokenizerFast(tokenizer_object=backend, pad_token="<pad>", unk_token="<pad>").save_pretrained(
        str(directory))


@pytest.mark.slow
@pytest.mark.parametrize("break_tokenizer, words", [
    (_only_config, ["no tokenizer files", "vocab.json + merges.txt"]),
    (_only_special_tokens, ["only 5 tokens", "vocabulary files"]),
    (_unknown_words_become_padding, ["the same ids", "a photo of a cat"]),
])
def test_a_text_model_whose_tokenizer_cannot_tell_captions_apart_is_refused(break_tokenizer, words,
                                                                             tiny_text_tower, tmp_path):
    directory = tmp_path / "text"
    directory.mkdir()
    break_tokenizer(directory, tiny_text_tower)
    out = tmp_path / "x.pt"
    line = error_line(init_text_model(directory, out))
    assert str(directory) in line and all(word in line for word in words), line
    assert not out.exists()


@pytest.mark.slow
def test_a_checkpoint_whose_tokenizer_files_are_broken_is_refused_on_load(tiny_checkpoint, tmp_path):
    from models import load_checkpoint

    payload = torch.load(tiny_checkpoint, weights_only=True)
    assert sorted(payload["tokenizer"]) == ["tokenizer.json", "tokenizer_config.json"]
    del payload["tokenizer"]["tokenizer.json"]  # its vocabulary
    broken = tmp_path / "broken.pt"
    torch.save(payload, broken)
    with pytest.raises(UserError, match="the checkpoint has no tokenizer files"):
        load_checkpoint(str(broken))


@pytest.mark.slow
@pytest.mark.parametrize("change, words", [
    ("drop the second vision block", ["16 of the model's weights are missing",
                                      "vision_model.encoder.layers.1.layer_norm1.bias"]),
    ("add a stray weight", ["1 weights belong to no part of the model", "stray.weight"]),
])
def test_a_clip_weights_file_that_does_not_fill_the_model_is_refused(change, words, hf_clip_dir, tmp_path):
    from safetensors.torch import load_file, save_file

    path = hf_clip_dir / "model.safetensors"
    state = load_file(str(path))
    if change.startswith("drop"):
        state = {k: v for k, v in state.items() if not k.startswith("vision_model.encoder.layers.1.")}
    else:
        state["stray.weight"] = torch.zeros(3)
    save_file(state, str(path), metadata={"format": "pt"})
    out = tmp_path / "x.pt"
    line = error_line(run_script("init.py", "--clip-model", f"hf:{hf_clip_dir}", "--save-path", str(out)))
    assert str(hf_clip_dir) in line and all(word in line for word in words), line
    assert not out.exists()


@pytest.mark.slow
def test_a_text_model_weights_file_with_holes_is_refused_but_a_pretraining_head_is_not(tiny_text_tower, tmp_path):
    from safetensors.torch import load_file, save_file

    from models.image_tower import build_image_backbone
    from models.text_tower import load_text_encoder

    directory = tmp_path / "text"
    load_text_encoder(str(tiny_text_tower), pretrained=False).save_pretrained(str(directory))
    for name in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(tiny_text_tower / name, directory / name)
    image_weights = tmp_path / "resnet18.pth"
    torch.save(build_image_backbone("resnet18")[0].state_dict(), image_weights)
    path = directory / "model.safetensors"
    complete = {**load_file(str(path)), "lm_head.bias": torch.zeros(3)}  # a masked-LM head the tower drops
    save_file({k: v for k, v in complete.items() if ".layer.0.output.dense." not in k}, str(path),
              metadata={"format": "pt"})
    args = ("--pretrained", "true", "--image-weights", str(image_weights))
    out = tmp_path / "x.pt"
    line = error_line(init_text_model(directory, out, *args))
    assert f"text-model '{directory}'" in line and "2 of the model's weights are missing" in line, line
    assert "encoder.layer.0.output.dense.bias" in line and "lm_head" not in line
    assert not out.exists()
    save_file(complete, str(path), metadata={"format": "pt"})
    result = init_text_model(directory, out, *args)
    assert result.returncode == 0, result.stderr
