"""Where is binding lost? Linear probes for "which attribute belongs to which object" on a model's features.

For a dataset folder whose train/ and valid/ hold scenes.jsonl (scripts/make_demo_dataset.py writes it for
the shapes domain: each image's binding facts and those of its swapped scene), a linear probe is fitted on the
train split's features and scored on the valid split's swap pairs (evaluation/binding_probe.py; chance 0.5):

- image side: the image's feature -> its scene's facts, against the swapped scene's;
- text side: a caption's feature -> its scene's facts, against the swapped scene's (pairs of negatives.csv);
- each for the towers' outputs (before the projection) and for the joint embedding (after it);
- controls: the captions as bags of words (a probe can only guess: about 0.5), as bags of word pairs
  (adjacent and one apart: "red circle", "red _ circle"; what a text feature needs at least to hold the
  binding), and the model's own compositional accuracy (image vs caption and its swap, as eval.py reports it);
- with --facts relations, how each object stands to the others ("red circle left of") instead of which
  properties each object has: what a relation caption binds;
- with --train-towers N: each tower, unfrozen, trained N epochs on the facts directly (what the architecture
  can learn when asked for binding alone).

    python scripts/probe_binding.py --model-path checkpoints/demo/best.pt --data datasets/demo
"""
import argparse
import copy
import json
import logging
import os
import time

import torch
from torch import nn

from data.datasets import EvalImages, collate_images
from data.negatives import read_negatives
from data.sources import open_source
from data.transforms import preprocess_for
from evaluation.binding_probe import fact_targets, fact_vocabulary, fit_linear_probe, pair_accuracy, swap_pair_wins
from evaluation.compositional import compositional_accuracy
from evaluation.embedding import embed_captions, embed_images
from models.checkpoint import model_from_checkpoint, read_checkpoint
from utils.atomic_file import atomic_write_json
from utils.errors import UserError, run_cli

logger = logging.getLogger(__name__)
SCENES = "scenes.jsonl"


class TowerOutputs(nn.Module):
    """The towers' pooled outputs, before the projections, behind the model's encode_* names."""

    def __init__(self, model):
        super().__init__()
        self.model = model
        self.embed_dim = model.image_projection.in_features

    def encode_image(self, images):
        return self.model.image_backbone(images)

    def encode_text(self, input_ids):
        return self.model.text_tower(input_ids, (input_ids != self.model.pad_token_id).long())


class Split:
    """One split: its CaptionTable, each image's facts and swapped facts, and its negatives."""

    def __init__(self, folder, facts="binding"):
        path = os.path.join(folder, SCENES)
        if not os.path.isfile(path):
            raise UserError(f"{path} not found: the probe needs each image's binding facts (scripts/"
                            f"make_demo_dataset.py writes them for the shapes domain)")
        self.table = open_source(folder).validation_table(strict=False)
        try:
            with open(path, encoding="utf-8") as handle:
                scenes = {record["filename"]: record for record in map(json.loads, filter(str.strip, handle))}
        except (OSError, ValueError, KeyError) as error:
            raise UserError(f"{path}: cannot be read ({error})") from None
        missing = [record.filename for record in self.table.images if record.filename not in scenes]
        if missing:
            raise UserError(f"{path}: no facts for {len(missing)} image(s), e.g. {missing[0]}")
        key = "facts" if facts == "binding" else "relations"
        if any(key not in scenes[record.filename] for record in self.table.images):
            raise UserError(f"{path}: no '{key}' for some images; regenerate the dataset with "
                            f"scripts/make_demo_dataset.py (relation facts came later)")
        self.facts = [scenes[record.filename][key] for record in self.table.images]
        self.swapped = [scenes[record.filename][f"swapped-{key}"] for record in self.table.images]
        self.swaps = [scenes[record.filename]["swap"] for record in self.table.images]
        self.negatives = read_negatives(folder, self.table) or []


def image_features(encoder, split, transform, args):
    features, kept = embed_images(encoder, split.table, transform, args.batch_size, args.num_workers,
                                  torch.device("cpu"), None)
    if len(kept) != len(split.table.images):
        raise UserError(f"{split.table.root}: {len(split.table.images) - len(kept)} image(s) could not be decoded")
    return features


def words(text):
    return text.lower().replace(",", " ").split()


