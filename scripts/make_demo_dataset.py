"""Generate a demo dataset: procedural images with paraphrased captions, in one of two kinds.

--kind shapes (the demo): 2 or 3 colored shapes placed on a 3x3 grid (scripts/demo_shapes.py).
--kind glyphs: one letter in a color and a style on a colored background (scripts/demo_glyphs.py).

Writes OUT/train and OUT/valid in the datasets format (images/ + captions.csv). Every scene occurs once
across both splits, so captions that describe a scene fully single out one image. Deterministic for a given
--seed. --twins (shapes) adds, beside each training image, its twin with two objects' attributes or places
exchanged (a scene used nowhere else) and a groups.csv pairing them, for ``batching: groups``.

    python scripts/make_demo_dataset.py --out datasets/demo --train 5000 --valid 1000
"""
import argparse
import csv
import json
import os
import random
import sys

from scripts import demo_glyphs, demo_shapes

KINDS = {"shapes": demo_shapes, "glyphs": demo_glyphs}


def write_split(directory, scenes, image_size, captions_per_image, rng, lang="en", kind=demo_shapes, seed=0,
                twins=None):
    """Images, captions.csv and, for kinds that can swap (shapes), negatives.csv: for each caption, the same
    caption of the scene with two objects' attributes or places exchanged (a compositional negative), and
    scenes.jsonl: each image's binding and relation facts and those of its swapped scene
    (scripts/probe_binding.py). The negatives draw from their own random streams: images and captions are the
    same with or without them.

    twins (shapes): a set of the scenes already used elsewhere; each scene's swapped scene, unless used, is
    written too, as INDEX-twin.png with the parallel captions (its negatives are the first image's captions),
    and groups.csv pairs the two for ``batching: groups``."""
    images_dir = os.path.join(directory, "images")
    os.makedirs(images_dir, exist_ok=True)
    rows, negatives, facts, groups = [], [], [], []
    cues = [(f"{index:06d}.png", kind.easy_cue(scene)) for index, scene in enumerate(scenes)]
    swaps = hasattr(kind, "swapped_scene")
    for index, scene in enumerate(scenes):
        filename = f"{index:06d}.png"
        kind.draw_scene(scene, image_size, rng).save(os.path.join(images_dir, filename))
        state = rng.getstate()
        captions = kind.CAPTIONERS[lang](scene, rng, captions_per_image)
        rows += [(filename, caption) for caption in captions]
        if swaps:
            swap, other = kind.swapped_scene(scene, random.Random(f"{seed}/{os.path.basename(directory)}/{index}"))
            parallel = random.Random()
            parallel.setstate(state)  # the captioner's word choices again, for the swapped scene
            swapped_captions = kind.CAPTIONERS[lang](other, parallel, captions_per_image)
            negatives += [(filename, caption, negative, kind.swap_label(swap, caption, lang)) for caption, negative
                          in zip(captions, swapped_captions) if negative != caption]
            facts.append(scene_record(kind, filename, scene, swap, other))
            if twins is not None and tuple(sorted(other)) not in twins:  # scenes are sorted tuples
                twins.add(tuple(sorted(other)))
                twin_name = f"{index:06d}-twin.png"
                kind.draw_scene(other, image_size, random.Random(f"{seed}/twin/{index}")).save(
                    os.path.join(images_dir, twin_name))
                rows += [(twin_name, caption) for caption in swapped_captions]
                negatives += [(twin_name, caption, negative, kind.swap_label(swap, caption, lang))
                              for caption, negative in zip(swapped_captions, captions) if negative != caption]
                facts.append(scene_record(kind, twin_name, other, swap, scene))
                cues.append((twin_name, kind.easy_cue(other)))
                groups += [(filename, index), (twin_name, index)]
    write_csv(os.path.join(directory, "captions.csv"), ["filename", "caption"], rows)
    # the easy cue of each image: eval.py reports the recall a model that knows only it would reach
    write_csv(os.path.join(directory, "cues.csv"), ["filename", "cue"], cues)
    if groups:
        write_csv(os.path.join(directory, "groups.csv"), ["filename", "group"], groups)
    elif os.path.exists(os.path.join(directory, "groups.csv")):  # an --overwrite of a folder made with --twins
        os.remove(os.path.join(directory, "groups.csv"))
    if swaps:
        write_csv(os.path.join(directory, "negatives.csv"), ["filename", "caption", "negative", "swap"], negatives)
        with open(os.path.join(directory, "scenes.jsonl"), "w", encoding="utf-8") as handle:
            handle.writelines(json.dumps(record) + "\n" for record in facts)
    return rows


