import torch
from PIL import Image

from data.transforms import augmentation_policy, train_transform


def test_auto_turns_off_flip_for_left_right_and_jitter_for_colours():
    flip, colour, _ = augmentation_policy(["a dog to the left of a cat"], "auto", "auto")
    assert (flip, colour) == (False, True)
    flip, colour, _ = augmentation_policy(["a red bus on a street"], "auto", "auto")
    assert (flip, colour) == (True, False)
    flip, colour, _ = augmentation_policy(["左边有一只红色的猫"], "auto", "auto")
    assert (flip, colour) == (False, False)
    flip, colour, _ = augmentation_policy(["a bright day", "copyright notice"], "auto", "auto")
    assert (flip, colour) == (True, True)  # whole words only: "bright" is no "right"


def test_explicit_settings_win():
    assert augmentation_policy(["a red car on the left"], "on", "on")[:2] == (True, True)
    assert augmentation_policy(["a car"], "off", "off")[:2] == (False, False)


def test_train_transform_output_shape_and_normalisation():
    torch.manual_seed(0)
    image = Image.new("RGB", (80, 40), (255, 255, 255))
    tensor = train_transform(24, 0.5, flip=True, colour=True)(image)
    assert tensor.shape == (3, 24, 24)
    assert tensor.max() > 1.5  # white after ImageNet normalisation is about 2.2-2.6
