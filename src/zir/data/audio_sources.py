"""Audio sources: a folder of WAV files (labelled by class sub-folder) and the captions and prompts audio data uses.

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
from zir.data.sources import IMAGE_EXTENSIONS, MapSource, Sample
from zir.data.wav import AUDIO_EXTENSIONS, DEFAULT_MAX_SECONDS, decode_wav

AUDIO_CAPTION_TEMPLATES = ("the sound of {a} {c}.", "a recording of {a} {c}.", "{a} {c}.", "the sound of the {c}.")
AUDIO_PROMPTS = ("the sound of a {}.", "a recording of a {}.", "a {}.")
SPOKEN_WORD_TEMPLATES = ("{c}", "the digit {c}", "someone saying {c}", "the spoken word {c}", "a voice saying {c}")
SPOKEN_WORD_PROMPTS = ("{}", "the digit {}", "someone saying {}", "the spoken word {}", "a voice saying {}")


class AudioFolderSource(MapSource):
    """A folder of WAV files, labelled by class sub-folder (`root/CLASS/*.wav`) or unlabelled (any layout).

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
        audio, rate = decode_wav(path, key, notes, self.max_seconds)
        return Sample(key=key, audio=audio, sample_rate=rate, label=self._labels[index], notes=notes)

    def labels(self) -> np.ndarray | None:
        """Class index of every file (N,), or None for an unlabelled folder."""
        return np.asarray(self._labels, dtype=np.int64) if self.classes else None


def holds_audio_only(folder: Path) -> bool:
    """True when a folder (searched below) holds WAV files and no image: it opens as an `AudioFolderSource`."""
    audio = False
    for p in folder.rglob("*"):
        suffix = p.suffix.lower()
        if suffix in IMAGE_EXTENSIONS:
            return False
        audio = audio or suffix in AUDIO_EXTENSIONS
    return audio
