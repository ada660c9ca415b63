import torch
from PIL import Image

from data.transforms import augmentation_policy, train_transform


def test_auto_turns_off_flip_for_left_right_and_jitter_for_colors():
    flip, color, _ = augmentation_policy(["a dog to the left of a cat"], "auto", "auto")
    assert (flip, color) == (False, True)
    flip, color, _ = augmentation_policy(["a red bus on a street"], "auto", "auto")
    assert (flip, color) == (True, False)
    flip, _, notice = augmentation_policy(["a stop sign by the road", "a bus"], "auto", "auto")
    assert not flip and "captions mention letters or text" in notice  # mirrored writing is no longer that text
    assert not augmentation_policy(["黄色背景上的字母K"], "auto", "auto")[0]
    flip, color, _ = augmentation_policy(["左边有一只红色的猫"], "auto", "auto")
    assert (flip, color) == (False, False)
    flip, color, _ = augmentation_policy(["a bright day", "copyright notice"], "auto", "auto")
    assert (flip, color) == (True, True)  # whole words only: "bright" is no "right"


def test_explicit_settings_win():
    assert augmentation_policy(["a red car on the left"], "on", "on")[:2] == (True, True)
    assert augmentation_policy(["a car"], "off", "off")[:2] == (False, False)


def test_train_transform_output_shape_and_normalisation():
    torch.manual_seed(0)
    image = Image.new("RGB", (80, 40), (255, 255, 255))
    tensor = train_transform(24, 0.5, flip=True, color=True)(image)
    assert tensor.shape == (3, 24, 24)
    assert tensor.max() > 1.5  # white after ImageNet normalisation is about 2.2-2.6


def test_fast_jpeg_path_matches_the_plain_path(tmp_path):
    """Reduced-size JPEG decoding + tensor resize: same shape, dtype and range, pixels close to the plain
    full-size decode + PIL bicubic resize."""
    import numpy as np

    from data.image_file import open_image_rgb
    from data.transforms import eval_transform

    rng = np.random.default_rng(0)
    # A smooth photo-like 640x640 image: random low-frequency color field.
    small = rng.integers(0, 255, (8, 8, 3), dtype=np.uint8)
    Image.fromarray(small).resize((640, 640), Image.BICUBIC).save(tmp_path / "photo.jpg", quality=90)
    full = open_image_rgb(str(tmp_path / "photo.jpg"))
    drafted = open_image_rgb(str(tmp_path / "photo.jpg"), draft_size=96)
    assert full.size == (640, 640) and 96 <= drafted.size[0] < 640  # decoded at a reduced scale

    plain = eval_transform(96)(full)
    torch.manual_seed(0)
    fast = train_transform(96, 1.0, flip=False, color=False)(drafted)  # scale 1: the whole image
    assert fast.shape == plain.shape and fast.dtype == plain.dtype == torch.float32
    assert abs(fast.min() - plain.min()) < 0.3 and abs(fast.max() - plain.max()) < 0.3
    assert (fast - plain).abs().mean() < 0.05


def test_british_spelling_of_colourful_also_turns_off_jitter():
    _, color, _ = augmentation_policy(["a colourful kite over the sea"], "auto", "auto")
    assert color is False
