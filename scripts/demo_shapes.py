"""The demo's generated domain: 2 or 3 colored shapes on a light background, each with a size, a color, a
shape and a cell of a 3x3 grid; captions name them and their places or relations, in English or Chinese.
"""
import re

from PIL import Image, ImageDraw

COLORS = {
    "red": (220, 30, 30), "green": (30, 160, 50), "blue": (30, 60, 220), "yellow": (235, 205, 20),
    "purple": (140, 40, 170), "orange": (245, 130, 20), "black": (20, 20, 20), "cyan": (30, 200, 210),
}
SHAPES = ("circle", "square", "triangle", "cross")
SIZES = ("small", "large")
GRID = 3
ROW_NAMES = ("top", "middle", "bottom")
COL_NAMES = ("left", "center", "right")
SIZE_WORDS = {"small": ("small", "little"), "large": ("large", "big")}


def sample_scene(rng):
    """A scene: 2 or 3 objects, each (size, color, shape, row, col), in distinct grid cells."""
    count = rng.choice((2, 2, 3))
    cells = rng.sample([(r, c) for r in range(GRID) for c in range(GRID)], count)
    return tuple(sorted((rng.choice(SIZES), rng.choice(list(COLORS)), rng.choice(SHAPES), row, col)
                        for row, col in cells))


def draw_scene(scene, image_size, rng):
    """Render a scene to an RGB PIL image of image_size x image_size."""
    tone = rng.randint(225, 250)
    image = Image.new("RGB", (image_size, image_size), (tone, tone, rng.randint(215, 250)))
    draw = ImageDraw.Draw(image)
    cell = image_size / GRID
    for size, color, shape, row, col in scene:
        radius = cell * (0.44 if size == "large" else 0.26)
        jitter = cell * 0.5 - radius
        cx = (col + 0.5) * cell + rng.uniform(-jitter, jitter) * 0.5
        cy = (row + 0.5) * cell + rng.uniform(-jitter, jitter) * 0.5
        fill = tuple(max(0, min(255, v + rng.randint(-15, 15))) for v in COLORS[color])
        box = (cx - radius, cy - radius, cx + radius, cy + radius)
        if shape == "circle":
            draw.ellipse(box, fill=fill)
        elif shape == "square":
            draw.rectangle(box, fill=fill)
        elif shape == "triangle":
            draw.polygon([(cx, cy - radius), (cx - radius, cy + radius), (cx + radius, cy + radius)], fill=fill)
        else:
            arm = radius * 0.38
            draw.rectangle((cx - radius, cy - arm, cx + radius, cy + arm), fill=fill)
            draw.rectangle((cx - arm, cy - radius, cx + arm, cy + radius), fill=fill)
    return image


def _place(row, col):
    if (row, col) == (1, 1):
        return "in the center"
    if row == 1:
        return f"on the {COL_NAMES[col]}"
    if col == 1:
        return f"at the {ROW_NAMES[row]}"
    return f"in the {ROW_NAMES[row]} {COL_NAMES[col]}"


def _relation(a, b):
    """How object a stands to object b: 'left of', 'right of', 'above' or 'below'."""
    if a[4] != b[4]:
        return "left of" if a[4] < b[4] else "right of"
    return "above" if a[3] < b[3] else "below"


def distinct_captions(frames, rng, count):
    """Up to ``count`` distinct captions: each frame once in order, then random frames (whose random word
    choices may still give new paraphrases), for at most 100 tries."""
    captions, attempts = [], 0
    while len(captions) < count and attempts < 100:
        caption = frames[len(captions) % len(frames) if attempts < len(frames) else rng.randrange(len(frames))]()
        attempts += 1
        if caption not in captions:
            captions.append(caption)
    return captions


def english_captions(scene, rng, count):
    """``count`` distinct paraphrases; the first few name every object's size, color, shape and place."""
    objects = list(scene)
    rng.shuffle(objects)

    def name(obj, with_size=True):
        size = rng.choice(SIZE_WORDS[obj[0]])
        return f"{size} {obj[1]} {obj[2]}" if with_size else f"{obj[1]} {obj[2]}"

    def article(phrase):
        return ("an " if phrase[0] in "aeiou" else "a ") + phrase

    def listing(parts):
        return parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " and " + parts[-1]

    first, second, rest = objects[0], objects[1], objects[2:]
    extra = "".join(f", and {article(name(o))} {_place(o[3], o[4])}" for o in rest)
    frames = [
        lambda: listing([f"{article(name(o))} {_place(o[3], o[4])}" for o in objects]),
        lambda: f"{article(name(first))} {_relation(first, second)} {article(name(second))}{extra}",
        lambda: f"{article(name(second))} {_relation(second, first)} {article(name(first))}{extra}",
        lambda: "there is " + listing([f"{article(name(o))} {_place(o[3], o[4])}" for o in reversed(objects)]),
        lambda: f"a picture of {listing([article(name(o)) for o in objects])}",
        lambda: listing([name(o, with_size=False) + " " + _place(o[3], o[4]).split(" ", 2)[-1] for o in objects]),
        lambda: f"{len(objects)} shapes: " + listing([name(o) for o in objects]),
    ]
    return distinct_captions(frames, rng, count)


