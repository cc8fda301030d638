"""Opening a file a user names, without letting the name hang or exhaust lbctl.

A path in a config, an option or a discovery setting may name something that is not a file:
``/dev/zero`` (endless), ``/dev/stdin`` on a terminal, a directory, or a FIFO nobody writes
to (opening it blocks until someone does). Every read of such a path goes through here:

* ``read_bytes(path, limit)`` reads a whole file of at most ``limit`` bytes. Regular files
  and pipes (``lbctl validate <(generate-config)``) are read; devices and directories are
  refused, and anything longer than ``limit`` is refused after ``limit + 1`` bytes.
  ``regular_only=True`` also refuses FIFOs and opens without blocking: for reads on the
  proxy's event loop (a discovery file), where a FIFO would stop the whole process.
* ``open_stream(path)`` opens a file to read line by line (an access log to replay), with
  the same refusal of devices and directories.

Failures are ``FileProblem``, whose ``str()`` completes "cannot read PATH: ..." and never
holds a traceback. Standard library only: every package may use it.
"""

from __future__ import annotations

import errno
import os
import stat
from typing import BinaryIO


class FileProblem(OSError):
    """Why a named file cannot be read, in a few words (``str()``)."""

    def __init__(self, reason: str, error: int | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.code = error

    def __str__(self) -> str:
        return self.reason


def _kind(mode: int) -> str | None:
    """What a non-file is, in words; None for what may be read."""
    if stat.S_ISDIR(mode):
        return "it is a directory"
    if stat.S_ISCHR(mode):
        return "it is a character device, not a file"
    if stat.S_ISBLK(mode):
        return "it is a block device, not a file"
    if stat.S_ISSOCK(mode):
        return "it is a socket, not a file"
    return None


def _reason(exc: OSError) -> str:
    if exc.errno == errno.ENOENT:
        return "it does not exist"
    if exc.errno == errno.EISDIR:
        return "it is a directory"
    return exc.strerror or str(exc)


def _open(path: str | os.PathLike[str], regular_only: bool) -> int:
    """A file descriptor open for reading, after the kind checks."""
    flags = os.O_RDONLY | getattr(os, "O_CLOEXEC", 0)
    if regular_only:
        # A FIFO opened for reading blocks until a writer comes: never on the event loop.
        flags |= getattr(os, "O_NONBLOCK", 0)
    else:
        try:
            kind = _kind(os.stat(path).st_mode)
        except OSError as exc:
            raise FileProblem(_reason(exc), exc.errno) from None
        if kind is not None:
            raise FileProblem(kind)
    try:
        fd = os.open(path, flags)
    except OSError as exc:
        raise FileProblem(_reason(exc), exc.errno) from None
    try:
        mode = os.fstat(fd).st_mode
        kind = _kind(mode)
        if kind is None and regular_only and not stat.S_ISREG(mode):
            kind = "it is a FIFO, not a regular file"
        if kind is not None:
            raise FileProblem(kind)
        if regular_only and hasattr(os, "set_blocking"):
            os.set_blocking(fd, True)
    except BaseException:
        os.close(fd)
        raise
    return fd


def read_bytes(path: str | os.PathLike[str], limit: int, *, regular_only: bool = False) -> bytes:
    """The file's bytes; ``FileProblem`` when it cannot be read or is larger than ``limit``."""
    fd = _open(path, regular_only)
    with os.fdopen(fd, "rb") as f:
        try:
            data = f.read(limit + 1)
        except OSError as exc:
            raise FileProblem(_reason(exc), exc.errno) from None
    if len(data) > limit:
        raise FileProblem(f"it is larger than {describe_size(limit)}")
    return data


def open_stream(path: str | os.PathLike[str]) -> BinaryIO:
    """The file open for reading in binary, after the kind checks; ``FileProblem`` if not."""
    return os.fdopen(_open(path, False), "rb")


def describe_size(size: int) -> str:
    for unit, factor in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if size >= factor and size % factor == 0:
            return f"{size // factor} {unit}"
    return f"{size} bytes"
