"""One process per run folder: `RUN/run.lock` names the process that trains into it (pid, host, start time).

The lock is an `flock` on that file, so the operating system drops it when its process dies, however it
dies: a lock file left behind by `kill -9` is taken over by the next `zir train` (the pid it names is no
longer running). Where the file system cannot flock, a lock whose pid is gone on this host is taken over
and any other is refused. A second process is refused with one line naming the holder; the file is
removed when the holder releases it.
"""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import os
import socket
import time
from pathlib import Path

from zir.errors import ZirError

log = logging.getLogger("zir.train")
LOCK_FILE = "run.lock"

try:
    import fcntl
except ImportError:  # not on POSIX: the pid check alone
    fcntl = None


class RunInUse(ZirError):
    """Another live process trains into this run folder."""


def pid_alive(pid: int) -> bool:
    """Whether a process with this pid runs on this host (one of another user's counts as alive)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _gone(holder: dict) -> bool:
    """Whether a lock record names a process of this host that is no longer running."""
    return bool(holder.get("pid")) and holder.get("host") == socket.gethostname() and not pid_alive(int(holder["pid"]))


def _same_file(fd: int, path: Path) -> bool:
    try:
        return os.path.samestat(os.fstat(fd), os.stat(path))
    except OSError:
        return False


def _read(fd: int) -> dict:
    try:
        data = json.loads(os.pread(fd, 4096, 0).decode() or "{}")
    except (OSError, ValueError, UnicodeDecodeError):
        return {}
    return data if isinstance(data, dict) else {}


def describe(holder: dict) -> str:
    """'pid 123 on host h since 2026-01-01T10:00:00', from a lock record."""
    text = f"pid {holder.get('pid', '?')} on host {holder.get('host', '?')}"
    return text + (f" since {holder['started']}" if holder.get("started") else "")


class RunLock:
    """The lock of one run folder; `acquire()` or a RunInUse error, `release()` on every way out."""

    def __init__(self, run_dir: str | os.PathLike):
        self.path = Path(run_dir) / LOCK_FILE
        self._fd: int | None = None

    def _refuse(self, holder: dict) -> RunInUse:
        return RunInUse(f"run folder {self.path.parent} is in use by {describe(holder)} (lock file {self.path}); "
                        f"wait for it to end or stop it first")

    def _flock(self, fd: int) -> bool:
        """Take the flock without waiting: True, or False when another process holds it; without flock, the pid
        check decides (a live pid on this host, or any pid on another host, holds it)."""
        if fcntl is not None:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return True
            except OSError as err:
                if err.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                    return False
        holder = _read(fd)
        return not holder.get("pid") or int(holder["pid"]) == os.getpid() or _gone(holder)

    def acquire(self) -> "RunLock":
        """Hold the lock, taking over one whose process is gone; RunInUse naming the holder otherwise."""
        for _ in range(20):
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            if not self._flock(fd):
                holder = _read(fd)
                if _gone(holder) and _same_file(fd, self.path):
                    # the run died, but processes it forked (data loader workers) still hold the file for a
                    # moment: leave them that file and lock a new one
                    log.warning("run folder %s: took over the lock of %s (no longer running; its child processes "
                                "still held it)", self.path.parent, describe(holder))
                    os.unlink(self.path)
                    os.close(fd)
                    continue
                os.close(fd)
                raise self._refuse(holder)
            if not _same_file(fd, self.path):  # its holder removed the file between our open and flock: lock the new one
                os.close(fd)
                continue
            stale = _read(fd)
            if stale.get("pid"):
                log.warning("run folder %s: took over the lock left by %s (no longer running)", self.path.parent,
                            describe(stale))
            record = {"pid": os.getpid(), "host": socket.gethostname(), "started": time.strftime("%Y-%m-%dT%H:%M:%S")}
            os.ftruncate(fd, 0)
            os.pwrite(fd, json.dumps(record).encode(), 0)
            self._fd = fd
            return self
        raise self._refuse(_read_path(self.path))

    def release(self) -> None:
        """Remove the lock file and drop the lock (in that order, so no one locks a file about to vanish)."""
        if self._fd is None:
            return
        if _same_file(self._fd, self.path):
            with contextlib.suppress(OSError):
                os.unlink(self.path)
        os.close(self._fd)
        self._fd = None

    def __enter__(self) -> "RunLock":
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


def _read_path(path: Path) -> dict:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return {}
    try:
        return _read(fd)
    finally:
        os.close(fd)
