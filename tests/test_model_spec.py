"""ModelSpec and the tower registry: checkpoints written before them still load with the same features, every
family's spec round-trips through the on-disk dict, and an unknown family prefix is one UserError.

tests/data/ holds what the code before ModelSpec wrote (commit 6745d68), as text: the layout of a tiny
timm:test_efficientnet + RoBERTa checkpoint with a logit bias and a learned temperature (format, spec dict,
tokenizer files, weight names and shapes) and the features that code gave with weights drawn from seed 0
(checkpoint_before_model_spec.json); and the spec dicts of every family's importer (specs_before_model_spec.json).
No weight file is kept: the test writes the old checkpoint from its layout.
"""
import json
import os

import pytest
import torch

from models.checkpoint import build_model, load_checkpoint, save_checkpoint, same_architecture
from models.factory import model_from_clip
from models.registry import Tower, clip_importers, clip_models, image_towers, text_towers
from models.spec import ModelSpec
from utils.errors import UserError

DATA = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data")
OLD_LAYOUT = os.path.join(DATA, "checkpoint_before_model_spec.json")


def old_specs():
    with open(os.path.join(DATA, "specs_before_model_spec.json"), encoding="utf-8") as handle:
        return json.load(handle)


def write_old_checkpoint(path):
    """The checkpoint 6745d68 wrote, from its layout, with weights drawn from seed 0 (floats in [0.5, 1): a valid
    BatchNorm variance); returns the layout's expected features with the inputs they were measured on."""
    with open(OLD_LAYOUT, encoding="utf-8") as handle:
        layout = json.load(handle)
    generator = torch.Generator().manual_seed(0)
    state_dict = {}
    for name, shape, dtype in layout["state_dict"]:
        if dtype == "float32":
            state_dict[name] = torch.rand(shape, generator=generator) * 0.5 + 0.5
        else:
            state_dict[name] = torch.zeros(shape, dtype=getattr(torch, dtype))
    tokenizer = {name: torch.frombuffer(bytearray(text.encode("utf-8")), dtype=torch.uint8).clone()
                 for name, text in layout["tokenizer"].items()}
    torch.save({"format": layout["format"], "spec": layout["spec"], "tokenizer": tokenizer,
                "state_dict": state_dict}, path)
    size = layout["spec"]["image-size"]
    images = torch.rand(len(layout["captions"]), 3, size, size, generator=generator)
    expected = {key: torch.tensor(value) for key, value in layout["expected"].items()}
    return {**expected, "captions": layout["captions"], "images": images}


def _check_features(model, tokenizer, expected):
    model.eval()
    assert torch.equal(tokenizer(expected["captions"]), expected["input_ids"])
    with torch.no_grad():
        assert (model.encode_image(expected["images"]) - expected["image_features"]).abs().max() <= 1e-6
        assert (model.encode_text(expected["input_ids"]) - expected["text_features"]).abs().max() <= 1e-6
    assert model.logit_scale.item() == expected["logit_scale"].item()
    assert model.logit_bias.item() == expected["logit_bias"].item()


def test_a_checkpoint_written_before_model_spec_loads_with_the_same_features(tmp_path):
    old = tmp_path / "old.pt"
    expected = write_old_checkpoint(old)
    model, preprocess, tokenizer = load_checkpoint(str(old))
    _check_features(model, tokenizer, expected)
    # written again, it holds the very same spec dict, and loads the same
    saved = torch.load(old, weights_only=True)
    again = tmp_path / "again.pt"
    save_checkpoint(str(again), model, ModelSpec.from_dict(saved["spec"]), saved["tokenizer"])
    assert torch.load(again, weights_only=True)["spec"] == saved["spec"]
    _check_features(*load_checkpoint(str(again))[::2], expected)


@pytest.mark.parametrize("family", sorted(old_specs()))
def test_every_familys_spec_round_trips_through_its_dict(family):
    d = old_specs()[family]
    spec = ModelSpec.from_dict(d)
    assert spec.to_dict() == d and ModelSpec.from_dict(spec.to_dict()) == spec
    assert spec.image_size == d["image-size"] and spec.image_mean == (tuple(d["image-mean"]) if "image-mean" in d else None)
    text = [name for name in ("text_encoder_config", "clip_config", "open_clip_model", "cn_clip_struct")
            if getattr(spec, name) is not None]
    assert text == [{"towers:timm": "text_encoder_config", "towers:torchvision": "text_encoder_config",
                     "hf-clip:clip": "clip_config", "hf-clip:chinese_clip": "clip_config",
                     "open_clip": "open_clip_model", "chinese-clip": "cn_clip_struct"}[family]]


