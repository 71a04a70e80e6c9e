"""The run folder around a start or resume: created with one-line errors, locked for one process, and left
as it was when the start fails (a new folder is removed again; an existing one keeps every byte).

`claimed(run_dir, create=..., main=...)` wraps a start: rank 0 creates the folder (and missing parents) and
takes its lock; if the start fails before the run has written anything, the folders it created are removed
again. `RunLog` keeps log records in memory until the run starts, so a refused start writes no train.log.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import sys
from pathlib import Path
from typing import Iterator

from zir.errors import ConfigError
from zir.train.run_lock import RunLock


def launched_as_rank0() -> bool:
    """Whether torchrun made this process rank 0 (or it is the only one): the one that owns the run folder."""
    return int(os.environ.get("RANK", "0")) == 0


def create_run_dir(run_dir: Path) -> list[Path]:
    """Make `run_dir` and its missing parents; the folders made, outermost first. One-line ConfigError when
    it is a file, lies under a file, or cannot be created (permissions)."""
    missing, p = [], run_dir
    while not p.exists() and not p.is_symlink() and p != p.parent:
        missing.append(p)
        p = p.parent
    if not p.is_dir():
        what = "is an existing file" if p == run_dir else f"cannot be created: {p} is a file"
        raise ConfigError(f"run folder {run_dir} {what}; choose another --out")
    made: list[Path] = []
    try:
        for folder in reversed(missing):
            try:
                folder.mkdir()
            except FileExistsError:
                if folder.is_dir():  # made meanwhile by another process (runs started side by side)
                    continue
                raise
            made.append(folder)
    except OSError as err:
        remove_empty(made)
        raise ConfigError(f"run folder {run_dir} cannot be created: {err.strerror or err} ({err.filename or folder})") from None
    if not os.access(run_dir, os.W_OK | os.X_OK):
        raise ConfigError(f"run folder {run_dir} is not writable; choose another --out")
    return made


def keep_tokenizer(tokenizer: Path, run_dir: Path) -> None:
    """Copy the run's caption tokenizer to RUN/tokenizer.json (atomically), so the folder stays self-contained:
    `zir eval RUN` reads it from any working directory, whatever path or shipped name the recipe gave."""
    source = tokenizer / "tokenizer.json" if tokenizer.is_dir() else tokenizer
    target = run_dir / "tokenizer.json"
    if target.exists() and os.path.samefile(source, target):
        return
    tmp = target.with_name(target.name + ".tmp")
    shutil.copyfile(source, tmp)
    os.replace(tmp, target)


def remove_empty(folders: list[Path]) -> None:
    """Remove these folders, innermost first, while they are empty."""
    for folder in reversed(folders):
        try:
            folder.rmdir()
        except OSError:
            return


@contextlib.contextmanager
def claimed(run_dir: Path, *, create: bool, main: bool) -> Iterator[None]:
    """The run folder, created (when `create`) and locked by rank 0 for the duration; other ranks only pass."""
    if not main:
        yield
        return
    made = create_run_dir(run_dir) if create else []
    lock = RunLock(run_dir)
    try:
        lock.acquire()
    except OSError as err:
        remove_empty(made)
        raise ConfigError(f"run folder {run_dir}: cannot write its lock file ({err.strerror or err})") from None
    except BaseException:
        remove_empty(made)
        raise
    try:
        yield
    finally:
        lock.release()
        remove_empty(made)  # only when the run never started: a started run has written files into it


class _Held(logging.Handler):
    """Keeps records in memory."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


class RunLog:
    """RUN/train.log on rank 0, opened only by `start()`; records logged before it are written then."""

    def __init__(self, run_dir: Path, logger: logging.Logger):
        self.run_dir, self.logger = run_dir, logger
        self.held, self.file = _Held(), None
        logger.addHandler(self.held)

    def start(self) -> None:
        """Open train.log (appending) and write what was held back."""
        self.file = logging.FileHandler(self.run_dir / "train.log")
        self.file.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        self.logger.removeHandler(self.held)
        for record in self.held.records:
            self.file.handle(record)
        self.held.records.clear()
        self.logger.addHandler(self.file)

    def close(self) -> None:
        """Detach and close; records never written (a start that failed) are dropped."""
        self.logger.removeHandler(self.held)
        if self.file is not None:
            self.logger.removeHandler(self.file)
            self.file.close()


class _Stderr(logging.Handler):
    """Log lines to whatever sys.stderr is at the time (so captured and redirected streams get them)."""

    def emit(self, record: logging.LogRecord) -> None:
        print(self.format(record), file=sys.stderr, flush=True)


def setup_logging(run_dir: Path, main: bool) -> RunLog | None:
    """Console lines (INFO on rank 0, warnings elsewhere) and, on rank 0, RUN/train.log once the run starts."""
    logger = logging.getLogger("zir")
    logger.setLevel(logging.INFO)
    if not any(isinstance(h, _Stderr) for h in logger.handlers):
        console = _Stderr(logging.INFO if main else logging.WARNING)
        console.setFormatter(logging.Formatter("%(levelname)s: %(message)s"))
        logger.addHandler(console)
    return RunLog(run_dir, logger) if main else None
