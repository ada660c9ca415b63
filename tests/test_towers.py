"""Tower construction, including the actionable errors when pretrained weights are absent offline."""

import pytest
import torch

from models.factory import model_from_towers
from models.image_tower import (build_image_backbone, load_image_weights, read_image_weights,
                                 torchvision_weights_file)
from models.text_tower import load_text_encoder
from tests.helpers import run_script
from utils.errors import UserError


def test_text_model_without_weights_is_refused_for_pretrained(tiny_text_tower):
    with pytest.raises(UserError, match="has no weights .*pretrained: false"):
        model_from_towers("resnet18", str(tiny_text_tower), pretrained=True)


def test_missing_torchvision_weights_say_which_file_to_fetch_and_where(tiny_text_tower, tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch-home"))
    url, path = torchvision_weights_file("resnet50")
    assert path.startswith(str(tmp_path / "torch-home"))
    text_with_weights = tmp_path / "text"
    load_text_encoder(str(tiny_text_tower), pretrained=False).save_pretrained(str(text_with_weights))
    for name in ("tokenizer.json", "tokenizer_config.json"):
        (text_with_weights / name).write_bytes((tiny_text_tower / name).read_bytes())
    with pytest.raises(UserError) as error:
        model_from_towers("resnet50", str(text_with_weights), pretrained=True, max_length=32)
    assert url in str(error.value) and path in str(error.value) and "pretrained: false" in str(error.value)


def test_local_image_weights_file_is_used(tiny_text_tower, tmp_path):
    reference, _ = build_image_backbone("resnet18")
    weights = tmp_path / "resnet18.pth"
    torch.save(reference.state_dict(), weights)
    model, _, _ = model_from_towers("resnet18", str(tiny_text_tower), pretrained=False, max_length=32)
    load_image_weights(model.image_backbone, read_image_weights("resnet18", str(weights)), str(weights))
    assert torch.equal(model.image_backbone.conv1.weight, reference.conv1.weight)


def test_unknown_image_model_lists_choices(tiny_text_tower):
    with pytest.raises(UserError, match="not a torchvision classification model.*resnet50"):
        model_from_towers("resnet5000", str(tiny_text_tower), pretrained=False, max_length=32)


@pytest.mark.slow
def test_missing_text_model_directory_says_what_to_put_there():
    result = run_script("init.py", "--text-model", "pretrains/nothing-here", "--save-path", "/tmp/never.pt")
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "pretrains/nothing-here" in result.stderr and "config.json" in result.stderr


def test_bert_style_text_tower_and_mean_pooling(tmp_path):
    from transformers import BertConfig, BertTokenizerFast

    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "a", "red", "cat", "dog"]
    BertTokenizerFast(vocab={token: i for i, token in enumerate(vocab)}).save_pretrained(str(tmp_path))
    BertConfig(vocab_size=len(vocab), hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
               intermediate_size=32).save_pretrained(str(tmp_path))
    model, spec, tokenizer = model_from_towers("resnet18", str(tmp_path), pretrained=False, text_pooling="mean",
                                               embed_dim=8)
    assert spec.text_encoder_config["model_type"] == "bert"
    ids = tokenizer(["a red cat", "a dog"])
    assert ids[0].tolist() == [2, 5, 6, 7, 3] and ids[1].tolist() == [2, 5, 8, 3, 0]  # real words, right padding
    with torch.no_grad():
        features = model.eval().encode_text(ids)
    assert features.shape == (2, 8)


def test_chinese_bert_tower_with_a_character_vocabulary(tmp_path):
    """The layout of chinese-roberta-wwm-ext (BertTokenizer + BertModel), built from Chinese captions."""
    from scripts.make_demo_text_tower import write_chinese_text_tower

    captions = ["一个大的红色圆形在左上角", "图中，小的青色十字位于左边", "一张包含蓝色正方形的图片"]
    write_chinese_text_tower(captions, str(tmp_path), hidden_size=16, layers=1, heads=2, max_length=32)
    model, spec, tokenizer = model_from_towers("resnet18", str(tmp_path), pretrained=False, max_length=32,
                                               embed_dim=8)
    assert spec.text_encoder_config["model_type"] == "bert"
    ids = tokenizer(["红色圆形在左上角", "青色十字"])
    tokens = tokenizer.hf_tokenizer.convert_ids_to_tokens(ids[0])
    assert tokens == ["[CLS]", "红", "色", "圆", "形", "在", "左", "上", "角", "[SEP]"]
    assert tokenizer.hf_tokenizer.unk_token_id not in ids.tolist()[1]
    with torch.no_grad():
        features = model.eval().encode_text(ids)
    assert features.shape == (2, 8) and not torch.allclose(features[0], features[1])