def test_logit_bias_and_learned_temperature_leave_the_architecture_alone():
    spec = ModelSpec.from_dict(old_specs()["towers:torchvision"])
    assert same_architecture(spec, spec.replace(logit_bias=True, learned_logit_scale=True).to_dict())
    assert not same_architecture(spec, spec.replace(embed_dim=64))
    assert "logit-bias" not in spec.to_dict() and spec.replace(logit_bias=True).to_dict()["logit-bias"] is True


@pytest.mark.parametrize("model_type", ["clip", "chinese_clip"])
def test_hugging_face_clip_import_writes_the_spec_it_wrote_before(model_type, tmp_path):
    from tests.helpers import write_hf_clip

    write_hf_clip(tmp_path, model_type)
    model, spec, _ = model_from_clip(f"hf:{tmp_path}", None)
    def without_directory(d):  # transformers records the directory it read as _name_or_path
        config = json.loads(d["text-config"])
        config.pop("_name_or_path")
        return {**d, "text-config": config}

    assert isinstance(spec, ModelSpec)
    assert without_directory(spec.to_dict()) == without_directory(old_specs()[f"hf-clip:{model_type}"])
    rebuilt = build_model(spec.to_dict())
    assert set(rebuilt.state_dict()) == set(model.state_dict())


@pytest.mark.slow
@pytest.mark.parametrize("family", ["open_clip", "chinese-clip"])
def test_weights_file_imports_write_the_spec_they_wrote_before(family, tmp_path):
    torch.manual_seed(0)
    if family == "open_clip":
        import open_clip

        torch.save(open_clip.create_model("RN50", pretrained=None).state_dict(), tmp_path / "w.pt")
    else:
        import contextlib
        import io

        with contextlib.redirect_stdout(io.StringIO()):
            from cn_clip.clip.utils import create_model

            clip = create_model("RN50@RBT3-chinese").float()
        torch.save({"state_dict": {f"module.{k}": v for k, v in clip.state_dict().items()}}, tmp_path / "w.pt")
    model, spec, _ = model_from_clip(f"{family}:RN50", str(tmp_path / "w.pt"))
    assert spec.to_dict() == old_specs()[family]
    assert set(build_model(spec).state_dict()) == set(model.state_dict())


def test_an_unknown_clip_prefix_names_the_known_ones():
    with pytest.raises(UserError) as error:
        model_from_clip("cn:RN50", "x.pt")
    assert "'cn:'" in str(error.value)
    for family in clip_importers.families():
        assert family.usage in str(error.value)


def test_a_spec_with_an_unknown_image_prefix_names_the_known_ones():
    spec = {**old_specs()["towers:torchvision"], "image-model": "nofamily:net"}
    with pytest.raises(UserError) as error:
        build_model(spec)
    assert "'nofamily:'" in str(error.value) and "timm:<name>" in str(error.value)
    assert "open_clip:<name>" in str(error.value)  # a spec's image-model may name a CLIP family too


def test_a_spec_with_keys_this_version_does_not_know_is_refused():
    d = old_specs()["towers:timm"]
    with pytest.raises(UserError, match="does not know: text-family"):
        ModelSpec.from_dict({**d, "text-family": "x"})
    with pytest.raises(UserError, match="lacks image-size"):
        ModelSpec.from_dict({k: v for k, v in d.items() if k != "image-size"})


def test_every_family_registers_itself():
    assert {f.prefix for f in image_towers.families()} == {"", "timm:"}
    assert {f.prefix for f in text_towers.families()} == {""}
    assert {f.prefix for f in clip_models.families()} == {"open_clip:", "chinese-clip:", "hf-clip:"}
    assert {f.prefix for f in clip_importers.families()} == {"open_clip:", "chinese-clip:", "hf:"}


def test_towers_follow_the_tower_protocol(tmp_path):
    write_old_checkpoint(tmp_path / "old.pt")
    model = load_checkpoint(str(tmp_path / "old.pt"))[0]
    assert isinstance(model.text_tower, Tower)
    assert model.text_tower.output_dim == 32 and not getattr(model.text_tower, "imported", False)
