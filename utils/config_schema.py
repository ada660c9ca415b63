"""The keys each script accepts: type, bounds and help. Config is data: this file is the one schema.

Defaults are not here: each is written once, in the script's own config file (configs/train.yaml, ...).
"""
from dataclasses import replace

from utils.config import Key, Schema

_DEVICE = Key("device", "device", "auto picks cuda when available, else cpu")
_SEED = Key("seed", "int", "random seed for weights, sampling and augmentation", minimum=0, maximum=2**31 - 1)
_STRICT = Key("strict", "bool", "fail on the first bad dataset row, listing every problem")
_SHARD_TIMEOUT = Key("shard-timeout", "float", "seconds an http(s) shard may stall (connecting or mid-body) "
                     "before the rest of it is skipped and counted", minimum=1, maximum=86400)

INIT = Schema("configs/init.yaml", [
    Key("pretrained", "bool", "load pretrained weights for both towers"),
    Key("save-path", "str", "where the joint model is written"),
    Key("image-model", "str", "torchvision classification model name"),
    Key("image-weights", "str", "local image-tower weights file (default: torchvision's own)", nullable=True),
    Key("text-model", "str", "Hugging Face model directory (config.json, tokenizer)"),
    Key("text-pooling", "str", "text feature: first token (cls) or masked mean", choices=("cls", "mean")),
    Key("text-ngram", "int", "width of a word-order block between the text encoder and a mean pooling "
        "(models/word_order.py): features of each run of that many tokens, so 'red circle' differs from "
        "'blue circle'; 0 = none (the original)", choices=(0, 2, 3, 4, 5, 7, 9, 13, 17)),
    Key("image-pooling", "str", "how the image tower's final map becomes one vector: avg (the backbone's global "
        "average, the original) or attention (models/attention_pool.py: attention with a positional embedding "
        "per cell, as CLIP's ModifiedResNet, so where a feature sits counts)", choices=("avg", "attention")),
    Key("embed-dim", "int", "project both towers to this size (default: the text size)", nullable=True, minimum=1),
    Key("image-size", "int", "square input side in pixels", minimum=16, maximum=4096),
    Key("max-length", "int", "tokens per caption after truncation", minimum=2, maximum=8192),
    Key("clip-model", "str", "start from a pretrained CLIP instead of two towers: open_clip:<name> (e.g. "
        "open_clip:RN50) or chinese-clip:<name> (e.g. chinese-clip:RN50), each with clip-checkpoint, or "
        "hf:<directory> (a Hugging Face CLIPModel or ChineseCLIPModel); the tower keys are then unused",
        nullable=True),
    Key("clip-checkpoint", "str", "that CLIP's weights file: an open_clip state dict (.pt/.bin/.safetensors) "
        "or a Chinese-CLIP release file", nullable=True),
    Key("clip-torchscript", "bool", "also read OpenAI's TorchScript archives (open_clip:<name>-quickgelu) with "
        "torch.jit.load, which runs code stored in the file: only for files from a source you trust"),
    Key("overwrite", "bool", "replace an existing save-path"),
    _SEED,
])


def _train(name, kind, help, *, run_defining, **constraints):
    """A train.py key. Every one must say whether it is run-defining (checked on resume, see Key)."""
    return Key(name, kind, help, run_defining=run_defining, **constraints)