def word_pairs(text):
    """The text's adjacent word pairs and pairs one word apart ("red circle", "small _ circle")."""
    tokens = words(text)
    return [f"{a} {b}" for a, b in zip(tokens, tokens[1:])] + [f"{a} _ {b}" for a, b in zip(tokens, tokens[2:])]


def bag_of(texts, units, vocabulary):
    """Counts FloatTensor[len(texts), len(vocabulary)] of ``units(text)`` (words, word pairs)."""
    column = {unit: k for k, unit in enumerate(vocabulary)}
    counts = torch.zeros(len(texts), len(vocabulary))
    for row, text in enumerate(texts):
        for unit in units(text):
            if unit in column:
                counts[row, column[unit]] += 1
    return counts


def train_tower(tower, inputs, targets, forward, epochs, batch_size, seed=0):
    """Fit ``tower`` + a linear head to ``targets`` [N, K] by binary cross-entropy (AdamW, lr 1e-3).
    ``inputs(indices)`` gives a batch; ``forward(tower, batch)`` its features. Returns a function from a batch
    to logits."""
    torch.manual_seed(seed)
    with torch.no_grad():
        width = forward(tower, inputs(torch.arange(2))).shape[1]
    head = nn.Linear(width, targets.shape[1])
    optimizer = torch.optim.AdamW([*tower.parameters(), *head.parameters()], lr=1e-3, weight_decay=1e-4)
    tower.train()
    for _ in range(epochs):
        for indices in torch.randperm(len(targets)).split(batch_size):
            loss = nn.functional.binary_cross_entropy_with_logits(head(forward(tower, inputs(indices))),
                                                                  targets[indices])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    tower.eval()

    @torch.no_grad()
    def logits(batch):
        return head(forward(tower, batch))
    return logits


def stack_images(table, transform, indices):
    dataset = EvalImages(table, transform)
    images, _ = collate_images([dataset[i] for i in indices.tolist()])
    return images


def probe(train_x, train_targets, valid_x, valid_true, valid_swapped, swaps):
    head = fit_linear_probe(train_x, train_targets)
    with torch.no_grad():
        return pair_accuracy(swap_pair_wins(head(valid_x), valid_true, valid_swapped), swaps)


