"""The attention-pooling head (models/attention_pool.py, init key image-pooling): what it keeps that the
average loses, other map sizes, the backbones it fits, checkpoint and ONNX round trips, and its place last in
the image tower's layers."""
import itertools

import numpy as np
import pytest
import torch

import init
from models.attention_pool import AttentionPool2d, attach_attention_pool
from models.checkpoint import build_model, load_checkpoint, read_checkpoint, save_checkpoint
from models.factory import model_from_towers
from models.image_tower import build_image_backbone
from tests.helpers import exported_checkpoint
from utils.errors import UserError


def _two_object_maps(dim=32, seed=0):
    """2x2 maps holding two of 6 random 'colour' vectors on the top row, every ordered pair, with the target
    "is the first colour of the pair on the left"; the swapped map of each pair is in the set too."""
    torch.manual_seed(seed)
    colours = torch.randn(6, dim)
    maps, targets = [], []
    for a, b in itertools.permutations(range(6), 2):
        feature_map = torch.zeros(dim, 2, 2)
        feature_map[:, 0, 0], feature_map[:, 0, 1] = colours[a], colours[b]
        maps.append(feature_map)
        targets.append(float(a < b))  # a fact about which colour sits left, invisible to a bag of colours
    return torch.stack(maps), torch.tensor(targets).unsqueeze(1)


def _fitted_accuracy(pool, maps, targets, steps=300):
    """Accuracy on (maps, targets) of ``pool`` + a linear head trained together by Adam (full batch)."""
    torch.manual_seed(2)
    head = torch.nn.Linear(maps.shape[1], 1)
    parameters = [*pool.parameters(), *head.parameters()]
    optimizer = torch.optim.Adam(parameters, lr=1e-2) if parameters else None
    for _ in range(steps):
        loss = torch.nn.functional.binary_cross_entropy_with_logits(head(pool(maps)), targets)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    with torch.no_grad():
        return ((head(pool(maps)) > 0).float() == targets).float().mean().item()


def test_attention_pooling_keeps_where_a_feature_sits_and_the_average_does_not():
    maps, targets = _two_object_maps()
    swapped = maps.flip(-1)  # each object moved to the other cell
    torch.manual_seed(1)
    pool = AttentionPool2d(32, grid=2).eval()
    average = torch.nn.Sequential(torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten())
    with torch.no_grad():
        assert torch.equal(average(maps), average(swapped))
        assert (pool(maps) - pool(swapped)).norm(dim=1).min() > 1e-3
    accuracy = {"average": _fitted_accuracy(average, maps, targets),
                "attention": _fitted_accuracy(pool, maps, targets)}
    assert accuracy["average"] <= 0.5, accuracy  # each map and its swap look the same, with opposite targets
    assert accuracy["attention"] >= 0.95, accuracy


def test_a_map_of_another_size_reads_a_resized_positional_embedding():
    torch.manual_seed(0)
    pool = AttentionPool2d(64, grid=2).eval()
    assert pool.positions(2, 2) is pool.positional_embedding
    assert pool.positions(4, 4).shape == (17, 64)
    assert torch.equal(pool.positions(4, 4)[0], pool.positional_embedding[0])
    with torch.no_grad():
        assert pool(torch.randn(3, 64, 4, 4)).shape == (3, 64)
    assert pool.attention.num_heads == 1  # 64 channels: one head of 64, as CLIP's width // 64


# convnext_tiny's head (LayerNorm2d) and timm's MobileNetV3 (a 1x1 conv head) read the pooling as [B,C,1,1]
@pytest.mark.parametrize("name", ["resnet18", "mobilenet_v3_small", "convnext_tiny", "timm:resnet18",
                                  "timm:mobilenetv3_small_100"])
def test_the_head_replaces_the_global_average_of_torchvision_and_timm_cnns(name):
    backbone, dim = build_image_backbone(name)
    attach_attention_pool(backbone, 64, name)
    pools = [m for m in backbone.modules() if isinstance(m, AttentionPool2d)]
    assert len(pools) == 1 and pools[0].grid == 2
    with torch.no_grad():
        assert backbone.eval()(torch.randn(2, 3, 64, 64)).shape == (2, dim)


@pytest.mark.parametrize("name, size", [("vit_b_16", 224), ("vgg11", 64), ("densenet121", 64)])
def test_a_tower_without_a_global_average_is_refused(name, size):
    """A ViT pools its own way, VGG averages to 7 x 7 for its flattening classifier, DenseNet pools in code."""
    backbone, _ = build_image_backbone(name)
    with pytest.raises(UserError, match=f"image-pooling attention: image-model '{name}' has no global average"):
        attach_attention_pool(backbone, size, name)