TRAIN = Schema("configs/train.yaml", [
    _train("epochs", "int", "training epochs", run_defining=True, minimum=1),
    _train("learning-rate", "float", "peak AdamW learning rate", run_defining=True, minimum=0),
    _train("batch-size", "int", "images per step (global: split over torchrun processes)", run_defining=True,
           minimum=2, maximum=2**20),
    # Per-item augmentation seeds make the data independent of the worker count.
    _train("num-workers", "int", "data-loading worker processes", run_defining=False, minimum=0, maximum=256),
    _train("use-amp", "bool", "automatic mixed precision: on CUDA bf16 where supported, else fp16; on a CPU "
           "bf16 where it is native (AVX-512 BF16, AMX, Arm BF16), else float32",
           run_defining=True),
    _train("amp-dtype", "str", "with use-amp: auto (as use-amp says), or force bfloat16 (CUDA or CPU) or float16 "
           "(CUDA only)", run_defining=True, choices=("auto", "bfloat16", "float16")),
    _train("use-augment", "bool", "random crops and the augmentations allowed below", run_defining=True),
    _train("augment-flip", "str", "horizontal flip; auto = only if no caption says left/right or mentions letters/text", run_defining=True,
           choices=("auto", "on", "off")),
    _train("augment-color", "str", "color jitter; auto = only if no caption names a color", run_defining=True,
           choices=("auto", "on", "off")),
    _train("augment-crop-scale", "float", "smallest crop area (fraction) for random resized crops",
           run_defining=True, minimum=0.05, maximum=1.0),
    _train("temperature", "float", "softmax temperature of the loss (logit scale = 1/temperature)",
           run_defining=True, minimum=0.01),
    _train("learn-temperature", "bool", "learn the temperature (CLIP's logit scale, clamped at 100)",
           run_defining=True),
    _train("loss", "str", "infonce (the original's; with captions-per-image > 1 every caption of an image is a "
           "positive), siglip (sigmoid per pair, learnable bias), max-violation (VSE++ hinge on the hardest "
           "negative)", run_defining=True, choices=("infonce", "siglip", "max-violation")),
    _train("hard-negative-beta", "float", "infonce: HN-NCE weighting of the negatives, harder ones heavier "
           "(0 = off; Radenovic et al. use 0.5)", run_defining=True, minimum=0, maximum=10),
    _train("max-violation-margin", "float", "max-violation: the margin by which a pair must beat its hardest "
           "negative", run_defining=True, minimum=0, maximum=2),
    _train("compositional-negatives", "bool", "add each image's caption with attributes or roles swapped "
           "(train-data's negatives.csv) to its batch as an extra negative (NegCLIP)", run_defining=True),
    _train("same-caption-positives", "bool", "equal captions in a batch (as tokenized) are positives of each "
           "other's images, not negatives (classification-style or repeated captions)", run_defining=True),
    _train("captions-per-image", "int", "captions of each image in a batch (all positives of that image); "
           "batch-size counts images", run_defining=True, minimum=1, maximum=64),
    _train("batching", "str", "how images are put in batches: random, hard-negatives (groups of neighbours in "
           "the current image embedding, re-mined before each epoch) or groups (the groups of train-data's "
           "groups.csv, each in one batch); dataset folders only", run_defining=True,
           choices=("random", "hard-negatives", "groups")),
    _train("hard-negative-group", "int", "batching hard-negatives: images per group of neighbours (groups fill "
           "each batch in turn: a batch-size that is a multiple keeps every group whole)", run_defining=True, minimum=2, maximum=2**20),
    _train("train-samples", "int", "the run's length as samples seen (images), instead of epochs: the schedule "
           "spans them (warmup-steps at most a fifth), the last epoch may be partial", run_defining=True, nullable=True, minimum=2),
    _train("time-budget", "float", "the run's length as minutes of training (validation not counted), instead "
           "of epochs: the schedule is fitted to the measured pace", run_defining=True, nullable=True,
           minimum=0.01),
    _train("weight-decay", "float", "AdamW weight decay (not applied to biases, norms, logit scale)",
           run_defining=True, minimum=0),
    _train("layer-decay", "float", "layer-wise learning-rate decay for fine-tuning: each layer down a tower gets "
           "this factor once more (1 = off)", run_defining=True, minimum=0.01, maximum=1.0),
    _train("warmup-steps", "int", "linear warmup steps before the cosine decay", run_defining=True, minimum=0),
    _train("lr-schedule", "str", "after the warmup: cosine decay to zero, or constant", run_defining=True,
           choices=("cosine", "constant")),
    _train("grad-clip", "float", "max gradient norm (0 = off)", run_defining=True, minimum=0),
    # Both change which checkpoint is best and when the run ends.
    _train("validate-first", "bool", "validate the starting model as epoch 0, before any step (the zero-shot "
           "baseline of a pretrained model; best-path starts from it)", run_defining=True),
    _train("early-stop-patience", "int", "stop after this many epochs without a better mean recall (0 = off)",
           run_defining=True, minimum=0),
    # Speed features change rounding, not the run.
    _train("channels-last", "bool", "channels_last memory format for the image tower", run_defining=False),
    _train("lock-image", "bool", "freeze the image tower (LiT), BatchNorm statistics included", run_defining=True),
    _train("lock-image-unlocked", "int", "last image-tower layers left trainable when locked", run_defining=True,
           minimum=0),
    _train("lock-text", "bool", "freeze the text tower", run_defining=True),
    _train("lock-text-unlocked", "int", "last text-tower layers left trainable when locked", run_defining=True,
           minimum=0),
    # BatchNorm sees chunk statistics: the chunk size changes what is learned.
    _train("grad-cache-chunk", "int", "gradient cache: embed the batch in chunks of this many (0 = off)",
           run_defining=True, minimum=0),
    _train("grad-checkpointing", "bool", "recompute activations in backward (both towers) to save memory",
           run_defining=False),
    _train("compile", "bool", "torch.compile the model", run_defining=False),
    _train("load-path", "str", "model written by init.py (ignored on resume)", run_defining=False),
    _train("best-path", "str", "best checkpoint on the validation split", run_defining=False),
    _train("last-path", "str", "latest checkpoint (resumable)", run_defining=False),
    _train("resume", "str", "resume from this checkpoint (e.g. checkpoints/last.pt); auto: from last-path if it "
           "exists, else start from load-path (one command line for the first start and every restart)",
           run_defining=False, nullable=True),
    _train("overwrite", "bool", "start a new run even if best-path or last-path exist", run_defining=False),
    _train("log-dir", "str", "metrics.jsonl, metrics.csv, TensorBoard events, curves.png", run_defining=False),
    _train("train-data", "str", "training dataset folder (images/ + captions.csv), or webdataset shards: "
           "'dir/{00000..00099}.tar', several joined with '::', local paths or fsspec URLs", run_defining=True),
    _train("checkpoint-every-steps", "int", "also write last-path every N steps inside an epoch, with the data "
           "position, so a killed run resumes mid-epoch exactly (0 = at epoch ends only)", run_defining=False,
           minimum=0),
    _train("train-num-samples", "int", "samples per epoch of train-data shards (default: from sizes.json or "
           "img2dataset's *_stats.json)", run_defining=True, nullable=True, minimum=1),
    _train("resampled", "bool", "train-data shards drawn with replacement (open_clip's --dataset-resampled); "
           "an epoch is then train-num-samples or the shards' total", run_defining=True),
    _train("train-data-weights", "str", "resampled: one weight per '::' source of train-data, e.g. '1::3'",
           run_defining=True, nullable=True),
    replace(_SHARD_TIMEOUT, run_defining=False),
    _train("caption-key", "str", "shards, img2dataset files or parquet: where an image's captions are: txt (the "
           ".txt, one caption per line; parquet: the caption column) or .json keys / parquet columns (e.g. "
           "all_captions: a list, one drawn per epoch); several comma-separated", run_defining=True),
    # The best checkpoint is chosen by recall on this split: another split makes best-metric incomparable.
    _train("valid-data", "str", "validation dataset folder, or webdataset shards (each sample with all its "
           "captions under caption-key)", run_defining=True),
    replace(_STRICT, run_defining=False),
    replace(_SEED, run_defining=True),
    replace(_DEVICE, run_defining=False),
])

