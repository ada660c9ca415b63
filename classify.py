"""Zero-shot classification with prompt ensembling (configs/classify.yaml).

python classify.py --image photo.jpg --labels "cat,dog,bird"
python classify.py --data DIR  (ImageFolder layout: one sub-folder per class) [--output reports/]
"""
import json
import os

import numpy as np

from data.image_file import ImageProblem, open_image_rgb
from retrieval.encoder import load_encoder
from retrieval.gallery import IMAGE_EXTENSIONS
from retrieval.zero_shot import class_embeddings, class_probabilities, parse_labels, read_templates
from utils.atomic_file import atomic_write_json
from utils.config import load_config
from utils.config_schema import CLASSIFY
from utils.device import resolve_device
from utils.errors import UserError, run_cli


def image_folder(root):
    """(class names, [(path, class index)]) from an ImageFolder-layout directory."""
    if not os.path.isdir(root):
        raise UserError(f"--data '{root}' is not a directory")
    classes = sorted(name for name in os.listdir(root) if os.path.isdir(os.path.join(root, name)))
    if len(classes) < 2:
        raise UserError(f"--data '{root}' needs at least two class sub-folders")
    samples = []
    for index, name in enumerate(classes):
        for folder, directories, files in os.walk(os.path.join(root, name)):  # nested folders too, as ImageFolder
            directories.sort()
            samples += [(os.path.join(folder, file), index) for file in sorted(files)
                        if file.lower().endswith(IMAGE_EXTENSIONS)]
    if not samples:
        raise UserError(f"--data '{root}' holds no images in its class folders")
    return classes, samples


def score_folder(encoder, classes, labels, templates, samples, batch_size):
    """Predictions for every decodable sample: (targets [N], probabilities [N, C], skipped count)."""
    class_features = class_embeddings(encoder, labels, templates)
    targets, probabilities, skipped = [], [], 0
    for start in range(0, len(samples), batch_size):
        images, batch_targets = [], []
        for path, target in samples[start:start + batch_size]:
            try:
                images.append(open_image_rgb(path))
                batch_targets.append(target)
            except ImageProblem as problem:
                print(f"skipped {path}: {problem}")
                skipped += 1
        if images:
            probabilities.append(class_probabilities(encoder.encode_images(images), class_features,
                                                     encoder.logit_scale))
            targets += batch_targets
    if not probabilities:
        raise UserError("no image could be decoded")
    return np.asarray(targets), np.concatenate(probabilities), skipped


def write_report(classes, targets, predictions, directory):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from sklearn.metrics import ConfusionMatrixDisplay, classification_report

    report = classification_report(targets, predictions, labels=list(range(len(classes))), target_names=classes,
                                   output_dict=True, zero_division=0)
    atomic_write_json(os.path.join(directory, "report.json"),
                      {"per-class": {name: report[name] for name in classes},
                       "overall": {k: v for k, v in report.items() if k not in classes}})
    many = len(classes) > 30  # beyond this, per-cell numbers and tick labels are unreadable and slow to draw
    figure, axis = plt.subplots(figsize=(min(24, max(4, len(classes) * 0.6 + 2)),) * 2)
    ConfusionMatrixDisplay.from_predictions(targets, predictions, labels=list(range(len(classes))),
                                            display_labels=None if many else classes, ax=axis, colorbar=many,
                                            include_values=not many, xticks_rotation=45)
    figure.tight_layout()
    figure.savefig(os.path.join(directory, "confusion.png"), dpi=100)
    plt.close(figure)
    return report


def main(argv):
    config = load_config(CLASSIFY, "configs/classify.yaml", argv)
    if (config["image"] is None) == (config["data"] is None):
        raise UserError("give exactly one of --image FILE or --data DIR")
    templates = read_templates(config["templates"])
    encoder = load_encoder(config["model-path"], config["onnx-dir"], resolve_device(config["device"]))
    if config["image"]:
        labels = parse_labels(config["labels"])
        try:
            image = open_image_rgb(config["image"])
        except ImageProblem as problem:
            raise UserError(f"--image {config['image']}: {problem}") from None
        probabilities = class_probabilities(encoder.encode_images([image]),
                                            class_embeddings(encoder, labels, templates), encoder.logit_scale)[0]
        ranked = sorted(zip(labels, probabilities.tolist()), key=lambda pair: -pair[1])
        if config["json"]:
            print(json.dumps({"labels": [{"label": l, "probability": p} for l, p in ranked]}, ensure_ascii=False))
        else:
            print("\n".join(f"{p:7.2%}  {l}" for l, p in ranked))
        return
    classes, samples = image_folder(config["data"])
    labels = parse_labels(config["labels"]) if config["labels"] else classes
    if len(labels) != len(classes):
        raise UserError(f"--labels names {len(labels)} classes but '{config['data']}' has {len(classes)}: "
                        f"{', '.join(classes)}")
    if labels != classes:  # labels pair with the sorted folder names: show the pairing, never guess it
        print("labels: " + ", ".join(f"{folder}/ -> {label!r}" for folder, label in zip(classes, labels)))
    targets, probabilities, skipped = score_folder(encoder, classes, labels, templates, samples,
                                                   config["batch-size"])
    predictions = probabilities.argmax(axis=1)
    accuracy = float((predictions == targets).mean())
    summary = {"accuracy": accuracy, "images": int(len(targets)), "skipped": skipped, "classes": labels}
    if config["output"]:
        report = write_report(labels, targets, predictions, config["output"])
        summary["per-class"] = {label: report[label] for label in labels}
        print(f"wrote {os.path.join(config['output'], 'report.json')} and confusion.png")
    if config["json"]:
        print(json.dumps(summary, ensure_ascii=False))
    else:
        print(f"zero-shot accuracy {accuracy:.4f} on {len(targets)} images, {len(labels)} classes"
              + (f" ({skipped} skipped)" if skipped else ""))
        for index, label in enumerate(labels):
            mask = targets == index
            if mask.any():
                print(f"  {label:<24} {float((predictions[mask] == index).mean()):.3f}  ({int(mask.sum())} images)")


if __name__ == "__main__":
    run_cli(main)
