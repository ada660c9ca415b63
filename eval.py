"""Evaluate R@1/5/10 image->text and text->image on a dataset (configs/eval.yaml)."""
import json
import logging
import os

from data.cn_clip_layout import TEXTS_SUFFIX, split_files
from data.negatives import read_negatives
from data.sources import open_source
from data.transforms import preprocess_for
from evaluation.compositional import format_compositional
from evaluation.cue_recall import cue_only_recall, format_cue_recall, read_cues
from evaluation.chinese_clip_score import format_chinese_clip_score, prediction_file_problems, score_split
from evaluation.embedding import evaluate_table
from evaluation.recall import format_recall_table
from models.checkpoint import model_from_checkpoint, read_checkpoint
from utils.atomic_file import atomic_write, atomic_write_json
from utils.config import load_config
from utils.config_schema import EVAL
from utils.device import amp_dtype, precision_notice, resolve_device
from utils.errors import UserError, run_cli

logger = logging.getLogger(__name__)


def main(argv):
    config = load_config(EVAL, EVAL.defaults_path, argv)
    device = resolve_device(config["device"])
    dtype = amp_dtype(device, config["use-amp"])
    model, spec, tokenizer = model_from_checkpoint(read_checkpoint(config["model-path"]))
    source = open_source(config["valid-data"], config["caption-key"], config["shard-timeout"])
    table = source.validation_table(config["strict"])
    negatives = read_negatives(source.side_files, table) if source.side_files else None
    logger.info(precision_notice(device, config["use-amp"], dtype))
    metrics = evaluate_table(model.to(device), tokenizer, table, preprocess_for(spec),
                             config["batch-size"], config["num-workers"], device, dtype, negatives)
    logger.info(f"{config['model-path']} on {config['valid-data']}: {metrics['images']} images, "
                f"{metrics['captions']} captions")
    cues = read_cues(source.side_files, table) if source.side_files else None
    if cues:
        metrics.update(cue_only_recall([len(record.captions) for record in table.images], cues))
    print(format_recall_table(metrics))
    if cues:
        print(format_cue_recall(metrics))
    if "compositional" in metrics:
        print(format_compositional(metrics))
    if hasattr(source, "split"):  # a Chinese-CLIP split: its own score and prediction files as well
        metrics["chinese-clip"] = chinese_clip_outputs(config, source, model, tokenizer, spec, device, dtype)
    elif config["predictions"]:
        raise UserError(f"predictions: writes Chinese-CLIP's prediction files, and {config['valid-data']} is not "
                        f"a Chinese-CLIP split ({{split}}_imgs.tsv + {{split}}_texts.jsonl, or its lmdb/{{split}})")
    if config["output"]:
        atomic_write_json(config["output"],
                          {**metrics, "model-path": config["model-path"], "valid-data": config["valid-data"]})
        logger.info(f"wrote {config['output']}")


def chinese_clip_outputs(config, source, model, tokenizer, spec, device, dtype):
    """Chinese-CLIP's score of the split (printed, returned) and, with ``predictions``, its two prediction files."""
    (to_images, to_texts), scores = score_split(model, tokenizer, source.split(), preprocess_for(spec),
                                                config["batch-size"], config["num-workers"], device, dtype)
    print(format_chinese_clip_score(scores))
    unusable = prediction_file_problems(source.split(), to_images, to_texts)
    if unusable:
        logger.warning(f"Chinese-CLIP's evaluation scripts would refuse these prediction files: {unusable}")
    if config["predictions"]:
        os.makedirs(config["predictions"], exist_ok=True)
        name = os.path.basename(os.path.normpath(split_files(source.value)[1][:-len(TEXTS_SUFFIX)]))
        for suffix, rows in (("", to_images), ("_tr", to_texts)):
            path = os.path.join(config["predictions"], f"{name}_predictions{suffix}.jsonl")
            atomic_write(path, lambda handle, rows=rows: handle.write(
                "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows).encode("utf-8")))
            logger.info(f"wrote {path}")
    return scores


if __name__ == "__main__":
    run_cli(main)
