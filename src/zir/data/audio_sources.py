"""Audio sources: a folder of audio files (labelled by class sub-folder), a caption table of (audio path, caption)
rows, and the captions and prompts audio data uses.

A sample of an audio source carries `audio` (a mono float32 waveform at its file's `sample_rate`) and no
image; the loader resamples it to the audio tower's rate. Captions made from class names speak of sounds
(`the sound of a dog.`), not photos. The spoken-digit data set (`fsdd`, in `zir.data.builtin`) writes each
recording's word into `SPOKEN_WORD_TEMPLATES` (`seven` -> `the digit seven`, `someone saying seven`, ...).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from zir.data.limits import seconds_cap
from zir.data.paths import class_folders
from zir.data.sources import IMAGE_EXTENSIONS, CaptionTableSource, MapSource, Sample, read_table
from zir.errors import ConfigError
from zir.data.audio_decode import AUDIO_EXTENSIONS, decode_audio
from zir.data.wav import DEFAULT_MAX_SECONDS

AUDIO_CAPTION_TEMPLATES = ("the sound of {a} {c}.", "a recording of {a} {c}.", "{a} {c}.", "the sound of the {c}.")
AUDIO_PROMPTS = ("the sound of a {}.", "a recording of a {}.", "a {}.")
SPOKEN_WORD_TEMPLATES = ("{c}", "the digit {c}", "someone saying {c}", "the spoken word {c}", "a voice saying {c}")
SPOKEN_WORD_PROMPTS = ("{}", "the digit {}", "someone saying {}", "the spoken word {}", "a voice saying {}")


class AudioFolderSource(MapSource):
    """A folder of WAV, FLAC or OGG files, labelled by class sub-folder (`root/CLASS/*.wav`) or unlabelled.

    `max_seconds` refuses (counts) files whose header declares more audio, before reading their frames.
    """

    caption_templates = AUDIO_CAPTION_TEMPLATES
    zeroshot_templates = AUDIO_PROMPTS

    def __init__(self, root: str | os.PathLike, labeled: bool | None = None, *,
                 max_seconds: float | None = DEFAULT_MAX_SECONDS):
        self.root = Path(root)
        self.files, self._labels, classes = class_folders(self.root, AUDIO_EXTENSIONS, labeled, "audio")
        if classes is not None:
            self.classes = classes
        self.name = f"audio:{self.root}"
        self.max_seconds = seconds_cap(max_seconds)

    def __len__(self) -> int:
        """Number of audio files found."""
        return len(self.files)

    def get(self, index: int) -> Sample:
        """Decode file `index`; its label is the index of its class sub-folder (-1 when unlabelled)."""
        path = self.files[index]
        key = str(path.relative_to(self.root))
        notes: list[str] = []
        audio, rate = decode_audio(path, key, notes, self.max_seconds)
        return Sample(key=key, audio=audio, sample_rate=rate, label=self._labels[index], notes=notes)

    def labels(self) -> np.ndarray | None:
        """Class index of every file (N,), or None for an unlabelled folder."""
        return np.asarray(self._labels, dtype=np.int64) if self.classes else None


_AUDIO_COLUMNS = ("audio", "audio_path", "audio_file", "wav", "sound", "recording", "filepath", "file", "path",
                  "filename")
_IMAGE_ONLY_COLUMNS = ("image", "image_path", "img")


class AudioCaptionTableSource(CaptionTableSource):
    """A CSV, TSV or JSONL table of (audio path, caption) rows, as `CaptionTableSource` is for images.

    Paths are relative to the table's folder (absolute or `../` paths fail the table unless
    `allow_outside=True`); several rows of one file become one sample with all their captions; rows naming
    no file and files that do not decode (missing, truncated, silent, not audio) are skipped and counted.
    """

    media = "audio"
    media_columns = _AUDIO_COLUMNS
    caption_templates = AUDIO_CAPTION_TEMPLATES
    zeroshot_templates = AUDIO_PROMPTS

    def __init__(self, path: str | os.PathLike, audio_column: str | None = None, caption_column: str | None = None,
                 *, max_seconds: float | None = DEFAULT_MAX_SECONDS, allow_outside: bool = False):
        self.max_seconds = seconds_cap(max_seconds)
        self._load(path, audio_column, caption_column, allow_outside)
        self.audio_column = self.media_column
        self.name = f"audio-table:{self.path}"

    def _decode(self, rel: str, captions: list[str], notes: list[str]) -> Sample:
        """The recording `rel` (relative to the table's folder) with its captions."""
        audio, rate = decode_audio(self.base / rel, rel, notes, self.max_seconds)
        return Sample(key=rel, audio=audio, sample_rate=rate, captions=captions, notes=notes)


def table_holds_audio(path: str | os.PathLike, peek: int = 100) -> bool:
    """True when a caption table names recordings: a column called `audio` (`wav`, `sound`, ...) and none
    called `image`, or, in its file column, audio files (.wav, .flac, .ogg) among the first `peek` rows and no image."""
    try:
        rows, columns = read_table(Path(path), [])
    except (ConfigError, OSError):
        return False  # the image table reports it
    lower = {c.lower(): c for c in columns}
    if not any(c in lower for c in _IMAGE_ONLY_COLUMNS) and any(c in lower for c in _AUDIO_COLUMNS[:6]):
        return True
    column = next((lower[c] for c in _AUDIO_COLUMNS if c in lower), None)
    if column is None:
        return False
    suffixes = {Path(str(row.get(column) or "").strip()).suffix.lower() for _, row in rows[:peek]}
    return bool(suffixes & set(AUDIO_EXTENSIONS)) and not suffixes & set(IMAGE_EXTENSIONS)


def holds_audio_only(folder: Path) -> bool:
    """True when a folder (searched below) holds audio files and no image: it opens as an `AudioFolderSource`."""
    audio = False
    for p in folder.rglob("*"):
        suffix = p.suffix.lower()
        if suffix in IMAGE_EXTENSIONS:
            return False
        audio = audio or suffix in AUDIO_EXTENSIONS
    return audio