EVAL = Schema("configs/eval.yaml", [
    Key("batch-size", "int", "images or captions per encoding batch", minimum=1, maximum=2**20),
    Key("num-workers", "int", "data-loading worker processes", minimum=0, maximum=256),
    Key("use-amp", "bool", "automatic mixed precision on CUDA"),
    Key("model-path", "str", "checkpoint to evaluate"),
    Key("valid-data", "str", "dataset folder (images/ + captions.csv), webdataset shards, img2dataset's "
        "files or parquet output, or a Chinese-CLIP split (e.g. datasets/MUGE/valid: valid_imgs.tsv + "
        "valid_texts.jsonl)"),
    Key("caption-key", "str", "shards, img2dataset files or parquet: txt (the .txt, one caption per line; "
        "parquet: the caption column) or .json keys / parquet columns (e.g. all_captions), comma-separated"),
    Key("output", "str", "also write the recalls as JSON to this path", nullable=True),
    Key("predictions", "str", "a Chinese-CLIP split: write its top-10 prediction files ({split}_predictions.jsonl, "
        "{split}_predictions_tr.jsonl) into this folder", nullable=True),
    _SHARD_TIMEOUT,
    _STRICT,
    _DEVICE,
])

_SEARCH_KIND = Key("search", "str", "exact, or a FAISS index for large galleries",
                   choices=("exact", "faiss-flat", "faiss-hnsw", "faiss-ivf", "faiss-ivfpq"))
