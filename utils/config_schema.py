"""The keys each script accepts, with the seed's defaults. Config is data: this file is the one schema."""
from utils.config import Key

_DEVICE = Key("device", "device", "auto", "auto picks cuda when available, else cpu")
_SEED = Key("seed", "int", 42, "random seed for weights, sampling and augmentation", minimum=0, maximum=2**31 - 1)
_STRICT = Key("strict", "bool", False, "fail on the first bad dataset row, listing every problem")

INIT = [
    Key("pretrained", "bool", True, "load pretrained weights for both towers"),
    Key("save-path", "str", "checkpoints/pretrain.pt", "where the joint model is written"),
    Key("image-model", "str", "resnet50", "torchvision classification model name"),
    Key("image-weights", "str", None, "local image-tower weights file (default: torchvision's own)", nullable=True),
    Key("text-model", "str", "pretrains/roberta", "Hugging Face model directory (config.json, tokenizer)"),
    Key("text-pooling", "str", "cls", "text feature: first token (cls) or masked mean", choices=("cls", "mean")),
    Key("embed-dim", "int", None, "project both towers to this size (default: the text size)", nullable=True, minimum=1),
    Key("image-size", "int", 224, "square input side in pixels", minimum=16, maximum=4096),
    Key("max-length", "int", 77, "tokens per caption after truncation", minimum=2, maximum=8192),
    Key("overwrite", "bool", False, "replace an existing save-path"),
    _SEED,
]

TRAIN = [
    Key("epochs", "int", 200, "training epochs", minimum=1),
    Key("learning-rate", "float", 0.000005, "peak AdamW learning rate", minimum=0),
    Key("batch-size", "int", 192, "images per step (global: split over torchrun processes)", minimum=2, maximum=2**20),
    Key("num-workers", "int", 8, "data-loading worker processes", minimum=0, maximum=256),
    Key("use-amp", "bool", True, "automatic mixed precision on CUDA (bf16 where supported, else fp16)"),
    Key("use-augment", "bool", True, "random crops and the augmentations allowed below"),
    Key("augment-flip", "str", "auto", "horizontal flip; auto = only if no caption says left/right",
        choices=("auto", "on", "off")),
    Key("augment-color", "str", "auto", "colour jitter; auto = only if no caption names a colour",
        choices=("auto", "on", "off")),
    Key("augment-crop-scale", "float", 0.5, "smallest crop area (fraction) for random resized crops", minimum=0.05,
        maximum=1.0),
    Key("temperature", "float", 0.07, "softmax temperature of the loss (logit scale = 1/temperature)", minimum=0.01),
    Key("learn-temperature", "bool", False, "learn the temperature (CLIP's logit scale, clamped at 100)"),
    Key("weight-decay", "float", 0.1, "AdamW weight decay (not applied to biases, norms, logit scale)", minimum=0),
    Key("warmup-steps", "int", 500, "linear warmup steps before the cosine decay", minimum=0),
    Key("lr-schedule", "str", "cosine", "after the warmup: cosine decay to zero, or constant",
        choices=("cosine", "constant")),
    Key("grad-clip", "float", 1.0, "max gradient norm (0 = off)", minimum=0),
    Key("channels-last", "bool", True, "channels_last memory format for the image tower"),
    Key("lock-image", "bool", False, "freeze the image tower (LiT), BatchNorm statistics included"),
    Key("lock-image-unlocked", "int", 0, "last image-tower layers left trainable when locked", minimum=0),
    Key("lock-text", "bool", False, "freeze the text tower"),
    Key("lock-text-unlocked", "int", 0, "last text-tower layers left trainable when locked", minimum=0),
    Key("grad-cache-chunk", "int", 0, "gradient cache: embed the batch in chunks of this many (0 = off)", minimum=0),
    Key("grad-checkpointing", "bool", False, "recompute activations in backward (both towers) to save memory"),
    Key("compile", "bool", False, "torch.compile the model"),
    Key("load-path", "str", "checkpoints/pretrain.pt", "model written by init.py"),
    Key("best-path", "str", "checkpoints/best.pt", "best checkpoint on the validation split"),
    Key("last-path", "str", "checkpoints/last.pt", "latest checkpoint (resumable)"),
    Key("resume", "str", None, "resume from this checkpoint (e.g. checkpoints/last.pt)", nullable=True),
    Key("overwrite", "bool", False, "start a new run even if best-path or last-path exist"),
    Key("log-dir", "str", "checkpoints/logs", "metrics.jsonl, metrics.csv, TensorBoard events, curves.png"),
    Key("train-data", "str", "datasets/train", "training dataset folder (images/ + captions.csv)"),
    Key("valid-data", "str", "datasets/valid", "validation dataset folder"),
    _STRICT,
    _SEED,
    _DEVICE,
]

