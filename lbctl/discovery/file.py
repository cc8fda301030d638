"""``file = "backends.json"``: backends listed in a JSON file that a deploy tool rewrites.

The file is a JSON array of ``{"url": ..., "name": ..., "weight": ...}`` (name and weight
optional), checked entry by entry like the config file; any problem rejects the whole version,
since half a list would drain the other half. ``[]`` is a real answer: no backends.

Watching is a ``stat`` (device, inode, size, modification time) every ``min(interval, 1s)``,
and a read only when it changed, so a file is picked up within a second of being replaced.
Write it the safe way, to a temporary file in the same directory and then ``rename`` over the
old one (what ``mv``, Ansible, Kubernetes' ConfigMap volumes and consul-template do): a reader
then sees the old file or the new one, never half of one. A file edited in place may be read
half-written; that version fails to parse and is retried at the next change.
"""

from __future__ import annotations

import json
import os

from lbctl.config.model import Discovery
from lbctl.config.problems import describe, repeated_key
from lbctl.discovery.entries import EntryError, backend_from_entry
from lbctl.discovery.resolution import Resolution
from lbctl.files import FileProblem, read_bytes

# A file is a list an operator or a tool wrote, not a data set: beyond this it is a mistake.
MAX_SIZE = 16 * 1024 * 1024
# How often a file is checked at most; ``interval`` below it checks more often.
POLL = 1.0


class FileSource:
    kind = "file"

    def __init__(self, discovery: Discovery) -> None:
        assert discovery.file is not None
        self.path = discovery.file
        self.target = discovery.file
        self.poll = min(discovery.interval, POLL)
        self._seen: tuple | None = None     # stat identity of the version read last

    def changed(self) -> bool:
        """Whether the file may differ from the version read last (cheap: one ``stat``)."""
        return self._stat() != self._seen

    def _stat(self) -> tuple | None:
        try:
            st = os.stat(self.path)
        except OSError as exc:
            return ("error", exc.errno)
        return st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns

    async def resolve(self) -> Resolution:
        # A small file read on the loop: the read is bounded and an operator's list is small.
        self._seen = self._stat()
        try:
            # Regular files only, opened without blocking: a FIFO here (or a device) would
            # stop the event loop, and with it every request the proxy serves.
            raw = read_bytes(self.path, MAX_SIZE, regular_only=True)
        except FileProblem as exc:
            return Resolution.failed(f"cannot read the file: {exc}")
        return parse(raw)

    def next_delay(self, resolution: Resolution) -> float:
        return self.poll


def parse(raw: bytes) -> Resolution:
    """A file's bytes as a ``Resolution``: FOUND, EMPTY for ``[]``, FAILED naming the problem."""
    try:
        # A byte order mark is what some Windows tools start a UTF-8 file with: not an error.
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        return Resolution.failed("not UTF-8 text")
    if not text.strip():
        # What an editor truncating the file before writing leaves for a moment: not "[]".
        return Resolution.failed("the file is empty (expected a JSON array, [] for none)")
    try:
        document = json.loads(text, object_pairs_hook=_one_each)
    except json.JSONDecodeError as exc:
        return Resolution.failed(f"line {exc.lineno}, column {exc.colno}: invalid JSON: {exc.msg}")
    except _Twice as exc:
        return Resolution.failed(str(exc))
    except RecursionError:
        return Resolution.failed("invalid JSON: nested too deeply")
    except ValueError as exc:           # a number of thousands of digits
        return Resolution.failed(f"invalid JSON: {str(exc)[:80]}")
    if not isinstance(document, list):
        return Resolution.failed('expected a JSON array of {"url": ..., "name": ..., '
                                 '"weight": ...}')
    backends = []
    first_index: dict[str, int] = {}
    for index, entry in enumerate(document):
        where = f"[{index}]"
        try:
            b = backend_from_entry(entry, "file", where)
        except EntryError as exc:
            return Resolution.failed(str(exc))
        if b.name in first_index:
            return Resolution.failed(f"{where}: expected a name unique in the file, found "
                                     f"{json.dumps(b.name)}, already used by [{first_index[b.name]}]")
        first_index[b.name] = index
        backends.append(b)
    return Resolution.found(backends, empty_reason="the file lists no backends")


class _Twice(Exception):
    """An object with a key given twice."""


def _one_each(pairs: list[tuple[str, object]]) -> dict:
    """An object whose keys are all different: with {"url": A, "url": B}, which one counts
    would depend on the tool reading the file, so neither does (as in the admin API)."""
    twice = repeated_key(pairs)
    if twice is not None:
        raise _Twice(f"invalid JSON: the key {describe(twice)} is given twice in one object")
    return dict(pairs)
