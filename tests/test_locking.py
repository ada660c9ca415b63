"""LiT-style tower locking and timm image towers (with weights files from other implementations)."""
from collections import OrderedDict

import torch

from models import load_checkpoint
from models.factory import model_from_towers
from models.image_tower import build_image_backbone, load_image_weights
from tests.helpers import NoScaler, batch
from training.step import plain_step


def test_locked_towers_get_no_gradient_and_keep_batchnorm_statistics(tiny_checkpoint):
    model, _, tokenizer = load_checkpoint(str(tiny_checkpoint))
    # the demo's text tower: embeddings, 1 transformer layer, the word-order block (its last layer)
    notice = model.lock(image=True, image_unlocked=2, text=True, text_unlocked=2)
    assert "image tower locked except its last 2" in notice and "text tower locked except its last 2" in notice
    model.train()
    assert not model.image_backbone.bn1.training  # locked BatchNorm stays in eval mode
    assert model.image_backbone.layer4[1].training  # unlocked blocks train
    running_mean = model.image_backbone.bn1.running_mean.clone()
    images, ids = batch(tokenizer)
    plain_step(model, images, ids, torch.device("cpu"), None, NoScaler())
    assert torch.equal(model.image_backbone.bn1.running_mean, running_mean)
    assert model.image_backbone.conv1.weight.grad is None and model.image_backbone.layer4[1].conv1.weight.grad is not None
    assert model.image_backbone.layer4[0].conv1.weight.grad is not None  # last 2 blocks: layer4[0] and [1]
    assert model.image_backbone.layer3[1].conv1.weight.grad is None
    text = model.text_tower.encoder
    assert text.embeddings.word_embeddings.weight.grad is None
    assert next(text.encoder.layer[-1].parameters()).grad is not None
    assert model.text_tower.ngram.out.weight.grad is not None
    assert model.image_projection.weight.grad is not None and model.text_projection.weight.grad is not None


def test_timm_image_tower_and_weights_matched_by_position(tiny_text_tower):
    reference, dim = build_image_backbone("timm:efficientnet_lite0")
    assert dim == 1280
    # A weights file from another implementation: other names, same tensors in the same order, plus a head.
    renamed = OrderedDict((f"_{i}_{name.replace('.', '_')}", value) for i, (name, value)
                          in enumerate(reference.state_dict().items()))
    renamed["_fc.weight"], renamed["_fc.bias"] = torch.zeros(1000, 1280), torch.zeros(1000)
    model, spec, _ = model_from_towers("timm:efficientnet_lite0", str(tiny_text_tower), pretrained=False,
                                       max_length=32, embed_dim=16, image_size=64)
    load_image_weights(model.image_backbone, renamed, "test file")
    for name, value in reference.state_dict().items():
        assert torch.equal(model.image_backbone.state_dict()[name], value), name
    with torch.no_grad():
        assert model.eval().encode_image(torch.randn(2, 3, 64, 64)).shape == (2, 16)
    assert spec.image_model == "timm:efficientnet_lite0"
    notice = model.lock(image=True, image_unlocked=1)
    assert "of" in notice and not any(p.requires_grad for p in model.image_backbone.conv_stem.parameters())
