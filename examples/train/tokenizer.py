"""A byte-level BPE tokenizer trained with the ``tokenizers`` library, saved as ``tokenizer.json``.

Byte-level so that any text round-trips exactly (code has tabs, odd Unicode in strings,
trailing spaces), with GPT-2's pre-tokeniser split (runs of spaces become their own tokens,
so indentation costs a token or two per line).

The vocabulary size is a byte budget: embedding and lm_head are ``vocab x hidden`` bf16 each,
``2 x 2 x vocab x hidden`` bytes: 4 MiB at vocab 4096 / hidden 256, 8 MiB at 8192. With the
MXFP4 experts (~8.4 MB) and the drafter (~5 MB) the 25 MB budget leaves room for 4096 and
not for 8192. A small vocabulary also suits speculation: tokens are shorter and more
predictable, so more of each block is accepted.

Two special tokens, ids 0 and 1: ``<|endoftext|>`` separates files (and stops generation),
``<|mask|>`` is the drafter's ``mask_token_id`` (its MASK slots use a learned embedding;
the id only has to exist and never be produced by the text).
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

EOT = "<|endoftext|>"
MASK = "<|mask|>"
SPECIALS = (EOT, MASK)
FILENAME = "tokenizer.json"


def train_tokenizer(texts: Sequence[str], vocab_size: int) -> Tokenizer:
    """Train a byte-level BPE of ``vocab_size`` tokens (specials and the 256 bytes included)."""
    if vocab_size < 256 + len(SPECIALS) + 1:
        raise ValueError(f"vocab_size {vocab_size} cannot hold the 256 bytes, the specials and one merge")
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, min_frequency=2, special_tokens=list(SPECIALS),
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(texts, trainer=trainer, length=len(texts))
    return tok


def save_tokenizer(tok: Tokenizer, directory: str | Path) -> Path:
    path = Path(directory) / FILENAME
    tok.save(str(path))
    return path


def load_tokenizer(path: str | Path) -> Tokenizer:
    """From ``tokenizer.json`` or the directory holding it."""
    path = Path(path)
    return Tokenizer.from_file(str(path / FILENAME if path.is_dir() else path))


def eot_id(tok: Tokenizer) -> int:
    return _special(tok, EOT)


def mask_id(tok: Tokenizer) -> int:
    return _special(tok, MASK)


def _special(tok: Tokenizer, text: str) -> int:
    i = tok.token_to_id(text)
    if i is None:
        raise ValueError(f"tokenizer has no {text!r} token; train it with examples/train/tokenizer.py")
    return i
