"""Zero-shot classification with prompt ensembling (configs/classify.yaml).

python classify.py --image photo.jpg --labels "cat,dog,bird"
python classify.py --data DIR  (ImageFolder layout: one sub-folder per class) [--output reports/]
"""
import json

from retrieval.encoder import load_encoder
from retrieval.image_files import image_folder, open_image_argument
from retrieval.zero_shot import class_embeddings, folder_labels, parse_labels, rank_labels, read_templates, score_folder
from retrieval.zero_shot_report import accuracy_table, folder_summary
from utils.config import load_config
from utils.config_schema import CLASSIFY
from utils.device import resolve_device
from utils.errors import UserError, run_cli


def main(argv):
    config = load_config(CLASSIFY, CLASSIFY.defaults_path, argv)
    if (config["image"] is None) == (config["data"] is None):
        raise UserError("give exactly one of --image FILE or --data DIR")
    templates = read_templates(config["templates"])
    encoder = load_encoder(config["model-path"], config["onnx-dir"], resolve_device(config["device"]))
    if config["image"]:
        labels = parse_labels(config["labels"])
        image = open_image_argument(config["image"])
        ranked = rank_labels(encoder, image, labels, class_embeddings(encoder, labels, templates))
        print(json.dumps({"labels": ranked}, ensure_ascii=False) if config["json"]
              else "\n".join(f"{r['probability']:7.2%}  {r['label']}" for r in ranked))
        return
    classes, samples = image_folder(config["data"])
    labels = folder_labels(config["labels"], classes, config["data"])
    targets, probabilities, skipped = score_folder(encoder, labels, templates, samples, config["batch-size"])
    predictions = probabilities.argmax(axis=1)
    summary = folder_summary(labels, targets, predictions, skipped, config["output"])
    print(json.dumps(summary, ensure_ascii=False) if config["json"]
          else accuracy_table(labels, targets, predictions, skipped))


if __name__ == "__main__":
    run_cli(main)
