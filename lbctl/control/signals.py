"""``lbctl reload``: find the running serve of a config and send it SIGHUP.

The serve is the pid in ``--pid-file`` when one is given. Without one, it is the ``lbctl
serve`` process whose command line names the same config file (read from ``/proc``, the
file's real path compared, relative names resolved against that process's directory): never
every lbctl on the machine, as ``kill -HUP $(pidof lbctl)`` would be. A pid file that names
a process serving another config, or no lbctl serve at all (a pid reused after a crash), is
refused rather than signalled.
"""

from __future__ import annotations

import os
import signal
from pathlib import Path

from lbctl.control.pidfile import alive, read_pid
from lbctl.errors import UserError
from lbctl.exitcodes import Exit

PROC = Path("/proc")


def _fail(message: str) -> UserError:
    return UserError(message, exit_code=Exit.RUNTIME)


def cmdline(pid: int) -> list[str] | None:
    """A process's arguments, or None when they cannot be read (gone, hidden, not Linux)."""
    try:
        raw = (PROC / str(pid) / "cmdline").read_bytes()
    except OSError:
        return None
    return [part.decode(errors="replace") for part in raw.split(b"\0") if part]


def serve_arguments(argv: list[str]) -> list[str] | None:
    """The arguments after ``serve`` when ``argv`` runs ``lbctl serve`` (the script or
    ``python -m lbctl``), else None."""
    for i, arg in enumerate(argv):
        if arg == "serve" and i > 0 and os.path.basename(argv[i - 1]) == "lbctl":
            return argv[i + 1:]
    return None


def serves(pid: int, config: Path) -> bool | None:
    """Whether ``pid`` is an lbctl serve of ``config``; None when /proc cannot tell."""
    argv = cmdline(pid)
    if argv is None:
        return None
    args = serve_arguments(argv)
    if args is None:
        return False
    try:
        cwd = Path(os.readlink(PROC / str(pid) / "cwd"))
    except OSError:
        cwd = None              # another user's process: only absolute paths can be compared
    for arg in args:
        if arg.startswith("-"):
            continue
        path = Path(arg)
        if not path.is_absolute():
            if cwd is None:
                continue
            path = cwd / path
        if os.path.realpath(path) == str(config):
            return True
    return False


def find_serve(config: str, pid_file: str | None = None) -> int:
    """The pid to signal for ``config``; a UserError (exit 1) naming why when there is none."""
    real = Path(os.path.realpath(config))
    if pid_file is not None:
        pid = read_pid(pid_file)
        if pid is None:
            raise _fail(f"pid file {pid_file} does not exist: is lbctl serve running with "
                        f"--pid-file {pid_file}?")
        if not alive(pid):
            raise _fail(f"pid file {pid_file} names pid {pid}, which is not running")
        verdict = serves(pid, real)
        if verdict is False:
            args = serve_arguments(cmdline(pid) or [])
            what = "is not lbctl serve" if args is None else f"does not serve {config}"
            raise _fail(f"pid {pid} (from {pid_file}) {what}; not signalled")
        return pid
    if not PROC.is_dir():
        raise _fail("cannot look for the running serve without /proc: pass --pid-file")
    found = [pid for pid in _pids() if pid != os.getpid() and serves(pid, real)]
    # Worker processes (forked, same command line) answer to their parent: keep the top ones.
    parents = set(found)
    found = [pid for pid in found if _parent(pid) not in parents]
    if not found:
        raise _fail(f"no running lbctl serve of {config} found; is it running, "
                    f"under this name? (or pass --pid-file)")
    if len(found) > 1:
        raise _fail(f"several lbctl serve processes of {config} ({', '.join(map(str, found))}):"
                    f" pass --pid-file to choose")
    return found[0]


def signal_reload(config: str, pid_file: str | None = None) -> int:
    """Send SIGHUP to the serve of ``config`` (see ``find_serve``); returns its pid."""
    pid = find_serve(config, pid_file)
    send_reload(pid)
    return pid


def send_reload(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGHUP)
    except ProcessLookupError:
        raise _fail(f"pid {pid} exited before it could be signalled") from None
    except PermissionError:
        raise _fail(f"not allowed to signal pid {pid}: run lbctl reload as the user that "
                    f"runs lbctl serve") from None


def _pids():
    for entry in PROC.iterdir():
        if entry.name.isdigit():
            yield int(entry.name)


def _parent(pid: int) -> int | None:
    try:
        stat = (PROC / str(pid) / "stat").read_text()
    except OSError:
        return None
    # "pid (comm) state ppid ...": comm may hold spaces and parentheses; split after the last ')'.
    fields = stat.rsplit(")", 1)[-1].split()
    return int(fields[1]) if len(fields) > 1 and fields[1].isdigit() else None