ZH_COLORS = {"red": "红色", "green": "绿色", "blue": "蓝色", "yellow": "黄色", "purple": "紫色", "orange": "橙色",
              "black": "黑色", "cyan": "青色"}
ZH_SHAPES = {"circle": "圆形", "square": "正方形", "triangle": "三角形", "cross": "十字"}
ZH_SIZES = {"small": ("小的", "小"), "large": ("大的", "大")}
ZH_PLACES = {(0, 0): "左上角", (0, 1): "上方", (0, 2): "右上角", (1, 0): "左边", (1, 1): "中间", (1, 2): "右边",
             (2, 0): "左下角", (2, 1): "下方", (2, 2): "右下角"}
ZH_RELATIONS = {"left of": "左边", "right of": "右边", "above": "上方", "below": "下方"}


def chinese_captions(scene, rng, count):
    """``count`` distinct natural Chinese paraphrases (same information as the English ones)."""
    objects = list(scene)
    rng.shuffle(objects)

    def name(obj, with_size=True):
        size = rng.choice(ZH_SIZES[obj[0]]) if with_size else ""
        return f"{size}{ZH_COLORS[obj[1]]}{ZH_SHAPES[obj[2]]}"

    def place(obj):
        return ZH_PLACES[obj[3], obj[4]]

    def listing(parts, last="和"):
        return parts[0] if len(parts) == 1 else "、".join(parts[:-1]) + last + parts[-1]

    first, second, rest = objects[0], objects[1], objects[2:]
    extra = "".join(f"，{place(o)}还有一个{name(o)}" for o in rest)
    frames = [
        lambda: "，".join(f"{place(o)}有一个{name(o)}" for o in objects),
        lambda: f"一个{name(first)}在一个{name(second)}的{ZH_RELATIONS[_relation(first, second)]}{extra}",
        lambda: f"一个{name(second)}在一个{name(first)}的{ZH_RELATIONS[_relation(second, first)]}{extra}",
        lambda: "图中，" + "，".join(f"{name(o)}位于{place(o)}" for o in reversed(objects)),
        lambda: f"一张包含{listing([name(o) for o in objects])}的图片",
        lambda: "，".join(f"{name(o, with_size=False)}在{place(o)}" for o in objects),
        lambda: f"{len(objects)}个图形：" + listing([name(o) for o in objects]),
    ]
    return distinct_captions(frames, rng, count)


CAPTIONERS = {"en": english_captions, "zh": chinese_captions}


SWAPS = ("color", "shape", "size", "position")
# A position swap's caption pair differs either in where an object is ("on the left" / "in the top right": the
# same words, other objects) or, in a relation frame, in how one stands to another ("left of" / "right of"):
# negatives.csv labels them position/places and position/relation, and eval.py reports both beside position.
RELATION_WORDS = {"en": re.compile(r"\b(left of|right of|above|below)\b"),
                  "zh": re.compile("的(" + "|".join(ZH_RELATIONS.values()) + ")")}


def swap_label(kind, caption, lang="en"):
    """negatives.csv's label of a swapped caption pair: the kind, position split by the caption's frame."""
    if kind != "position":
        return kind
    return "position/relation" if RELATION_WORDS[lang].search(caption) else "position/places"


def swapped_scene(scene, rng):
    """(kind, scene) with two objects' colors, shapes, sizes or places exchanged (NegCLIP-style: the same
    words, other bindings), objects kept in their order so that captioners given the same random state write
    parallel captions. Exchanging two objects' places always changes the scene (they sit in different
    cells), so there is always a swap."""
    objects = list(scene)
    a, b = rng.sample(range(len(objects)), 2)
    fields = {"size": 0, "color": 1, "shape": 2}
    options = [kind for kind in SWAPS if kind == "position" or objects[a][fields[kind]] != objects[b][fields[kind]]]
    kind = rng.choice(options)
    first, second = list(objects[a]), list(objects[b])
    if kind == "position":
        first[3:], second[3:] = second[3:], first[3:]
    else:
        first[fields[kind]], second[fields[kind]] = second[fields[kind]], first[fields[kind]]
    objects[a], objects[b] = tuple(first), tuple(second)
    return kind, tuple(objects)


def binding_facts(scene):
    """The scene's pairings of two properties of one object (size, color, shape, cell), e.g. "red circle",
    "large cell02": what a bag of words holds no trace of (evaluation.binding_probe)."""
    facts = set()
    for size, color, shape, row, col in scene:
        properties = (size, color, shape, f"cell{row}{col}")
        facts.update(f"{a} {b}" for i, a in enumerate(properties) for b in properties[i + 1:])
    return sorted(facts)


def relation_facts(scene):
    """How each object stands to each other one, named by its color and shape ("red circle left of"): what a
    relation caption binds, which no single object's facts hold (scripts/probe_binding.py --facts relations)."""
    return sorted({f"{a[1]} {a[2]} {_relation(a, b)}" for a in scene for b in scene if a != b})


def easy_cue(scene):
    """What a model can match without the shapes, sizes or places: which colors appear."""
    return " ".join(sorted({obj[1] for obj in scene}))
