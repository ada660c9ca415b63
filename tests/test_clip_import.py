"""Importing a pretrained open_clip CLIP: the kit's model equals open_clip's on the same pixels and strings.

The "pretrained" file is a randomly initialised CLIP written by open_clip itself (no weights can be
downloaded here); what is tested is the import, not the weights.
"""
import pytest
import torch

from models import load_checkpoint
from tests.helpers import HF_CLIP_TEXTS as TEXTS, run_script, write_hf_clip

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)


@pytest.fixture(scope="module")
def open_clip_rn50(tmp_path_factory):
    import open_clip

    torch.manual_seed(0)
    clip = open_clip.create_model("RN50", pretrained=None).eval()
    path = tmp_path_factory.mktemp("clip") / "rn50.pt"
    torch.save(clip.state_dict(), path)
    return clip, path


@pytest.fixture(scope="module")
def imported(open_clip_rn50, tmp_path_factory):
    out = tmp_path_factory.mktemp("imported") / "clip.pt"
    result = run_script("init.py", "--clip-model", "open_clip:RN50", "--clip-checkpoint", str(open_clip_rn50[1]),
                        "--save-path", str(out))
    assert result.returncode == 0, result.stderr
    return out


@pytest.mark.slow
def test_imported_clip_encodes_as_open_clip_does(open_clip_rn50, imported):
    import open_clip

    clip, _ = open_clip_rn50
    model, preprocess, tokenizer = load_checkpoint(str(imported))
    pixels = torch.randn(2, 3, 224, 224, generator=torch.Generator().manual_seed(1))
    texts = ["a photo of a dog", "两只猫在沙发上", "A BIG red circle, left of a small blue square!"]
    reference_tokens = open_clip.get_tokenizer("RN50")(texts)
    assert torch.equal(tokenizer(texts), reference_tokens)
    with torch.no_grad():
        ours_image, theirs_image = model.encode_image(pixels), clip.encode_image(pixels, normalize=True)
        ours_text, theirs_text = model.encode_text(reference_tokens), clip.encode_text(reference_tokens, normalize=True)
    assert (ours_image - theirs_image).abs().max() <= 1e-4
    assert (ours_text - theirs_text).abs().max() <= 1e-4
    assert model.scale().item() == pytest.approx(clip.logit_scale.exp().item())
    normalize = preprocess.transforms[-1]
    assert tuple(normalize.mean) == pytest.approx(CLIP_MEAN)  # CLIP's statistics, not ImageNet's


@pytest.mark.slow
def test_safetensors_and_ddp_wrapped_files_import_too(open_clip_rn50, tmp_path):
    from safetensors.torch import save_file

    clip, _ = open_clip_rn50
    state = {k: v.contiguous() for k, v in clip.state_dict().items()}
    save_file(state, str(tmp_path / "rn50.safetensors"))
    torch.save({"epoch": 3, "state_dict": {f"module.{k}": v for k, v in state.items()}}, tmp_path / "ddp.pt")
    for name in ("rn50.safetensors", "ddp.pt"):
        result = run_script("init.py", "--clip-model", "open_clip:RN50", "--clip-checkpoint", str(tmp_path / name),
                            "--save-path", str(tmp_path / f"{name}.out.pt"))
        assert result.returncode == 0, result.stderr
    a, b = (torch.load(tmp_path / f"{n}.out.pt", weights_only=True)["state_dict"] for n in ("rn50.safetensors",
                                                                                            "ddp.pt"))
    assert all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize("args, words", [
    (["--clip-model", "open_clip:RN50", "--clip-checkpoint", "nowhere.pt"], ["nowhere.pt", "not found"]),
    (["--clip-model", "open_clip:NoSuchNet", "--clip-checkpoint", "x.pt"], ["NoSuchNet", "list_models"]),
    (["--clip-model", "cn:RN50", "--clip-checkpoint", "x.pt"], ["open_clip:<name>", "chinese-clip:<name>"]),
    (["--clip-model", "chinese-clip:RN99", "--clip-checkpoint", "x.pt"], ["RN99", "ViT-B-16"]),
    (["--clip-model", "open_clip:RN50"], ["clip-checkpoint"]),
    (["--clip-model", "open_clip:ViT-B-16-SigLIP", "--clip-checkpoint", "x.pt"], ["plain CLIP"]),
    (["--clip-model", "hf:somewhere", "--clip-checkpoint", "x.pt"], ["not used with hf:"]),
])
@pytest.mark.slow
def test_bad_clip_arguments_are_one_line_errors(args, words, tmp_path):
    result = run_script("init.py", *args, "--save-path", str(tmp_path / "x.out.pt"))
    assert result.returncode == 2 and "Traceback" not in result.stderr
    for word in words:
        assert word in result.stderr


