"""Text tower: any Hugging Face encoder directory, pooled to one vector per caption."""
import os

from torch import nn
from transformers import AutoConfig, AutoModel

from models.hf_checkpointing import enable_hf_checkpointing
from models.registry import text_towers
from models.word_order import NgramBlock
from utils.errors import UserError, first_line

_FETCH_HINT = ("put a Hugging Face model directory there (config.json, tokenizer files and, for "
               "pretrained: true, model.safetensors or pytorch_model.bin), e.g. the files of "
               "FacebookAI/roberta-base from huggingface.co")


def check_text_model_dir(path, need_weights):
    """Raise a UserError naming what is missing from a Hugging Face model directory."""
    if not os.path.isdir(path):
        raise UserError(f"text-model directory '{path}' not found: {_FETCH_HINT}")
    if not os.path.isfile(os.path.join(path, "config.json")):
        raise UserError(f"text-model '{path}' has no config.json: {_FETCH_HINT}")
    if need_weights:
        names = os.listdir(path)
        if not any(n.endswith(".safetensors") or n == "pytorch_model.bin" or n.startswith("pytorch_model-")
                   for n in names):
            raise UserError(f"text-model '{path}' has no weights (model.safetensors or pytorch_model.bin); "
                            f"{_FETCH_HINT}; or set pretrained: false for random weights")


def check_loaded_weights(loading_info, where, allow_unexpected=False):
    """Raise a UserError when ``from_pretrained(..., output_loading_info=True)`` left weights unloaded.

    Pitfall: transformers fills the weights a file lacks with random values and only logs a note. A few of the
    missing (or, unless ``allow_unexpected``, unexpected) names are given, and how many there are.
    """
    problems = []
    missing = sorted(loading_info["missing_keys"]) + sorted(name for name, *_ in loading_info["mismatched_keys"])
    if missing:
        problems.append(f"{len(missing)} of the model's weights are missing or of another shape ({_few(missing)})")
    unexpected = sorted(loading_info["unexpected_keys"])
    if unexpected and not allow_unexpected:
        problems.append(f"{len(unexpected)} weights belong to no part of the model ({_few(unexpected)})")
    if problems:
        raise UserError(f"{where}: the weights file does not fit the model: {'; '.join(problems)}")


def _few(names, count=3):
    return ", ".join(names[:count]) + (", ..." if len(names) > count else "")


class TextTower(nn.Module):
    """Wraps a Hugging Face encoder (a models.registry.Tower).

    forward(input_ids [B,L], attention_mask [B,L]) -> features [B, hidden_size], pooled as
    ``pooling``: "cls" takes the first token's last hidden state (the original project's choice),
    "mean" averages the hidden states of the unmasked tokens. ``ngram`` > 0 adds a models.word_order.NgramBlock
    of that width between the encoder and the pooling (held as ``self.ngram``; None without it).
    """

    def __init__(self, encoder, pooling, ngram=0):
        super().__init__()
        self.encoder = encoder
        self.pooling = pooling
        self.output_dim = encoder.config.hidden_size
        self.ngram = NgramBlock(self.output_dim, ngram) if ngram else None

    def enable_checkpointing(self):
        if not enable_hf_checkpointing(self.encoder):
            raise UserError("grad-checkpointing: not available for this text tower; use the gradient cache")

    def prepare_for_export(self):
        # Eager attention exports to plain ONNX ops; the fused SDPA kernel has no portable equivalent.
        self.encoder.config._attn_implementation = "eager"

    def forward(self, input_ids, attention_mask):
        hidden = self.encoder(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        if self.ngram is not None:
            hidden = self.ngram(hidden, attention_mask)
        if self.pooling == "cls":
            return hidden[:, 0]
        mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
        return (hidden * mask).sum(1) / mask.sum(1).clamp(min=1.0)


@text_towers.register("", "a Hugging Face encoder directory")
def build_text_tower(spec):
    """Random-weight TextTower of a ModelSpec (its text_encoder_config, text_pooling and text_ngram)."""
    return TextTower(build_text_encoder(spec.text_encoder_config), spec.text_pooling, spec.text_ngram)


def build_text_encoder(config_dict):
    """Random-weight encoder from a config dict (as saved in checkpoints)."""
    config = AutoConfig.for_model(**config_dict)
    return AutoModel.from_config(config, add_pooling_layer=False) if _has_pooler(config) else AutoModel.from_config(config)


def load_text_encoder(path, pretrained):
    """Encoder from a local directory: its pretrained weights, or random weights from its config.json."""
    check_text_model_dir(path, need_weights=pretrained)
    try:
        if pretrained:
            config = AutoConfig.from_pretrained(path, local_files_only=True)
            kwargs = {"add_pooling_layer": False} if _has_pooler(config) else {}
            encoder, loading_info = AutoModel.from_pretrained(path, local_files_only=True, output_loading_info=True,
                                                              **kwargs)
        else:
            config = AutoConfig.from_pretrained(path, local_files_only=True)
    except Exception as error:  # corrupt weight files raise many types (SafetensorError, UnpicklingError…)
        raise UserError(f"text-model '{path}' could not be loaded: {first_line(error)}") from None
    if not pretrained:
        return build_text_encoder(config.to_dict())
    # Encoder files often carry a pretraining head (roberta-base's lm_head, BERT's pooler) the tower drops.
    check_loaded_weights(loading_info, f"text-model '{path}'", allow_unexpected=True)
    return encoder


def _has_pooler(config):
    # BERT-family encoders carry an unused pooler (dense+tanh over CLS); dropping it avoids dead weights.
    return config.model_type in {"bert", "roberta", "xlm-roberta", "camembert", "ernie"}
