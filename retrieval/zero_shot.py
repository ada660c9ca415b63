"""Zero-shot classification: class names + prompt templates -> one text embedding per class (CLIP's
prompt ensembling), then a softmax over image-class similarities. The one scoring path behind classify.py
and the service's /api/classify."""
import logging

import numpy as np

from retrieval.image_files import decoded_batches
from utils.errors import UserError

logger = logging.getLogger(__name__)

DEFAULT_TEMPLATES = (
    "a photo of a {}.",
    "a picture of a {}.",
    "an image of a {}.",
    "a {}.",
    "a photo of the {}.",
    "a close-up photo of a {}.",
    "a drawing of a {}.",
    "a photo of a small {}.",
    "a photo of a large {}.",
)


def parse_labels(text):
    """'cat, dog,,bird ' -> ['cat', 'dog', 'bird']; UserError when nothing is left or names repeat."""
    labels = [label.strip() for label in (text or "").split(",") if label.strip()]
    if len(labels) < 2:
        raise UserError("give at least two comma-separated labels")
    if len(set(labels)) != len(labels):
        raise UserError("labels must be distinct")
    return labels


def parse_templates(lines):
    """Template lines (blank lines ignored) that each contain '{}' exactly once."""
    templates = [line.strip() for line in lines if line.strip()]
    bad = [t for t in templates if t.count("{}") != 1]
    if bad:
        raise UserError(f"each template needs exactly one '{{}}' for the class name; not: {bad[0]!r}")
    if not templates:
        raise UserError("no templates given")
    return templates


def read_templates(path):
    if path is None:
        return list(DEFAULT_TEMPLATES)
    try:
        with open(path, encoding="utf-8") as handle:
            return parse_templates(handle.read().splitlines())
    except OSError as error:
        raise UserError(f"templates file '{path}': {error.strerror}") from None
    except UnicodeDecodeError:
        raise UserError(f"templates file '{path}' is not UTF-8 text") from None


def class_embeddings(encoder, labels, templates):
    """[C, D]: for each label, the normalised mean of its normalised template embeddings."""
    rows = []
    for label in labels:
        # replace, not str.format: other braces in a template stay literal text instead of raising
        features = encoder.encode_texts([template.replace("{}", label) for template in templates])
        mean = features.mean(axis=0)
        rows.append(mean / np.linalg.norm(mean))
    return np.stack(rows).astype(np.float32)


def image_probabilities(encoder, images, classes):
    """PIL images [N], classes [C, D] from class_embeddings -> probabilities [N, C] (softmax of scaled cosine)."""
    logits = encoder.logit_scale * encoder.encode_images(images) @ classes.T
    logits -= logits.max(axis=1, keepdims=True)
    weights = np.exp(logits)
    return weights / weights.sum(axis=1, keepdims=True)


def rank_labels(encoder, image, labels, classes):
    """[{"label", "probability"}] for one PIL image, most probable first.

    classes: class_embeddings(encoder, labels, templates), which a caller may keep for later requests.
    """
    probabilities = image_probabilities(encoder, [image], classes)[0]
    ranked = sorted(zip(labels, probabilities.tolist()), key=lambda pair: -pair[1])
    return [{"label": label, "probability": probability} for label, probability in ranked]


def folder_labels(text, classes, root):
    """The labels for an image folder's classes: ``text`` (comma-separated, paired in order with the sorted
    folder names ``classes``) or, when it is empty, the folder names themselves."""
    labels = parse_labels(text) if text else classes
    if len(labels) != len(classes):
        raise UserError(f"--labels names {len(labels)} classes but '{root}' has {len(classes)}: {', '.join(classes)}")
    if labels != classes:  # labels pair with the sorted folder names: show the pairing, never guess it
        logger.info("labels: " + ", ".join(f"{folder}/ -> {label!r}" for folder, label in zip(classes, labels)))
    return labels


def score_folder(encoder, labels, templates, samples, batch_size):
    """Predictions for every decodable sample: (targets [N], probabilities [N, C], skipped count).

    samples: [(image path, class index)] as image_files.image_folder lists them.
    """
    classes = class_embeddings(encoder, labels, templates)
    targets, probabilities = [], []
    for images, kept in decoded_batches(samples, batch_size):
        probabilities.append(image_probabilities(encoder, images, classes))
        targets += [target for _, target in kept]
    if not probabilities:
        raise UserError("no image could be decoded")
    return np.asarray(targets), np.concatenate(probabilities), len(samples) - len(targets)
