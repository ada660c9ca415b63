"""The second generated domain: one letter per image, in a color and a style on a colored background.

Different in kind from the shapes demo (a character to read rather than shapes to place), with an easy cue
(the two colors) and a hard one (which letter, in which style). Drawn with the font Pillow ships, so the
images are the same on every machine.
"""
import string

from PIL import Image, ImageDraw, ImageFont

from scripts.demo_shapes import COLORS, distinct_captions

BACKGROUNDS = {**COLORS, "white": (245, 245, 245), "gray": (150, 150, 150)}
LETTERS = string.ascii_uppercase
STYLES = ("plain", "bold", "outlined", "slanted")
STYLE_WORDS = {"plain": ("plain", "regular"), "bold": ("bold", "heavy"), "outlined": ("outlined", "hollow"),
               "slanted": ("slanted", "italic")}
SIZES = ("small", "large")
SIZE_WORDS = {"small": ("small", "little"), "large": ("large", "big")}


def sample_scene(rng):
    """A scene: (letter, style, size, color, background), the background never the letter's color."""
    color = rng.choice(list(COLORS))
    background = rng.choice([name for name in BACKGROUNDS if name != color])
    return rng.choice(LETTERS), rng.choice(STYLES), rng.choice(SIZES), color, background


def _jitter(rgb, rng, amount=15):
    return tuple(max(0, min(255, v + rng.randint(-amount, amount))) for v in rgb)


def draw_scene(scene, image_size, rng):
    """Render a glyph scene to an RGB PIL image of image_size x image_size."""
    letter, style, size, color, background = scene
    ground, ink = _jitter(BACKGROUNDS[background], rng), _jitter(COLORS[color], rng)
    pixels = max(8, round(image_size * (0.78 if size == "large" else 0.45)))
    font = ImageFont.load_default(size=pixels)
    stroke = max(1, pixels // 12)
    layer = Image.new("L", (image_size, image_size), 0)
    slack = (image_size - pixels) / 2 * 0.6
    center = (image_size / 2 + rng.uniform(-slack, slack), image_size / 2 + rng.uniform(-slack, slack))
    draw = ImageDraw.Draw(layer)
    if style == "outlined":
        draw.text(center, letter, font=font, anchor="mm", fill=255, stroke_width=stroke, stroke_fill=255)
        draw.text(center, letter, font=font, anchor="mm", fill=0)
    else:
        draw.text(center, letter, font=font, anchor="mm", fill=255,
                  stroke_width=stroke if style == "bold" else 0, stroke_fill=255)
    if style == "slanted":
        # shear about the glyph's center so it stays in place
        layer = layer.transform(layer.size, Image.Transform.AFFINE, (1, 0.35, -0.35 * center[1], 0, 1, 0),
                                resample=Image.Resampling.BILINEAR)
    image = Image.new("RGB", (image_size, image_size), ground)
    image.paste(Image.new("RGB", image.size, ink), mask=layer)
    return image


def english_captions(scene, rng, count):
    """``count`` distinct paraphrases, each naming the letter, its style, size and color, and the background."""
    letter, style, size, color, background = scene
    on_ground = ("an " if background[0] in "aeiou" else "a ") + background

    def words():
        return rng.choice(SIZE_WORDS[size]), rng.choice(STYLE_WORDS[style])

    def frame(make):
        return lambda: make(*words())

    frames = [
        frame(lambda sz, st: f"a {sz} {st} {color} letter {letter} on {on_ground} background"),
        frame(lambda sz, st: f"the letter {letter} in {st} {color} on {background}, {sz}"),
        frame(lambda sz, st: f"{on_ground} background with a {sz} {st} {color} {letter}"),
        frame(lambda sz, st: f"{sz} capital {letter} written in {st} {color} type over {background}"),
        frame(lambda sz, st: f"{color} {letter}, {st} and {sz}, on {background}"),
        frame(lambda sz, st: f"a {sz} {letter} printed {st} in {color} on {background} paper"),
    ]
    return distinct_captions(frames, rng, count)


ZH_COLORS = {"red": "红色", "green": "绿色", "blue": "蓝色", "yellow": "黄色", "purple": "紫色", "orange": "橙色",
             "black": "黑色", "cyan": "青色", "white": "白色", "gray": "灰色"}
ZH_STYLES = {"plain": ("常规", "普通"), "bold": ("粗体", "加粗"), "outlined": ("空心", "描边"), "slanted": ("斜体", "倾斜")}
ZH_SIZES = {"small": ("小", "较小"), "large": ("大", "较大")}


def chinese_captions(scene, rng, count):
    """``count`` distinct Chinese paraphrases (same information as the English ones)."""
    letter, style, size, color, background = scene
    ink, ground = ZH_COLORS[color], ZH_COLORS[background]

    def frame(make):
        return lambda: make(rng.choice(ZH_SIZES[size]), rng.choice(ZH_STYLES[style]))

    frames = [
        frame(lambda sz, st: f"{ground}背景上一个{sz}的{st}{ink}字母{letter}"),
        frame(lambda sz, st: f"字母{letter}，{ink}，{st}，{sz}，背景是{ground}"),
        frame(lambda sz, st: f"{ground}底色上写着{sz}{st}的{ink}{letter}"),
        frame(lambda sz, st: f"一个{st}{ink}大写字母{letter}（{sz}），位于{ground}背景上"),
        frame(lambda sz, st: f"{ink}{st}的{letter}，{ground}背景，字号{sz}"),
    ]
    return distinct_captions(frames, rng, count)


CAPTIONERS = {"en": english_captions, "zh": chinese_captions}


def easy_cue(scene):
    """What a model can match without reading the letter: the ink and background colors."""
    return f"{scene[3]} on {scene[4]}"
