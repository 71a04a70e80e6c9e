"""CLIP's byte-level BPE from its merges file (OpenAI's and open_clip's `bpe_simple_vocab_16e6.txt.gz`).

The file lists merges, one `a b` pair a line after a version line. CLIP's vocabulary is built from it: the 256
byte symbols, the same with the end-of-word mark `</w>`, the first 48,894 merges, then `<start_of_text>` and
`<end_of_text>`: 49,408 ids, the end token last (open_clip pools at the highest id). Text is NFC-normalised,
whitespace runs collapsed and lowercased, split into letter runs, single digits and punctuation runs, then
byte-encoded and merged. OpenAI's tokenizer also repairs mojibake with `ftfy` and unescapes HTML first, which
this one does not do. Rows are padded with 0 and cut to the context with the end token kept, as open_clip does.
"""

from __future__ import annotations

import gzip
import os
from pathlib import Path

from zir.errors import ConfigError

SOT, EOT = "<start_of_text>", "<end_of_text>"
CLIP_MERGES = 49152 - 256 - 2  # 48,894 merges: a 49,408-token vocabulary
SPLIT = r"<start_of_text>|<end_of_text>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+"


def byte_symbols() -> list[str]:
    """The 256 printable characters byte-level BPEs stand bytes for, in CLIP's vocabulary order (printable first)."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    others = [b for b in range(256) if b not in printable]
    return [chr(b) for b in printable] + [chr(256 + i) for i in range(len(others))]


def is_merges_file(path: Path) -> bool:
    """Whether `path` is a BPE merges file (`.txt` or `.txt.gz` starting with a `#version` line)."""
    if not path.is_file() or not path.name.endswith((".txt", ".txt.gz")):
        return False
    try:
        opener = gzip.open if path.name.endswith(".gz") else open
        with opener(path, "rt", encoding="utf-8") as handle:
            return handle.readline().startswith("#version")
    except (OSError, UnicodeDecodeError, EOFError):
        return False


def clip_bpe_tokenizer(path: str | os.PathLike, context_length: int = 77):
    """A `TextTokenizer` for CLIP's merges file at `path` (padded with 0, end token kept when cut)."""
    from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors

    from zir.data.tokenizer import TextTokenizer

    path = Path(path)
    if not is_merges_file(path):
        raise ConfigError(f"tokenizer {path}: not a BPE merges file (.txt or .txt.gz starting with #version)")
    opener = gzip.open if path.name.endswith(".gz") else open
    with opener(path, "rt", encoding="utf-8") as handle:
        lines = handle.read().split("\n")[1:]
    merges = [tuple(line.split()) for line in lines if len(line.split()) == 2][:CLIP_MERGES]
    symbols = byte_symbols()
    tokens = symbols + [s + "</w>" for s in symbols] + ["".join(m) for m in merges] + [SOT, EOT]
    vocab = {t: i for i, t in enumerate(tokens)}
    if len(vocab) != len(tokens):
        raise ConfigError(f"tokenizer {path}: its merges repeat a token; not a CLIP merges file")
    tok = Tokenizer(models.BPE(vocab=vocab, merges=merges, end_of_word_suffix="</w>", continuing_subword_prefix="",
                               unk_token=EOT, fuse_unk=False))
    tok.add_special_tokens([SOT, EOT])
    tok.normalizer = normalizers.Sequence([normalizers.NFC(), normalizers.Replace(Regex(r"\s+"), " "),
                                           normalizers.Lowercase()])
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(SPLIT), behavior="removed", invert=True),
        pre_tokenizers.ByteLevel(add_prefix_space=False)])
    tok.decoder = decoders.ByteLevel()
    sot, eot = vocab[SOT], vocab[EOT]
    tok.post_processor = processors.TemplateProcessing(single=f"{SOT} $A {EOT}", special_tokens=[(SOT, sot), (EOT, eot)])
    return TextTokenizer(tok, context_length, pad_id=0, eot_id=eot, sot_id=sot)