@pytest.mark.slow
def test_weights_of_another_model_are_refused(tmp_path):
    import open_clip

    torch.save(open_clip.create_model("RN101", pretrained=None).state_dict(), tmp_path / "rn101.pt")
    result = run_script("init.py", "--clip-model", "open_clip:RN50", "--clip-checkpoint", str(tmp_path / "rn101.pt"),
                        "--save-path", str(tmp_path / "x.pt"))
    assert result.returncode == 2 and "does not fit open_clip's 'RN50'" in result.stderr


@pytest.mark.slow
def test_imported_clip_works_with_eval(imported, tiny_dataset, tmp_path):
    import json

    result = run_script("eval.py", "--config", "configs/demo/eval.yaml", "--model-path", str(imported),
                        "--valid-data", str(tiny_dataset / "valid"), "--output", str(tmp_path / "r.json"),
                        "--num-workers", "0")
    assert result.returncode == 0, result.stderr
    assert json.loads((tmp_path / "r.json").read_text())["images"] == 16


@pytest.mark.slow
def test_imported_clip_indexes_searches_and_exports(imported, tiny_dataset, tmp_path):
    import json

    index = tmp_path / "index"
    result = run_script("index.py", "--model-path", str(imported), "--data", str(tiny_dataset / "valid"),
                        "--out", str(index))
    assert result.returncode == 0, result.stderr
    assert "No pretrained weights" not in result.stderr  # open_clip's random-init warning is not the user's
    found = run_script("search.py", "--index", str(index), "--text", "a red circle", "--json", "true")
    assert found.returncode == 0, found.stderr
    assert len(json.loads(found.stdout)["results"]) == 10
    exported = run_script("export.py", "--model-path", str(imported), "--out", str(tmp_path / "onnx"))
    assert exported.returncode == 0, exported.stderr
    parity = json.loads((tmp_path / "onnx" / "export.json").read_text())
    assert parity["image-max-abs-diff"] <= 1e-4 and parity["text-max-abs-diff"] <= 1e-4


def _features(output):
    """get_*_features returns a tensor (transformers 4) or an output whose pooler_output holds it (5)."""
    return torch.nn.functional.normalize(getattr(output, "pooler_output", output), dim=-1)


@pytest.mark.parametrize("model_type", ["chinese_clip", "clip"])
@pytest.mark.slow
def test_hugging_face_clip_directories_import_with_parity(model_type, tmp_path):
    directory = tmp_path / model_type
    directory.mkdir()
    reference, hf_tokenizer = write_hf_clip(directory, model_type)
    out = tmp_path / "imported.pt"
    result = run_script("init.py", "--clip-model", f"hf:{directory}", "--save-path", str(out))
    assert result.returncode == 0, result.stderr
    model, preprocess, tokenizer = load_checkpoint(str(out))
    pixels = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(2))
    context = 52 if model_type == "chinese_clip" else 77
    inputs = hf_tokenizer(TEXTS, padding=True, truncation=True, max_length=context, return_tensors="pt")
    assert torch.equal(tokenizer(TEXTS), inputs["input_ids"])
    with torch.no_grad():
        assert (model.encode_image(pixels) - _features(reference.get_image_features(pixel_values=pixels))
                ).abs().max() <= 1e-4
        theirs = _features(reference.get_text_features(input_ids=inputs["input_ids"],
                                                       attention_mask=inputs["attention_mask"]))
        assert (model.encode_text(inputs["input_ids"]) - theirs).abs().max() <= 1e-4
    assert tuple(preprocess.transforms[-1].mean) == (0.5, 0.5, 0.5)  # the directory's preprocessor config
    vision, text = model.image_backbone, model.text_tower
    check_layer_groups(model, "image", vision.vision_model.embeddings.patch_embedding.weight, vision.projection.weight)
    check_layer_groups(model, "text", text.text_model.embeddings.word_embeddings.weight if model_type ==
                       "chinese_clip" else text.text_model.embeddings.token_embedding.weight, text.projection.weight)


@pytest.mark.slow
def test_a_directory_that_is_no_clip_is_refused(tiny_text_tower, tmp_path):
    result = run_script("init.py", "--clip-model", f"hf:{tiny_text_tower}", "--save-path", str(tmp_path / "x.pt"))
    assert result.returncode == 2 and "roberta" in result.stderr and "ChineseCLIPModel" in result.stderr