def main(argv):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model-path", required=True, help="a checkpoint (pretrain.pt, best.pt, ...)")
    parser.add_argument("--data", required=True, help="folder with train/ and valid/, each with scenes.jsonl")
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--num-workers", type=int, default=2)
    parser.add_argument("--train-towers", type=int, default=0, metavar="EPOCHS",
                        help="also train each tower, unfrozen, on the facts for this many epochs (0: frozen only)")
    parser.add_argument("--train-sides", nargs="+", choices=("image", "text"), default=["image", "text"],
                        help="which towers --train-towers trains")
    parser.add_argument("--facts", choices=("binding", "relations"), default="binding",
                        help="binding: each object's pairs of properties ('red circle', 'circle cell02'); "
                             "relations: how each object stands to the others ('red circle left of')")
    parser.add_argument("--out", help="write the results as JSON here")
    args = parser.parse_args(argv)
    started = time.perf_counter()
    torch.manual_seed(0)
    model, spec, tokenizer = model_from_checkpoint(read_checkpoint(args.model_path))
    transform = preprocess_for(spec)
    train, valid = (Split(os.path.join(args.data, name), args.facts) for name in ("train", "valid"))
    if not valid.negatives:
        raise UserError(f"{os.path.join(args.data, 'valid')}: no negatives.csv rows: no caption swap pairs to score")
    vocabulary = fact_vocabulary(train.facts)
    train_targets = fact_targets(train.facts, vocabulary)
    # two equal objects exchanging places leave the scene as it was: no pair to score
    has_swap = [i for i, swap in enumerate(valid.swaps) if swap and valid.facts[i] != valid.swapped[i]]
    image_true = fact_targets([valid.facts[i] for i in has_swap], vocabulary)
    image_swapped = fact_targets([valid.swapped[i] for i in has_swap], vocabulary)
    image_swaps = [valid.swaps[i] for i in has_swap]
    pairs = [p for p in valid.negatives if valid.facts[p.image] != valid.swapped[p.image]]  # as has_swap
    caption_rows = [p.image for p in pairs]
    text_true = fact_targets([valid.facts[i] for i in caption_rows], vocabulary)
    text_swapped = fact_targets([valid.swapped[i] for i in caption_rows], vocabulary)
    text_swaps = [p.swap for p in pairs]
    train_captions = train.table.captions
    train_caption_targets = train_targets[torch.tensor(train.table.caption_image_index)]
    valid_captions = [p.caption for p in pairs]

    results = {"facts": len(vocabulary), "image-pairs": len(has_swap), "caption-pairs": len(caption_rows)}
    for name, encoder in (("tower", TowerOutputs(model)), ("embedding", model)):
        train_images = image_features(encoder, train, transform, args)
        valid_images = image_features(encoder, valid, transform, args)
        results[f"image {name}"] = probe(train_images, train_targets, valid_images[has_swap], image_true,
                                         image_swapped, image_swaps)
        text = [embed_captions(encoder, tokenizer, texts, args.batch_size, torch.device("cpu"), None)
                for texts in (train_captions, valid_captions)]
        results[f"text {name}"] = probe(text[0], train_caption_targets, text[1], text_true, text_swapped, text_swaps)
        logger.info(f"probed the {name} features ({time.perf_counter() - started:.0f} s)")
        if name == "embedding":  # the model itself: image vs its caption and the caption's swap
            # every pair, whatever the facts say: eval.py's compositional accuracy
            every = valid.negatives
            twins = embed_captions(model, tokenizer, [p.caption for p in every] + [p.negative for p in every],
                                   args.batch_size, torch.device("cpu"), None)
            own = compositional_accuracy(valid_images, twins[:len(every)], twins[len(every):],
                                         [p.image for p in every], [p.swap for p in every])
            results["model"] = {"all": own["compositional"],
                                **{key.split("/", 1)[1]: value for key, value in own.items() if "/" in key}}
    for name, units in (("text bag of words", words), ("text bag of word pairs", word_pairs)):
        vocabulary_of_units = sorted({unit for text in train_captions for unit in units(text)})
        results[name] = probe(bag_of(train_captions, units, vocabulary_of_units), train_caption_targets,
                              bag_of(valid_captions, units, vocabulary_of_units), text_true, text_swapped,
                              text_swaps)

    if args.train_towers and "image" in args.train_sides:
        image_logits = train_tower(
            copy.deepcopy(model.image_backbone), lambda rows: stack_images(train.table, transform, rows),
            train_targets, lambda tower, images: tower(images), args.train_towers, 128)
        valid_images = stack_images(valid.table, transform, torch.tensor(has_swap))
        results["image tower trained"] = pair_accuracy(
            swap_pair_wins(torch.cat([image_logits(batch) for batch in valid_images.split(256)]), image_true,
                           image_swapped), image_swaps)
    if args.train_towers and "text" in args.train_sides:
        pad = model.pad_token_id
        text_logits = train_tower(
            copy.deepcopy(model.text_tower), lambda rows: tokenizer([train_captions[i] for i in rows.tolist()]),
            train_caption_targets, lambda tower, ids: tower(ids, (ids != pad).long()), args.train_towers, 128)
        results["text tower trained"] = pair_accuracy(swap_pair_wins(torch.cat(
            [text_logits(tokenizer(valid_captions[start:start + 256]))
             for start in range(0, len(valid_captions), 256)]), text_true, text_swapped), text_swaps)
        logger.info(f"trained the towers on the facts ({time.perf_counter() - started:.0f} s)")

    print(format_table(results))
    if args.out:
        atomic_write_json(args.out, {**results, "model-path": args.model_path, "data": args.data})
        logger.info(f"wrote {args.out}")


def format_table(results):
    """A markdown table: one row per probe, the swap-pair accuracy overall and per swap kind."""
    rows = {key: value for key, value in results.items() if isinstance(value, dict)}
    kinds = sorted({kind for value in rows.values() for kind in value} - {"all"})
    lines = [f"binding probes: swap-pair accuracy (chance 0.5); {results['facts']} facts, "
             f"{results['image-pairs']} image pairs, {results['caption-pairs']} caption pairs",
             "| probe | all | " + " | ".join(kinds) + " |", "| --- " * (len(kinds) + 2) + "|"]
    for name, value in rows.items():
        lines.append(f"| {name} | {value['all']:.3f} | "
                     + " | ".join(f"{value[kind]:.3f}" if kind in value else "" for kind in kinds) + " |")
    return "\n".join(lines)


if __name__ == "__main__":
    run_cli(main)
