"""``lbctl serve --pid-file PATH``: the pid of the running serve, for scripts and supervisors.

The file is written after the listener is bound (a pid file means "serving"), atomically
(``os.link`` of a complete temporary file: a reader never sees it half-written, and two
serves starting at once cannot both win), and removed on exit, but only while it still names
this process. A file left by a process that died (a crash, SIGKILL) is taken over with a
warning; a file naming a live process is refused before anything is started.
"""

from __future__ import annotations

import errno
import logging
import os
import re
import tempfile
from pathlib import Path

from lbctl.errors import UserError
from lbctl.exitcodes import Exit
from lbctl.files import FileProblem, read_bytes

log = logging.getLogger("lbctl")

MAX_PID_FILE = 64           # a pid and a newline; more is not a pid file
MAX_PID = 2**31 - 1         # pid_t; the kernel's own limit (pid_max) is lower
_DIGITS = re.compile(r"[0-9]+")


def read_pid(path: str | os.PathLike[str]) -> int | None:
    """The pid in ``path``; None when the file is missing. Damaged content is a UserError."""
    try:
        raw = read_bytes(path, MAX_PID_FILE)
    except FileProblem as exc:
        if exc.code == errno.ENOENT:
            return None
        raise UserError(f"pid file {path}: cannot read: {exc}", exit_code=Exit.RUNTIME) from None
    text = raw.decode("ascii", errors="replace").strip()
    # ASCII digits only (str.isdigit takes other scripts' digits too), and a number that
    # can be a process id: os.kill of a larger one would overflow.
    if not _DIGITS.fullmatch(text) or not 0 < int(text) <= MAX_PID:
        raise UserError(f"pid file {path}: expected a process id, found {text[:20]!r}",
                        exit_code=Exit.RUNTIME)
    return int(text)


def alive(pid: int) -> bool:
    """Whether a process with this pid exists (it may belong to another user)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def check_pid_file(path: str | os.PathLike[str]) -> None:
    """Refuse to start when ``path`` names a live process (before anything is bound)."""
    try:
        pid = read_pid(path)
    except UserError:
        return                  # damaged: whatever wrote it is not a serve we can talk to
    if pid is not None and pid != os.getpid() and alive(pid):
        raise UserError(f"pid file {path}: lbctl is already running as pid {pid} "
                        f"(stop it first, or reload it: lbctl reload CONFIG --pid-file {path})",
                        exit_code=Exit.RUNTIME)


def write_pid_file(path: str | os.PathLike[str]) -> None:
    """Write this process's pid to ``path``; a stale file is replaced, a live one refused."""
    target = Path(path)
    try:
        fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    except OSError as exc:
        raise UserError(f"pid file {path}: cannot write: {exc.strerror or exc}",
                        exit_code=Exit.RUNTIME) from None
    try:
        with os.fdopen(fd, "w", encoding="ascii") as f:
            f.write(f"{os.getpid()}\n")
        os.chmod(tmp, 0o644)
        for _ in range(2):
            try:
                os.link(tmp, target)        # fails if it exists: no two writers both win
                return
            except FileExistsError:
                check_pid_file(target)      # live: refused here
                try:
                    stale = read_pid(target)
                except UserError:
                    stale = None
                log.warning("pid file %s: taking it over from pid %s, which is not running",
                            path, stale if stale is not None else "(unreadable)",
                            extra={"event": "pid_file_stale", "path": str(path)})
                try:
                    os.unlink(target)
                except FileNotFoundError:
                    pass
        raise UserError(f"pid file {path}: another process keeps writing it",
                        exit_code=Exit.RUNTIME)
    except OSError as exc:
        raise UserError(f"pid file {path}: cannot write: {exc.strerror or exc}",
                        exit_code=Exit.RUNTIME) from None
    finally:
        try:
            os.unlink(tmp)
        except OSError:
            pass


def remove_pid_file(path: str | os.PathLike[str]) -> None:
    """Remove ``path`` if it still names this process (a successor's file is left alone)."""
    try:
        if read_pid(path) == os.getpid():
            os.unlink(path)
    except (UserError, OSError) as exc:
        if getattr(exc, "errno", None) != errno.ENOENT:
            log.warning("pid file %s: not removed: %s", path, exc)
