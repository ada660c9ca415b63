"""Caption tokenizer: list of strings -> padded LongTensor, as open_clip's tokenizers do."""
import os
import tempfile

import torch
from transformers import AutoTokenizer

from utils.errors import UserError


class CaptionTokenizer:
    """Callable: ``tokenizer(["a cat", ...]) -> LongTensor[B, L]``, L <= max_length.

    Pads to the longest caption in the batch with the tokenizer's pad id; ``ContrastiveModel.encode_text``
    derives the attention mask from that pad id.
    """

    def __init__(self, hf_tokenizer, max_length):
        if hf_tokenizer.pad_token_id is None:
            raise UserError("the text tokenizer has no pad token; add one (e.g. '<pad>') to its files")
        self.hf_tokenizer = hf_tokenizer
        self.hf_tokenizer.padding_side = "right"  # "cls" pooling reads position 0, which must be a real token
        self.max_length = max_length
        self.pad_token_id = hf_tokenizer.pad_token_id

    def __call__(self, texts):
        if isinstance(texts, str):
            texts = [texts]
        encoded = self.hf_tokenizer(list(texts), padding=True, truncation=True, max_length=self.max_length,
                                    return_tensors="pt")
        return encoded["input_ids"].long()

    def to_files(self):
        """The tokenizer's files as {name: uint8 tensor}, to embed in a checkpoint."""
        with tempfile.TemporaryDirectory() as directory:
            self.hf_tokenizer.save_pretrained(directory)
            return {name: _read_bytes(os.path.join(directory, name)) for name in sorted(os.listdir(directory))
                    if os.path.isfile(os.path.join(directory, name))}


def _read_bytes(path):
    with open(path, "rb") as handle:
        return torch.frombuffer(bytearray(handle.read()), dtype=torch.uint8).clone()


def load_hf_tokenizer(path):
    """AutoTokenizer from a local directory, with a UserError when it cannot be read."""
    try:
        return AutoTokenizer.from_pretrained(path, local_files_only=True)
    except (OSError, ValueError, TypeError) as error:
        raise UserError(f"tokenizer in '{path}' could not be loaded: {error}") from None


def tokenizer_from_files(files, max_length):
    """Rebuild a CaptionTokenizer (or an imported CLIP's OpenClipTokenizer) from ``to_files()`` output."""
    from models.open_clip_tower import BPE_FILE, tokenizer_from_bpe_bytes

    if set(files) == {BPE_FILE}:
        return tokenizer_from_bpe_bytes(files[BPE_FILE].numpy().tobytes(), max_length)
    with tempfile.TemporaryDirectory() as directory:
        for name, data in files.items():
            if not isinstance(name, str) or os.path.basename(name) != name or name in ("", ".", ".."):
                raise UserError(f"checkpoint tokenizer file name '{name}' is not a plain file name")
            with open(os.path.join(directory, name), "wb") as handle:
                handle.write(data.numpy().tobytes())
        return CaptionTokenizer(load_hf_tokenizer(directory), max_length)