class _TwoPoolings(torch.nn.Module):
    """A backbone that averages two maps of different widths with one module (as no head can)."""

    def __init__(self):
        super().__init__()
        self.narrow, self.wide = torch.nn.Conv2d(3, 8, 3, stride=2), torch.nn.Conv2d(3, 16, 3, stride=4)
        self.avgpool = torch.nn.AdaptiveAvgPool2d(1)

    def forward(self, images):
        return torch.cat([self.avgpool(self.narrow(images)).flatten(1), self.avgpool(self.wide(images)).flatten(1)], 1)


def test_a_tower_that_rejects_the_head_is_refused_and_keeps_its_pooling():
    backbone = _TwoPoolings()
    original = backbone.avgpool
    with pytest.raises(UserError, match="does not work with the head in place of its avgpool"):
        attach_attention_pool(backbone, 32, "two-poolings")
    assert backbone.avgpool is original


@pytest.fixture()
def pooled_model(tiny_text_tower):
    torch.manual_seed(0)
    model, spec, tokenizer = model_from_towers("resnet18", str(tiny_text_tower), pretrained=False,
                                               embed_dim=32, image_size=64, max_length=16, image_pooling="attention")
    return model.eval(), spec, tokenizer


def test_a_checkpoint_with_the_head_round_trips(pooled_model, tmp_path):
    model, spec, tokenizer = pooled_model
    path = tmp_path / "pooled.pt"
    save_checkpoint(str(path), model, spec, tokenizer.to_files())
    payload = torch.load(path, weights_only=True)
    assert payload["spec"]["image-pooling"] == "attention"
    assert "image_backbone.avgpool.positional_embedding" in payload["state_dict"]
    loaded, _, _ = load_checkpoint(str(path))
    images = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(loaded.encode_image(images), model.encode_image(images))
    older = {key: value for key, value in read_checkpoint(str(path))["spec"].items() if key != "image-pooling"}
    assert isinstance(build_model(older).image_backbone.avgpool, torch.nn.AdaptiveAvgPool2d)


def test_the_head_is_the_image_towers_last_layer_for_locking(pooled_model):
    model, _, _ = pooled_model
    image_layers, _ = model.tower_layers()
    assert image_layers[-1] is model.image_backbone.avgpool
    model.lock(image=True, image_unlocked=1)
    assert all(p.requires_grad for p in model.image_backbone.avgpool.parameters())
    assert not any(p.requires_grad for p in model.image_backbone.layer4.parameters())


def test_init_writes_the_head_and_refuses_it_for_an_imported_clip(tiny_text_tower, tmp_path):
    common = ["--config", "configs/demo/init.yaml", "--text-model", str(tiny_text_tower), "--max-length", "16",
              "--image-pooling", "attention"]
    init.main([*common, "--save-path", str(tmp_path / "pooled.pt")])
    assert read_checkpoint(str(tmp_path / "pooled.pt"))["spec"]["image-pooling"] == "attention"
    with pytest.raises(UserError, match="image-pooling attention replaces"):
        init.main([*common, "--clip-model", "open_clip:RN50", "--text-ngram", "0", "--save-path", str(tmp_path / "x.pt")])
    assert not (tmp_path / "x.pt").exists()


@pytest.mark.slow
def test_onnx_export_of_a_model_with_the_head_matches_pytorch(pooled_model, tmp_path):
    from retrieval.encoder import OnnxEncoder, TorchEncoder

    path, out, report = exported_checkpoint(*pooled_model, tmp_path)
    assert report["image-max-abs-diff"] <= 1e-4
    images = [np.random.default_rng(seed).integers(0, 255, (64, 64, 3), dtype=np.uint8) for seed in range(3)]
    from PIL import Image

    pictures = [Image.fromarray(array) for array in images]
    torch_encoder, onnx_encoder = TorchEncoder(str(path)), OnnxEncoder(str(path), str(out))
    assert np.abs(torch_encoder.encode_images(pictures) - onnx_encoder.encode_images(pictures)).max() <= 1e-4


@pytest.mark.parametrize("name", ["timm:resnet18", "timm:mobilenetv3_small_100"])
def test_a_timm_towers_feature_size_is_what_it_outputs(name):
    """With the average kept too: MobileNetV3's conv head after the pooling widens 576 features to 1,024."""
    backbone, dim = build_image_backbone(name)
    with torch.no_grad():
        assert backbone.eval()(torch.randn(2, 3, 64, 64)).shape == (2, dim)
