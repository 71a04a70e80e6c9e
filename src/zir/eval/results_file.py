"""RUN/results.json across evaluations: each task's newest result, and its newest on every data set it met.

`zir eval` merges what it measured into the file. The plain key (`zeroshot`) is the task's newest result,
whatever data it was measured on, so a command's own numbers are where it wrote them (`zir eval RUN --tasks
zeroshot --data fsdd` -> `zeroshot.top1` on FSDD). A task measured on a second data set no longer overwrites
the first: from then on its result on each data set also stays under `<task>@<dataset>` (`zeroshot@fsdd`,
`zeroshot@av_digits`), each the newest on that data. A task only ever measured on one data set keeps one key.
"""

from __future__ import annotations

SEP = "@"


def merge_results(old: dict, new: dict) -> dict:
    """`old` (the file's contents) updated with `new` (one evaluation's task entries); returns the merged dict."""
    merged = dict(old)
    for key, entry in new.items():
        prev = merged.get(key)
        here = entry.get("dataset") if isinstance(entry, dict) else None
        there = prev.get("dataset") if isinstance(prev, dict) else None
        if here and there and here != there:
            merged[f"{key}{SEP}{there}"] = prev  # the plain key held the newest result on `there`
        if here and any(k.startswith(key + SEP) for k in merged):
            merged[f"{key}{SEP}{here}"] = entry
        merged[key] = entry
    return merged


def task_of(key: str) -> str:
    """A results.json key without its data set: `zeroshot@fsdd` -> `zeroshot`, `linear_val@cifar10` -> `linear_val`."""
    return key.split(SEP, 1)[0]


def repeats_plain(results: dict, key: str) -> bool:
    """True for a `<task>@<dataset>` key holding the same result as its plain key (shown once in tables)."""
    base, sep, _ = key.partition(SEP)
    return bool(sep) and results.get(base) == results.get(key)
