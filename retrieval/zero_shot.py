"""Zero-shot classification: class names + prompt templates -> one text embedding per class (CLIP's
prompt ensembling), then a softmax over image-class similarities."""
import numpy as np

from utils.errors import UserError

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


def class_probabilities(image_features, classes, logit_scale):
    """image_features [N, D], classes [C, D] -> probabilities [N, C] (softmax of scaled cosine)."""
    logits = logit_scale * image_features @ classes.T
    logits -= logits.max(axis=1, keepdims=True)
    weights = np.exp(logits)
    return weights / weights.sum(axis=1, keepdims=True)