def scene_record(kind, filename, scene, swap, other):
    """scenes.jsonl's line for an image: its binding and relation facts and those of its swapped scene."""
    return {"filename": filename, "facts": kind.binding_facts(scene), "swap": swap,
            "swapped-facts": kind.binding_facts(other), "relations": kind.relation_facts(scene),
            "swapped-relations": kind.relation_facts(other)}


def write_csv(path, header, rows):
    with open(path, "w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        writer.writerows(rows)


def unique_caption_sets(rows):
    """Fraction of images whose set of captions no other image shares."""
    sets = {}
    for filename, caption in rows:
        sets.setdefault(filename, set()).add(caption)
    frozen = [frozenset(s) for s in sets.values()]
    counts = {}
    for s in frozen:
        counts[s] = counts.get(s, 0) + 1
    return sum(1 for s in frozen if counts[s] == 1) / len(frozen)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="datasets/demo", help="output folder (train/ and valid/ inside)")
    parser.add_argument("--train", type=int, default=5000, help="training images")
    parser.add_argument("--valid", type=int, default=1000, help="validation images")
    parser.add_argument("--captions", type=int, default=5, help="captions per image")
    parser.add_argument("--image-size", type=int, default=64, help="image side in pixels")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--lang", choices=sorted(demo_shapes.CAPTIONERS), default="en", help="caption language")
    parser.add_argument("--kind", choices=sorted(KINDS), default="shapes", help="what the images show")
    parser.add_argument("--twins", action="store_true",
                        help="shapes: beside each training image, its twin with two objects' attributes or places "
                             "exchanged, paired in groups.csv (batching: groups)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing output folder's splits")
    args = parser.parse_args(argv)
    for split in ("train", "valid"):
        if os.path.exists(os.path.join(args.out, split, "captions.csv")) and not args.overwrite:
            print(f"error: {os.path.join(args.out, split)} already exists; pass --overwrite to regenerate it",
                  file=sys.stderr)
            return 2
    if min(args.train, args.valid, args.captions, args.image_size) < 1:
        print("error: --train, --valid, --captions and --image-size must be positive", file=sys.stderr)
        return 2
    kind = KINDS[args.kind]
    rng = random.Random(args.seed)
    scenes, seen, misses = [], set(), 0
    while len(scenes) < args.train + args.valid:
        scene = kind.sample_scene(rng)
        if scene not in seen:
            seen.add(scene)
            scenes.append(scene)
            misses = 0
            continue
        misses += 1
        if misses > 20 * len(scenes) + 1000:  # a new scene is that unlikely only once (nearly) all are drawn
            print(f"error: --kind {args.kind} has too few distinct scenes for {args.train + args.valid} images "
                  f"(found {len(scenes)}); ask for fewer", file=sys.stderr)
            return 2
    if args.twins and not hasattr(kind, "swapped_scene"):
        print(f"error: --twins needs a kind that can swap attributes (shapes), not {args.kind}", file=sys.stderr)
        return 2
    train_rows = write_split(os.path.join(args.out, "train"), scenes[:args.train], args.image_size,
                             args.captions, rng, args.lang, kind, args.seed, set(scenes) if args.twins else None)
    valid_rows = write_split(os.path.join(args.out, "valid"), scenes[args.train:], args.image_size,
                             args.captions, rng, args.lang, kind, args.seed)
    twins = len({name for name, _ in train_rows}) - args.train
    print(f"wrote {args.out}: train {args.train} images{f' + {twins} twins' if args.twins else ''} / "
          f"{len(train_rows)} captions, valid {args.valid} "
          f"images / {len(valid_rows)} captions; {unique_caption_sets(valid_rows):.1%} of valid images have a "
          f"caption set no other valid image shares")
    return 0


if __name__ == "__main__":
    sys.exit(main())
