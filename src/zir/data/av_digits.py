"""`av_digits`: spoken digits paired with handwritten digits, as the AV-MNIST benchmark (Vielzeuf et al. 2018).

Each FSDD recording (real speech, `DATA_ROOT/fsdd`) is paired with one image of the same digit from
scikit-learn's `load_digits` (8x8, upscaled to `size`) and keeps its spoken-word captions (`the digit
seven`, ...), so a sample carries all three modalities. The pairing is fixed (a hash of the recording's key
picks the image among its digit's), so every epoch and every process sees the same pairs. The splits keep
test data out of training on both sides: `test` pairs FSDD's test recordings (recordings 0-4 of every
speaker and digit, never in `train`) with the images of the digits' stratified `test` split; `train` pairs
FSDD's training recordings with the `train` images. All six speakers are heard in both splits, as in
FSDD's own split; `split_by: speaker` (`data.options: {split_by: speaker, test_speakers: [theo]}`, as for
`fsdd`) holds out every recording of the test speakers instead, so `test` is voices never heard in training.
"""

from __future__ import annotations

import zlib

import numpy as np

from zir.data.audio_sources import SPOKEN_WORD_PROMPTS
from zir.data.sources import BadSample, MapSource, Sample, check_split
from zir.data.speaker_split import DEFAULT_TEST_SPEAKERS

AV_SPLITS = ("train", "test")


class AudioVisualDigits(MapSource):
    """FSDD recordings (read once into memory: 2,700 + 300 short clips) each with an image of its digit."""

    has_captions = True
    zeroshot_templates = SPOKEN_WORD_PROMPTS

    def __init__(self, recordings, images, image_labels, image_keys, classes, name: str, speakers=None):
        """`recordings`: the FSDD split's Samples (BadSample for unusable ones, kept to be counted);
        `images` (M, S, S, 3) uint8 digit images with their `image_labels` (M,) and `image_keys` (M,);
        `speakers`: each recording's speaker when the split is by speaker, else None."""
        self.recordings, self.images, self.image_keys = list(recordings), images, list(image_keys)
        self.speakers = None if speakers is None else list(speakers)
        self.classes, self.name = tuple(classes), name
        self.image_size = int(images.shape[1])
        self._by_digit = {d: np.nonzero(np.asarray(image_labels) == d)[0] for d in range(len(self.classes))}
        self._labels = np.asarray([r.label if isinstance(r, Sample) else -1 for r in self.recordings], np.int64)

    def __len__(self) -> int:
        """Number of recordings (each one sample)."""
        return len(self.recordings)

    def image_index(self, index: int) -> int:
        """Index into `images` of the digit image paired with recording `index` (fixed by its key)."""
        rec = self.recordings[index]
        pool = self._by_digit[rec.label]
        return int(pool[zlib.crc32(rec.key.encode()) % len(pool)])

    def get(self, index: int) -> Sample:
        """Recording `index` with its paired digit image, its digit as the label and its spoken-word captions."""
        rec = self.recordings[index]
        if isinstance(rec, BadSample):
            raise rec
        return Sample(key=rec.key, image=self.images[self.image_index(index)], label=rec.label,
                      captions=list(rec.captions), notes=list(rec.notes), audio=rec.audio, sample_rate=rec.sample_rate)

    def labels(self) -> np.ndarray:
        """The digit of every recording (N,); -1 for an unusable one."""
        return self._labels


def av_digits(split: str = "train", *, data_root=None, size: int = 32, split_by: str = "recording",
              test_speakers=DEFAULT_TEST_SPEAKERS) -> AudioVisualDigits:
    """The audio-visual digits of `split` (train, test): FSDD from DATA_ROOT/fsdd (split by recording, or by
    speaker with `split_by="speaker"`), images from scikit-learn."""
    from zir.data.builtin import digits, fsdd

    check_split("av_digits", split, AV_SPLITS)
    speech = fsdd(split, data_root=data_root, split_by=split_by, test_speakers=test_speakers)
    pictures = digits(split, size=size)
    speakers = getattr(speech, "speakers", None)
    name = f"av_digits:{split}" + (":by-speaker" if speakers is not None else "")
    return AudioVisualDigits(speech.stream(), pictures.images, pictures.labels(), pictures.keys, speech.classes,
                             name, speakers)
