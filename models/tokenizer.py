"""Caption tokenizer: list of strings -> padded LongTensor, as open_clip's tokenizers do."""
import os
import tempfile

import torch
from transformers import AutoTokenizer

from utils.errors import UserError, first_line

# A working tokenizer gives each of these its own ids. They differ in language and length, so even a vocabulary
# that lacks their words (every one an unknown token) separates them; an empty one (its files missing) does not.
PROBE_CAPTIONS = ("a photo of a cat", "two dogs running on the grass", "一只猫", "两只狗在草地上奔跑")
MIN_VOCABULARY = 8  # special tokens alone are 2 to 5; real vocabularies hold thousands
# A Hugging Face tokenizer reads its vocabulary from one of these (SentencePiece and tiktoken files by suffix).
VOCABULARY_FILES = ("tokenizer.json", "vocab.json", "vocab.txt", "merges.txt")
VOCABULARY_SUFFIXES = (".model", ".spm", ".tiktoken")


def check_tokenizer(tokenize, vocabulary_size, where):
    """Raise a UserError unless the tokenizer has a vocabulary and tells ``PROBE_CAPTIONS`` apart.

    tokenize: list[str] -> rows of ids, padded to one length (LongTensor[B, L] or lists); where: what to name
    in the message (a directory, "the checkpoint"). Pitfall: a tokenizer built without its vocabulary files
    loads without complaint and maps every caption to the same few ids.
    """
    if vocabulary_size < MIN_VOCABULARY:
        raise UserError(f"the tokenizer of {where} has only {vocabulary_size} tokens in its vocabulary (a working "
                        f"one has thousands): its vocabulary files are missing or incomplete")
    rows = tokenize(list(PROBE_CAPTIONS))
    rows = [tuple(row) for row in (rows.tolist() if isinstance(rows, torch.Tensor) else rows)]
    for i, row in enumerate(rows):
        if row in rows[:i]:
            first = PROBE_CAPTIONS[rows.index(row)]
            raise UserError(f"the tokenizer of {where} gives '{first}' and '{PROBE_CAPTIONS[i]}' the same ids: its "
                            f"vocabulary files are missing or broken")


def check_hf_tokenizer(hf_tokenizer, where):
    """``check_tokenizer`` for a Hugging Face tokenizer, its rows right-padded as ``CaptionTokenizer`` pads."""

    def tokenize(texts):
        rows = hf_tokenizer(texts)["input_ids"]
        pad = -1 if hf_tokenizer.pad_token_id is None else hf_tokenizer.pad_token_id
        length = max(len(row) for row in rows)
        return [list(row) + [pad] * (length - len(row)) for row in rows]

    check_tokenizer(tokenize, len(hf_tokenizer), where)


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


def load_hf_tokenizer(path, where=None):
    """AutoTokenizer from a local directory, checked with ``check_hf_tokenizer``; a UserError naming ``where``
    (default: the directory) when its files are missing or it cannot be read."""
    where = where or f"'{path}'"
    if not any(name in VOCABULARY_FILES or name.endswith(VOCABULARY_SUFFIXES)
           for name in (os.listdir(path) if os.path.isdir(path) else ())):
        raise UserError(f"{where} has no tokenizer files (tokenizer.json, vocab.json + merges.txt, vocab.txt or a "
                        f"SentencePiece .model): copy the model's tokenizer files there")
    try:
        hf_tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
    except (OSError, ValueError, TypeError) as error:
        raise UserError(f"tokenizer in {where} could not be loaded: {first_line(error)}") from None
    check_hf_tokenizer(hf_tokenizer, where)
    return hf_tokenizer


def tokenizer_from_files(files, max_length):
    """Rebuild a CaptionTokenizer (or an imported CLIP's OpenClipTokenizer) from ``to_files()`` output."""
    from models.open_clip_tower import BPE_FILE, tokenizer_from_bpe_bytes

    if set(files) == {BPE_FILE}:
        return tokenizer_from_bpe_bytes(files[BPE_FILE].numpy().tobytes(), max_length, where="the checkpoint")
    with tempfile.TemporaryDirectory() as directory:
        for name, data in files.items():
            if not isinstance(name, str) or os.path.basename(name) != name or name in ("", ".", ".."):
                raise UserError(f"checkpoint tokenizer file name '{name}' is not a plain file name")
            with open(os.path.join(directory, name), "wb") as handle:
                handle.write(data.numpy().tobytes())
        return CaptionTokenizer(load_hf_tokenizer(directory, where="the checkpoint"), max_length)