_FAISS = [
    _SEARCH_KIND,
    Key("hnsw-m", "int", "FAISS HNSW graph degree", minimum=4, maximum=256),
    Key("hnsw-ef-search", "int", "FAISS HNSW search breadth", minimum=1, maximum=4096),
    Key("ivf-nlist", "int", "FAISS IVF lists", minimum=1, maximum=1_000_000),
    Key("ivf-nprobe", "int", "FAISS IVF lists probed per query", minimum=1, maximum=1_000_000),
    Key("ivfpq-m", "int", "FAISS IVF-PQ sub-quantisers: bytes per vector at 8 bits; must divide the embedding size",
        minimum=1, maximum=4096),
    Key("ivfpq-bits", "int", "FAISS IVF-PQ bits per sub-quantiser code", minimum=1, maximum=16),
    Key("ivfpq-rerank", "int", "FAISS IVF-PQ: re-score the best k x this many candidates with the stored "
        "float vectors (0: off)", minimum=0, maximum=1000),
]
_ONNX = Key("onnx-dir", "str", "run the encoders from export.py's ONNX files (ONNX Runtime, CPU)",
            nullable=True)

INDEX = Schema("configs/index.yaml", [
    Key("model-path", "str", "checkpoint whose encoders embed the gallery"),
    Key("data", "str", "dataset folder (images/ + captions.csv), a folder of images, or webdataset shards "
        "('dir/{00000..00099}.tar', '::'-joined, fsspec URLs)"),
    Key("caption-key", "str", "shards, img2dataset files or parquet: txt (the .txt; parquet: the caption "
        "column) or .json keys / parquet columns, comma-separated"),
    _SHARD_TIMEOUT,
    Key("out", "str", "index folder; an existing index of the same model is extended"),
    Key("batch-size", "int", "images per encoding batch", minimum=1, maximum=65536),
    *_FAISS,
    _ONNX,
    _DEVICE,
])

SEARCH = Schema("configs/search.yaml", [
    Key("index", "str", "index folder written by index.py"),
    Key("model-path", "str", "checkpoint (default: the one the index was built with)", nullable=True),
    Key("text", "str", "query text", nullable=True),
    Key("image", "str", "query image file", nullable=True),
    Key("k", "int", "results to return", minimum=1, maximum=1000),
    Key("json", "bool", "print results as JSON"),
    *_FAISS,
    _ONNX,
    _DEVICE,
])

CLASSIFY = Schema("configs/classify.yaml", [
    Key("model-path", "str", "checkpoint"),
    Key("image", "str", "one image to classify", nullable=True),
    Key("data", "str", "ImageFolder-layout directory (one sub-folder per class) to score", nullable=True),
    Key("labels", "str", "comma-separated class names (default with --data: its sub-folders)",
        nullable=True),
    Key("templates", "str", "file with one prompt template per line, '{}' marks the class name",
        nullable=True),
    Key("batch-size", "int", "images per encoding batch", minimum=1, maximum=65536),
    Key("output", "str", "folder for report.json and confusion.png (with --data)", nullable=True),
    Key("json", "bool", "print results as JSON"),
    _ONNX,
    _DEVICE,
])

SERVE = Schema("configs/serve.yaml", [
    Key("model-path", "str", "checkpoint"),
    Key("index", "str", "index folder written by index.py"),
    Key("host", "str", "address to bind (loopback unless you mean otherwise)"),
    Key("port", "int", "port", minimum=0, maximum=65535),
    Key("max-upload-mb", "float", "largest accepted upload, MiB", minimum=0.01, maximum=1024),
    Key("max-k", "int", "largest k a request may ask for", minimum=1, maximum=10000),
    Key("thumbnail-size", "int", "thumbnail side in pixels", minimum=16, maximum=2048),
    Key("cors-origins", "str", "comma-separated web origins whose pages may call the API, e.g. clip-retrieval's "
        "front end at http://127.0.0.1:1235 (default: none, so no other site a browser visits can read the index)",
        nullable=True),
    Key("allow-image-url", "bool", "clip-retrieval's /knn-service may name an image_url, which the server then "
        "fetches (it connects wherever a client asks: only on a network you trust)"),
    *_FAISS,
    _ONNX,
    _DEVICE,
])

EXPORT = Schema("configs/export.yaml", [
    Key("model-path", "str", "checkpoint to export"),
    Key("out", "str", "folder for image_encoder.onnx, text_encoder.onnx, export.json"),
    Key("opset", "int", "ONNX opset", minimum=11, maximum=20),
    Key("overwrite", "bool", "replace existing files in out"),
])
