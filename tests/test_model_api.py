"""The open_clip-style public API, driven the way CLIP tooling drives it."""
import torch
from PIL import Image

from data.caption_table import read_caption_table
from data.transforms import eval_transform
from evaluation.embedding import evaluate_table
from models import load_checkpoint
from utils.device import resolve_device


def test_load_checkpoint_gives_model_preprocess_and_tokenizer(tiny_checkpoint):
    model, preprocess, tokenizer = load_checkpoint(str(tiny_checkpoint))
    image = preprocess(Image.new("RGB", (50, 30), (255, 0, 0)))
    assert image.shape == (3, 32, 32) and image.dtype == torch.float32
    ids = tokenizer(["a big red circle", "a small blue square left of a large green cross in the center"])
    assert ids.dtype == torch.long and ids.shape[0] == 2 and ids.shape[1] <= 32
    with torch.no_grad():
        image_features = model.encode_image(image.unsqueeze(0))
        text_features = model.encode_text(ids)
        both = model(image.unsqueeze(0).repeat(2, 1, 1, 1), ids)
    assert image_features.shape == (1, 32) and text_features.shape == (2, 32)
    assert torch.allclose(text_features.norm(dim=-1), torch.ones(2), atol=1e-5)
    assert torch.allclose(both[1], text_features, atol=1e-6)
    assert abs(both[2].item() - 1 / 0.07) < 1e-3


def test_tokenizer_truncates_to_max_length(tiny_checkpoint):
    _, _, tokenizer = load_checkpoint(str(tiny_checkpoint))
    assert tokenizer(["circle " * 200]).shape == (1, 32)


def test_padding_does_not_change_a_caption_embedding(tiny_checkpoint):
    model, _, tokenizer = load_checkpoint(str(tiny_checkpoint))
    alone = tokenizer(["a red circle"])
    padded = tokenizer(["a red circle", "a small blue square left of a large green cross at the bottom"])
    assert padded.shape[1] > alone.shape[1]
    with torch.no_grad():
        assert torch.allclose(model.encode_text(alone)[0], model.encode_text(padded)[0], atol=1e-5)


def test_clip_benchmark_driving_our_model_gives_our_numbers(tiny_checkpoint, tiny_dataset):
    from clip_benchmark.metrics.zeroshot_retrieval import evaluate

    model, preprocess, tokenizer = load_checkpoint(str(tiny_checkpoint))
    table = read_caption_table(str(tiny_dataset / "valid"))
    images = [preprocess(Image.open(record.path).convert("RGB")) for record in table.images]
    batches = [(torch.stack(images[i:i + 5]), [record.captions for record in table.images[i:i + 5]])
               for i in range(0, len(images), 5)]
    theirs = evaluate(model, batches, tokenizer, "cpu", amp=False, recall_k_list=[1, 5, 10])
    ours = evaluate_table(model, tokenizer, table, eval_transform(32), 7, 0, resolve_device("cpu"), None)
    for k in (1, 5, 10):
        assert abs(ours[f"i2t_r{k}"] - theirs[f"text_retrieval_recall@{k}"]) < 1e-6
        assert abs(ours[f"t2i_r{k}"] - theirs[f"image_retrieval_recall@{k}"]) < 1e-6
    assert ours["images"] == 16 and ours["captions"] == 80


def test_preprocess_accepts_any_pil_mode_and_applies_exif(tiny_checkpoint):
    import numpy as np

    _, preprocess, _ = load_checkpoint(str(tiny_checkpoint))
    for image in (Image.new("L", (40, 30), 100), Image.new("RGBA", (40, 30), (0, 0, 0, 0)),
                  Image.new("CMYK", (40, 30)), Image.new("P", (40, 30)),
                  Image.fromarray(np.full((30, 40), 60000, dtype=np.uint16))):
        assert preprocess(image).shape == (3, 32, 32), image.mode
    left_red = Image.new("RGB", (64, 32), (0, 0, 255))
    left_red.paste((255, 0, 0), (0, 0, 32, 32))
    exif = Image.Exif()
    exif[0x0112] = 6  # displayed rotated 90 degrees clockwise: red ends up on top
    import io
    buffer = io.BytesIO()
    left_red.save(buffer, format="JPEG", exif=exif)
    rotated = preprocess(Image.open(io.BytesIO(buffer.getvalue())))
    assert rotated[0, :8].mean() > rotated[0, -8:].mean() + 1.0


def test_max_length_beyond_the_text_model_positions_is_refused(tiny_text_tower):
    import pytest

    from models.factory import model_from_towers
    from utils.errors import UserError

    with pytest.raises(UserError, match="max-length 40 exceeds"):
        model_from_towers("resnet18", str(tiny_text_tower), pretrained=False, max_length=40)


def test_logit_scale_is_clamped_at_100_as_a_parameter(tiny_checkpoint):

    model, _, _ = load_checkpoint(str(tiny_checkpoint))
    with torch.no_grad():
        model.logit_scale.fill_(9.0)
    model.clamp_logit_scale()
    assert abs(model.scale().item() - 100.0) < 1e-3