@pytest.fixture(scope="module")
def chinese_clip_rn50(tmp_path_factory):
    """A Chinese-CLIP RN50 release file as cn_clip writes it: DDP-prefixed weights under "state_dict"."""
    import contextlib
    import io

    with contextlib.redirect_stdout(io.StringIO()):
        from cn_clip.clip.utils import create_model

        torch.manual_seed(0)
        clip = create_model("RN50@RBT3-chinese").float().eval()
    path = tmp_path_factory.mktemp("cnclip") / "clip_cn_rn50.pt"
    torch.save({"epoch": 1, "state_dict": {f"module.{k}": v for k, v in clip.state_dict().items()}}, path)
    return clip, path


@pytest.mark.slow
def test_chinese_clip_release_file_imports_with_parity(chinese_clip_rn50, tmp_path):
    from cn_clip.clip import tokenize

    clip, path = chinese_clip_rn50
    out = tmp_path / "cn.pt"
    result = run_script("init.py", "--clip-model", "chinese-clip:RN50", "--clip-checkpoint", str(path),
                        "--save-path", str(out))
    assert result.returncode == 0, result.stderr
    model, preprocess, tokenizer = load_checkpoint(str(out))
    theirs_ids = tokenize(TEXTS)  # padded to 52
    ours_ids = tokenizer(TEXTS)  # padded to the longest caption
    assert torch.equal(ours_ids, theirs_ids[:, :ours_ids.shape[1]]) and not theirs_ids[:, ours_ids.shape[1]:].any()
    pixels = torch.randn(2, 3, 224, 224, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        theirs_image = torch.nn.functional.normalize(clip.encode_image(pixels), dim=-1)
        theirs_text = torch.nn.functional.normalize(clip.encode_text(theirs_ids), dim=-1)
        assert (model.encode_image(pixels) - theirs_image).abs().max() <= 1e-4
        assert (model.encode_text(ours_ids) - theirs_text).abs().max() <= 1e-4
    assert model.scale().item() == pytest.approx(clip.logit_scale.exp().item())
    assert tuple(preprocess.transforms[-1].mean) == pytest.approx(CLIP_MEAN)
    text = model.text_tower
    check_layer_groups(model, "text", text.bert.embeddings.word_embeddings.weight, text.text_projection)


def check_layer_groups(model, side, first, last):
    """Every parameter of the tower in exactly one layer, ``first`` (an embedding) in the input-side layer and
    ``last`` (the projection) in the top one; layer decay and locking follow that order."""
    from training.optimizer import layer_lr_scales

    tower = model.image_backbone if side == "image" else model.text_tower
    layers = model.tower_layers()[0 if side == "image" else 1]
    members = [id(p) for layer in layers for p in layer.parameters()]
    assert sorted(members) == sorted(id(p) for p in tower.parameters()), "each parameter in one layer"
    assert id(first) in {id(p) for p in layers[0].parameters()} and id(last) in {id(p) for p in layers[-1].parameters()}
    scales = layer_lr_scales(model, 0.5)
    assert scales[id(first)] == 0.5 ** len(layers) and scales[id(last)] == 0.5
    model.lock(**{side: True, f"{side}_unlocked": 1})
    assert not first.requires_grad and last.requires_grad
    assert sum(p.requires_grad for p in tower.parameters()) == sum(1 for _ in layers[-1].parameters())
    model.lock()
    model.requires_grad_(True)


@pytest.mark.slow
def test_imported_towers_lock_and_decay_layer_by_layer(imported):
    model, _, _ = load_checkpoint(str(imported))
    assert "image tower locked" in model.lock(image=True)  # ModifiedResNet: every parameter in a layer
    assert not any(p.requires_grad for p in model.image_backbone.parameters())
    model.lock()
    model.requires_grad_(True)
    clip = model.text_tower.clip
    check_layer_groups(model, "text", clip.token_embedding.weight, clip.text_projection)


def test_open_clip_vit_image_tower_decays_from_its_patch_embedding():
    import open_clip

    from models.model import ContrastiveModel
    from models.open_clip_tower import split_clip

    clip = open_clip.model.CLIP(embed_dim=16, vision_cfg={"layers": 2, "width": 32, "patch_size": 8,
                                                          "image_size": 32, "head_width": 16},
                                text_cfg={"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 2,
                                          "layers": 2})
    visual, dim, text, _ = split_clip(clip)
    model = ContrastiveModel(visual, dim, text, 0)
    check_layer_groups(model, "image", visual.conv1.weight, visual.proj)
    check_layer_groups(model, "text", clip.token_embedding.weight, clip.text_projection)


@pytest.mark.slow
def test_training_keeps_the_imported_logit_scale(imported):
    from models.loss import INFONCE
    from training.loop import _prepare_model

    from models.spec import ModelSpec

    model, spec = load_checkpoint(str(imported))[0], ModelSpec.from_dict(read_spec(imported))
    before = model.scale().item()
    config = {"temperature": 0.07, "learn-temperature": True, "lock-image": False, "lock-image-unlocked": 0,
              "lock-text": False, "lock-text-unlocked": 0, "grad-checkpointing": False, "channels-last": False}
    _prepare_model(model, spec, config, torch.device("cpu"), None, INFONCE)
    assert model.scale().item() == pytest.approx(before) and model.logit_scale.requires_grad


def read_spec(path):
    return torch.load(path, weights_only=True)["spec"]


@pytest.mark.slow
def test_a_half_precision_hugging_face_directory_imports_in_float32(tmp_path):
    directory = tmp_path / "half"
    directory.mkdir()
    reference, _ = write_hf_clip(directory, "chinese_clip")
    reference.half().save_pretrained(str(directory))
    out = tmp_path / "half.pt"
    result = run_script("init.py", "--clip-model", f"hf:{directory}", "--save-path", str(out))
    assert result.returncode == 0, result.stderr
    model, _, _ = load_checkpoint(str(out))
    assert all(p.dtype == torch.float32 for p in model.parameters())
    pixels = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        expected = _features(reference.float().get_image_features(pixel_values=pixels))
        assert (model.encode_image(pixels) - expected).abs().max() <= 1e-4


def _torchscript_archive(state, path):
    """A TorchScript archive holding ``state`` in half precision, with the three size entries OpenAI's
    archives store beside the weights (as torch.jit.load sees OpenAI's RN50.pt)."""

    class Holder(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x

    root = Holder()
    entries = {**{k: v.half() if v.is_floating_point() else v for k, v in state.items()},
               "input_resolution": torch.tensor(224), "context_length": torch.tensor(77),
               "vocab_size": torch.tensor(49408)}
    for name, tensor in entries.items():
        *parents, leaf = name.split(".")
        module = root
        for part in parents:
            if part not in module._modules:
                module.add_module(part, Holder())
            module = module._modules[part]
        module.register_buffer(leaf, tensor.clone())
    torch.jit.save(torch.jit.script(root), str(path))


@pytest.mark.slow
def test_openai_torchscript_archives_are_read_only_when_asked(open_clip_rn50, tmp_path):
    clip, _ = open_clip_rn50
    archive = tmp_path / "RN50.pt"
    _torchscript_archive(clip.state_dict(), archive)
    out = tmp_path / "from-jit.pt"
    refused = run_script("init.py", "--clip-model", "open_clip:RN50-quickgelu", "--clip-checkpoint", str(archive),
                         "--save-path", str(out))
    assert refused.returncode == 2 and "clip-torchscript" in refused.stderr and not out.exists()
    gelu = run_script("init.py", "--clip-model", "open_clip:RN50", "--clip-checkpoint", str(archive),
                      "--clip-torchscript", "true", "--save-path", str(out))
    assert gelu.returncode == 2 and "-quickgelu" in gelu.stderr and not out.exists()  # OpenAI's activation
    result = run_script("init.py", "--clip-model", "open_clip:RN50-quickgelu", "--clip-checkpoint", str(archive),
                        "--clip-torchscript", "true", "--save-path", str(out))
    assert result.returncode == 0, result.stderr
    state = torch.load(out, weights_only=True)["state_dict"]  # the kit's own checkpoint: weights only
    assert torch.equal(state["image_backbone.conv1.weight"], clip.visual.conv1.weight.detach().half().float())
    assert torch.equal(state["text_tower.clip.token_embedding.weight"],
                       clip.token_embedding.weight.detach().half().float())
    wrong = run_script("init.py", "--clip-model", "chinese-clip:RN50", "--clip-checkpoint", str(archive),
                       "--clip-torchscript", "true", "--save-path", str(out), "--overwrite", "true")
    assert wrong.returncode == 2 and "open_clip" in wrong.stderr and "Traceback" not in wrong.stderr
