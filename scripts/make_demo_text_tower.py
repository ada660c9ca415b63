"""Create the demo text tower: a byte-level BPE tokenizer trained on the captions plus a small RoBERTa
config, saved as a Hugging Face directory (no weights: init.py builds it with pretrained: false).

    python scripts/make_demo_text_tower.py --data datasets/demo/train --out pretrains/demo-roberta

--data takes whatever train.py's train-data takes (a dataset folder, webdataset shards, img2dataset's files or
parquet output), with --caption-key as there.
"""
import argparse
import json
import os
import sys
import tempfile

from tokenizers import ByteLevelBPETokenizer
from transformers import BertConfig, BertTokenizerFast, RobertaConfig, RobertaTokenizerFast

from data.sources import open_source
from utils.errors import UserError

SPECIAL_TOKENS = ["<s>", "<pad>", "</s>", "<unk>", "<mask>"]


MAX_CAPTIONS = 1_000_000  # a vocabulary needs no more; read once from any data source


def read_captions(value, caption_key="txt", limit=MAX_CAPTIONS):
    """Up to ``limit`` captions of the data source ``value`` (see data/sources.py)."""
    return open_source(value, caption_key).captions(limit)


def build_tokenizer(captions, vocab_size):
    """Byte-level BPE (RoBERTa's scheme) trained on ``captions``, as a RobertaTokenizerFast."""
    bpe = ByteLevelBPETokenizer()
    bpe.train_from_iterator(captions, vocab_size=vocab_size, min_frequency=2, special_tokens=SPECIAL_TOKENS,
                            show_progress=False)
    with tempfile.TemporaryDirectory() as directory:
        vocab_path, merges_path = bpe.save_model(directory)
        with open(vocab_path, encoding="utf-8") as handle:
            vocab = json.load(handle)
        with open(merges_path, encoding="utf-8") as handle:
            merges = [tuple(line.split()) for line in handle if line.strip() and not line.startswith("#version")]
    return RobertaTokenizerFast(vocab=vocab, merges=merges)


def build_chinese_tokenizer(captions):
    """A character vocabulary as a BertTokenizerFast: the layout of Chinese encoders such as
    chinese-roberta-wwm-ext (BERT tokenizer and model, though named RoBERTa)."""
    characters = sorted({ch for caption in captions for ch in caption if not ch.isspace()})
    tokens = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + characters
    return BertTokenizerFast(vocab={token: index for index, token in enumerate(tokens)},
                             tokenize_chinese_chars=True, do_lower_case=True)


def write_chinese_text_tower(captions, out, hidden_size=128, layers=2, heads=4, max_length=64):
    """Write a character-level BERT tokenizer and a BertConfig (no weights) to ``out``; return the tokenizer."""
    tokenizer = build_chinese_tokenizer(captions)
    config = BertConfig(vocab_size=len(tokenizer), hidden_size=hidden_size, num_hidden_layers=layers,
                        num_attention_heads=heads, intermediate_size=4 * hidden_size,
                        max_position_embeddings=max_length, pad_token_id=tokenizer.pad_token_id)
    os.makedirs(out, exist_ok=True)
    tokenizer.save_pretrained(out)
    config.save_pretrained(out)
    return tokenizer


def write_text_tower(captions, out, vocab_size=1000, hidden_size=128, layers=2, heads=4, max_length=64):
    """Write tokenizer files and a RoBERTa config.json (no weights) to ``out``; return the tokenizer."""
    tokenizer = build_tokenizer(captions, vocab_size)
    config = RobertaConfig(
        vocab_size=len(tokenizer), hidden_size=hidden_size, num_hidden_layers=layers,
        num_attention_heads=heads, intermediate_size=4 * hidden_size, max_position_embeddings=max_length + 2,
        type_vocab_size=1, pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id)
    os.makedirs(out, exist_ok=True)
    tokenizer.save_pretrained(out)
    config.save_pretrained(out)
    return tokenizer


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", nargs="+", default=["datasets/demo/train"],
                        help="data sources the tokenizer learns its vocabulary from (as train.py's train-data)")
    parser.add_argument("--caption-key", default="txt", help="as train.py's caption-key")
    parser.add_argument("--out", default="pretrains/demo-roberta")
    parser.add_argument("--vocab-size", type=int, default=1000)
    parser.add_argument("--hidden-size", type=int, default=128)
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--heads", type=int, default=4)
    parser.add_argument("--max-length", type=int, default=64)
    parser.add_argument("--lang", choices=("en", "zh"), default="en",
                        help="en: byte-level BPE + RoBERTa; zh: character vocabulary + BERT (as Chinese RoBERTa-wwm)")
    args = parser.parse_args(argv)
    try:
        captions = [caption for value in args.data for caption in read_captions(value, args.caption_key)]
    except UserError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    if args.lang == "zh":
        tokenizer = write_chinese_text_tower(captions, args.out, args.hidden_size, args.layers, args.heads,
                                             args.max_length)
    else:
        tokenizer = write_text_tower(captions, args.out, args.vocab_size, args.hidden_size, args.layers, args.heads,
                                     args.max_length)
    print(f"wrote {args.out}: vocabulary {len(tokenizer)}, {'BERT' if args.lang == 'zh' else 'RoBERTa'} "
          f"{args.layers} layers x {args.hidden_size}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
