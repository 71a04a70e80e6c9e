"""FSDD split by speaker: the `test` split holds every recording of the held-out speakers, `train` the others'.

FSDD's own split (`split_by: recording`) holds out recordings 0-4 of every speaker and digit, so a model is
tested on voices it trained on. `split_by: speaker` (`data.options: {split_by: speaker, test_speakers:
[theo]}`) reads both of FSDD's shards, takes each recording's speaker from its `.json`, and keeps the
held-out speakers' recordings (from either shard) for `test` only: generalisation to a new voice. The
recordings (3,000 short clips) are decoded once into memory, as `av_digits` does.
"""

from __future__ import annotations

import json

import numpy as np

from zir.data.audio_sources import SPOKEN_WORD_PROMPTS
from zir.data.shards import decode_record
from zir.data.sources import BadSample, MapSource, Sample
from zir.errors import ConfigError

SPLIT_BY = ("recording", "speaker")
DEFAULT_TEST_SPEAKERS = ("theo",)


def record_speaker(record: dict) -> str | None:
    """The speaker named in a raw shard record's `.json`, or None when it names none."""
    try:
        meta = json.loads(record["json"].decode("utf-8")) if "json" in record else {}
    except (UnicodeDecodeError, json.JSONDecodeError):
        return None
    speaker = meta.get("speaker") if isinstance(meta, dict) else None
    return speaker if isinstance(speaker, str) else None


class SpeakerSplit(MapSource):
    """The recordings of some speakers (held out: `test`) or of all the others (`train`), in memory."""

    has_captions = True
    zeroshot_templates = SPOKEN_WORD_PROMPTS

    def __init__(self, recordings: list, speakers: list[str | None], classes, name: str, caption_templates):
        self.recordings, self.speakers = recordings, speakers
        self.classes, self.name, self.caption_templates = tuple(classes), name, caption_templates
        self._labels = np.asarray([r.label if isinstance(r, Sample) else -1 for r in recordings], np.int64)

    def __len__(self) -> int:
        """Number of recordings in this split."""
        return len(self.recordings)

    def get(self, index: int) -> Sample:
        """Recording `index`: its audio, its digit as the label and its spoken-word captions."""
        rec = self.recordings[index]
        if isinstance(rec, BadSample):
            raise rec
        return rec

    def labels(self) -> np.ndarray:
        """The digit of every recording (N,); -1 for an unusable one."""
        return self._labels

    def stream(self):
        """The recordings in order, BadSample values included (what `av_digits` reads)."""
        return iter(self.recordings)


def by_speaker(shards: list, split: str, test_speakers) -> SpeakerSplit:
    """`split` (train, test) of FSDD's shard sources (train and test) regrouped so `test_speakers` are `test` only."""
    if isinstance(test_speakers, str) or not test_speakers or not all(isinstance(s, str) for s in test_speakers):
        raise ConfigError(f"fsdd option test_speakers={test_speakers!r}: expected a non-empty list of speaker names")
    held_out = set(test_speakers)
    recordings, speakers, seen = [], [], set()
    for source in shards:
        templates = source.caption_templates if source.expand_captions else None
        for record in source.records():
            if isinstance(record, BadSample):
                if split == "train":  # damage is counted once, in train
                    recordings.append(record)
                    speakers.append(None)
                continue
            speaker = record_speaker(record)
            seen.add(speaker)
            if (speaker in held_out) != (split == "test"):
                continue
            try:
                sample = decode_record(record, source.classes, None, source.max_seconds, templates)
            except BadSample as bad:
                sample = bad
            recordings.append(sample)
            speakers.append(speaker)
    unknown = held_out - seen
    if unknown:
        names = ", ".join(sorted(s for s in seen if s))
        raise ConfigError(f"fsdd option test_speakers: {', '.join(sorted(unknown))} not among the speakers ({names})")
    return SpeakerSplit(recordings, speakers, shards[0].classes, f"fsdd:{split}:by-speaker",
                        shards[0].caption_templates)

