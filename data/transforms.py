"""Image transforms: the evaluation ``preprocess`` and the caption-safe training augmentation."""
import re

import torch
from torchvision import transforms as T
from torchvision.transforms import v2

from data.image_file import prepare_rgb

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

COLOR_WORDS = {
    "red", "green", "blue", "yellow", "orange", "purple", "violet", "pink", "brown", "black", "white", "gray",
    "grey", "cyan", "magenta", "teal", "beige", "golden", "silver", "maroon", "navy", "turquoise", "colorful",
    "colourful", "blond", "blonde",
}
CHINESE_COLORS = "红绿蓝黄橙紫粉棕褐黑白灰青金银彩"
SIDE_WORDS = {"left", "right", "leftmost", "rightmost"}
CHINESE_SIDES = "左右"
# A mirrored image of writing no longer shows what its caption names (an "R" flipped is no R).
TEXT_WORDS = {"letter", "letters", "text", "written", "writing", "word", "words", "sign", "logo", "digit", "digits"}
CHINESE_TEXT = "字"
_WORD = re.compile(r"[a-z]+")


class LimitAspect:
    """Centre-crop a PIL image so that long side / short side <= max_ratio.

    Keeps resizing cheap and bounded for extremely wide or tall images; with max_ratio=1 it is the
    square centre crop that Resize-shorter-side + CenterCrop would take anyway.
    """

    def __init__(self, max_ratio):
        self.max_ratio = max_ratio

    def __call__(self, image):
        width, height = image.size
        if width > height * self.max_ratio:
            new = max(1, round(height * self.max_ratio))
            left = (width - new) // 2
            return image.crop((left, 0, left + new, height))
        if height > width * self.max_ratio:
            new = max(1, round(width * self.max_ratio))
            top = (height - new) // 2
            return image.crop((0, top, width, top + new))
        return image


class ToRGB:
    """Any PIL image -> RGB, EXIF orientation applied (a no-op for images from ``open_image_rgb``)."""

    def __call__(self, image):
        return prepare_rgb(image)


def normalization(spec):
    """(mean, std) a checkpoint's image tower expects: ImageNet's, unless the spec names others (a CLIP's)."""
    return spec.image_mean or IMAGENET_MEAN, spec.image_std or IMAGENET_STD


def preprocess_for(spec):
    """The evaluation transform of a checkpoint's spec: its image size and normalisation."""
    return eval_transform(spec.image_size, *normalization(spec))


def eval_transform(image_size, mean=IMAGENET_MEAN, std=IMAGENET_STD):
    """PIL image (any mode) -> FloatTensor[3, image_size, image_size], normalised (ImageNet's by default)."""
    return T.Compose([
        ToRGB(),
        LimitAspect(1.0),
        T.Resize((image_size, image_size), interpolation=T.InterpolationMode.BICUBIC, antialias=True),
        T.ToTensor(),
        T.Normalize(mean, std),
    ])


def train_transform(image_size, crop_scale, flip, color, mean=IMAGENET_MEAN, std=IMAGENET_STD):
    """PIL image -> FloatTensor[3, image_size, image_size]: random resized crop, plus horizontal flip and
    color jitter when the captions allow them.

    Works on uint8 tensors after one PIL->tensor copy: the crop and the single resize run in torchvision's
    vectorised uint8 kernels, and float conversion happens once, on the small output.
    """
    steps = [
        ToRGB(),
        LimitAspect(2.0),
        v2.PILToTensor(),
        v2.RandomResizedCrop(image_size, scale=(crop_scale, 1.0), interpolation=v2.InterpolationMode.BILINEAR,
                             antialias=True),
    ]
    if flip:
        steps.append(v2.RandomHorizontalFlip())
    if color:
        steps.append(v2.ColorJitter(brightness=0.3, contrast=0.3, saturation=0.3))
    steps += [v2.ToDtype(torch.float32, scale=True), v2.Normalize(mean, std)]
    return v2.Compose(steps)


def captions_mention(captions, words, characters):
    """True if any caption contains one of ``words`` (English, whole words) or ``characters`` (Chinese)."""
    for caption in captions:
        lowered = caption.lower()
        if any(ch in lowered for ch in characters) or not words.isdisjoint(_WORD.findall(lowered)):
            return True
    return False


def augmentation_policy(captions, flip_setting, color_setting):
    """Decide (flip, color) from the settings ("auto"/"on"/"off") and the captions; also a notice line.

    auto: flipping is off if captions say left/right or mention letters or text; color jitter is off if
    captions name colors.
    """
    decisions, notes = {}, []
    for name, setting, checks in (
        ("flip", flip_setting, ((SIDE_WORDS, CHINESE_SIDES, "captions say left/right"),
                                (TEXT_WORDS, CHINESE_TEXT, "captions mention letters or text"))),
        ("color", color_setting, ((COLOR_WORDS, CHINESE_COLORS, "captions name colors"),)),
    ):
        if setting == "auto":
            reason = next((why for words, chars, why in checks if captions_mention(captions, words, chars)), None)
            decisions[name] = reason is None
            notes.append(f"{name} {'off' if reason else 'on'} ({reason or 'auto'})")
        else:
            decisions[name] = setting == "on"
            notes.append(f"{name} {setting}")
    return decisions["flip"], decisions["color"], "augmentation: random crop, " + ", ".join(notes)