EVAL = [
    Key("batch-size", "int", 256, "images or captions per encoding batch", minimum=1, maximum=2**20),
    Key("num-workers", "int", 8, "data-loading worker processes", minimum=0, maximum=256),
    Key("use-amp", "bool", True, "automatic mixed precision on CUDA"),
    Key("model-path", "str", "checkpoints/best.pt", "checkpoint to evaluate"),
    Key("valid-data", "str", "datasets/valid", "dataset folder (images/ + captions.csv)"),
    Key("output", "str", None, "also write the recalls as JSON to this path", nullable=True),
    _STRICT,
    _DEVICE,
]

_SEARCH_KIND = Key("search", "str", "exact", "exact, or a FAISS index for large galleries",
                   choices=("exact", "faiss-flat", "faiss-hnsw", "faiss-ivf"))
_FAISS = [
    _SEARCH_KIND,
    Key("hnsw-m", "int", 32, "FAISS HNSW graph degree", minimum=4, maximum=256),
    Key("hnsw-ef-search", "int", 128, "FAISS HNSW search breadth", minimum=1, maximum=4096),
    Key("ivf-nlist", "int", 1024, "FAISS IVF lists", minimum=1, maximum=1_000_000),
    Key("ivf-nprobe", "int", 32, "FAISS IVF lists probed per query", minimum=1, maximum=1_000_000),
]
_ONNX = Key("onnx-dir", "str", None, "run the encoders from export.py's ONNX files (ONNX Runtime, CPU)",
            nullable=True)

INDEX = [
    Key("model-path", "str", "checkpoints/best.pt", "checkpoint whose encoders embed the gallery"),
    Key("data", "str", "datasets/valid", "dataset folder (images/ + captions.csv) or a folder of images"),
    Key("out", "str", "checkpoints/index", "index folder; an existing index of the same model is extended"),
    Key("batch-size", "int", 64, "images per encoding batch", minimum=1, maximum=65536),
    *_FAISS,
    _ONNX,
    _DEVICE,
]

SEARCH = [
    Key("index", "str", "checkpoints/index", "index folder written by index.py"),
    Key("model-path", "str", None, "checkpoint (default: the one the index was built with)", nullable=True),
    Key("text", "str", None, "query text", nullable=True),
    Key("image", "str", None, "query image file", nullable=True),
    Key("k", "int", 10, "results to return", minimum=1, maximum=1000),
    Key("json", "bool", False, "print results as JSON"),
    *_FAISS,
    _ONNX,
    _DEVICE,
]

CLASSIFY = [
    Key("model-path", "str", "checkpoints/best.pt", "checkpoint"),
    Key("image", "str", None, "one image to classify", nullable=True),
    Key("data", "str", None, "ImageFolder-layout directory (one sub-folder per class) to score", nullable=True),
    Key("labels", "str", None, "comma-separated class names (default with --data: its sub-folders)",
        nullable=True),
    Key("templates", "str", None, "file with one prompt template per line, '{}' marks the class name",
        nullable=True),
    Key("batch-size", "int", 64, "images per encoding batch", minimum=1, maximum=65536),
    Key("output", "str", None, "folder for report.json and confusion.png (with --data)", nullable=True),
    Key("json", "bool", False, "print results as JSON"),
    _ONNX,
    _DEVICE,
]

SERVE = [
    Key("model-path", "str", "checkpoints/best.pt", "checkpoint"),
    Key("index", "str", "checkpoints/index", "index folder written by index.py"),
    Key("host", "str", "127.0.0.1", "address to bind (loopback unless you mean otherwise)"),
    Key("port", "int", 8000, "port", minimum=0, maximum=65535),
    Key("max-upload-mb", "float", 10.0, "largest accepted upload, MiB", minimum=0.01, maximum=1024),
    Key("max-k", "int", 100, "largest k a request may ask for", minimum=1, maximum=10000),
    Key("thumbnail-size", "int", 256, "thumbnail side in pixels", minimum=16, maximum=2048),
    *_FAISS,
    _ONNX,
    _DEVICE,
]

EXPORT = [
    Key("model-path", "str", "checkpoints/best.pt", "checkpoint to export"),
    Key("out", "str", "checkpoints/onnx", "folder for image_encoder.onnx, text_encoder.onnx, export.json"),
    Key("opset", "int", 17, "ONNX opset", minimum=11, maximum=20),
    Key("overwrite", "bool", False, "replace existing files in out"),
]
