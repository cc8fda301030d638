"""The access log: one line per client request, JSON or combined, written off the event loop.

Lines are formatted on the loop (cheap string work), collected for ``BATCH`` seconds and
handed to a writer thread through a queue, so a slow disk or a blocked stdout pipe never
stalls request handling. If the writer falls ``MAX_PENDING`` batches behind, new lines are
dropped and counted, rather than letting memory grow without bound. ``reopen`` (SIGUSR1, the logrotate convention) makes the thread
close and reopen the file before its next write.

Safety: values that carry secrets (Authorization, Cookie, API keys, and query parameters
named like credentials) are replaced by ``[REDACTED]``; CR, LF and other control bytes in
any logged value are escaped (``\\r``, ``\\n``, ``\\xNN``; bytes outside printable ASCII too,
since header bytes have no declared charset), so a hostile client cannot forge log lines
or smuggle terminal escape sequences into an operator's ``tail -f``.

A parameter is judged by its name as a backend would read it: percent-decoded, trimmed,
case-folded, and looked at part by part (``key[]``, ``user[password]``, ``X-Amz-Credential``),
in the query, after ``;`` (as some frameworks split queries, and in path parameters like
``;jsessionid=``) and after a ``#``. The Referer's URL is redacted the same way, userinfo
included. The combined format escapes ``"``, backslash and bytes outside printable ASCII as
NGINX does (``\\x22``), so log parsers always find the quoted fields' ends.
"""

from __future__ import annotations

import json
import logging
import os
import queue
import re
import select
import sys
import threading
import time
from typing import IO
from urllib.parse import unquote_plus

log = logging.getLogger("lbctl.access")

# A pipe takes a write of up to this many bytes whole (POSIX guarantees at least 512).
PIPE_BUF = getattr(select, "PIPE_BUF", 512)
MAX_PENDING = 10_000          # batches waiting for the writer thread
BATCH = 0.05                  # seconds between hand-offs to the writer thread
REDACTED = "[REDACTED]"
SECRET_HEADERS = frozenset({b"authorization", b"proxy-authorization", b"cookie", b"set-cookie",
                            b"x-api-key", b"api-key", b"x-auth-token", b"x-lb-admin-token"})
# A parameter name is a credential's if it contains one of these...
_SECRET_PART = re.compile(r"token|secret|passw|pwd|session|sessid|signature|credential|auth|"
                          r"jwt|bearer|api[_-]?key|apikey|otp|private")
# ...or one of its words (split at "_", "-", "." or a space) is one of these.
_SECRET_WORDS = frozenset({"key", "sig", "code", "sid", "pass", "pin", "hmac"})
_WORD_SPLIT = re.compile(r"[_\-. ]+")
_BRACKETS = re.compile(r"[\[\]]+")
_PARAM_SEPARATORS = re.compile(r"([&;#?])")
_CONTROL = re.compile(r"[^\x20-\x7e]|\\")
_ESCAPES = {"\r": "\\r", "\n": "\\n", "\t": "\\t", "\\": "\\\\"}


def escape(value: str) -> str:
    """Anything but printable ASCII as a visible escape; a backslash doubled so escapes are
    unambiguous."""
    if not _CONTROL.search(value):
        return value
    return _CONTROL.sub(_escape_one, value)


def _escape_one(match: re.Match) -> str:
    char = match.group()
    code = ord(char)
    return _ESCAPES.get(char) or (f"\\x{code:02x}" if code < 256 else f"\\u{code:04x}")


def text(raw: bytes | str | None) -> str | None:
    if raw is None:
        return None
    value = raw.decode("latin-1") if isinstance(raw, bytes) else raw
    return escape(value)


def secret_name(name: str) -> bool:
    """Whether a parameter called ``name`` (as sent: escaped, any case) may hold a secret."""
    name = unquote_plus(name).strip().lower()
    for part in _BRACKETS.split(name):
        if _SECRET_PART.search(part):
            return True
        if not _SECRET_WORDS.isdisjoint(_WORD_SPLIT.split(part.strip())):
            return True
    return False


def _redact_params(text: str) -> str:
    """``name=value`` pieces between ``&``, ``;``, ``#`` and ``?``: secrets' values replaced,
    up to the next ``&`` (a value may itself hold ``;``, ``?`` or ``#``)."""
    pieces = _PARAM_SEPARATORS.split(text)        # piece, separator, piece, ...
    redacting = False
    for i in range(0, len(pieces), 2):
        if redacting and pieces[i - 1] != "&":
            pieces[i - 1] = pieces[i] = ""          # still the secret's value
            continue
        name, eq, _ = pieces[i].partition("=")
        redacting = bool(eq) and secret_name(name)
        if redacting:
            pieces[i] = f"{name}={REDACTED}"
    return "".join(pieces)


def redact_target(target: str) -> str:
    """The request target with credential-like parameter values replaced: in the query,
    after a ``#``, and in path parameters (``/app;jsessionid=...``)."""
    if "=" not in target:
        return target                   # the common case: nothing to look at
    cut = min((i for i in (target.find("?"), target.find("#")) if i >= 0), default=len(target))
    path, rest = target[:cut], target[cut:]
    if ";" in path:
        path = "/".join(_redact_params(segment) if ";" in segment else segment
                        for segment in path.split("/"))
    return path + (_redact_params(rest) if rest else "")


def redact_url(url: str) -> str:
    """A URL (a Referer) with its userinfo and credential-like parameters redacted."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        return redact_target(url)
    cut = min((i for i in (rest.find("/"), rest.find("?"), rest.find("#")) if i >= 0),
              default=len(rest))
    authority, tail = rest[:cut], rest[cut:]
    if "@" in authority:
        authority = f"{REDACTED}@{authority.rpartition('@')[2]}"
    return f"{scheme}://{authority}{redact_target(tail)}"


def header_value(headers: list[tuple[bytes, bytes]], lower_name: bytes) -> str | None:
    """A header for the log: redacted when it may carry a secret, escaped always."""
    for name, value in headers:
        if name.lower() == lower_name:
            if lower_name in SECRET_HEADERS:
                return REDACTED
            if lower_name == b"referer":
                return redact_url(text(value))
            return text(value)
    return None


_second: list = [None, ""]          # the last whole second formatted, and its text


def iso_time(epoch: float) -> str:
    second = int(epoch)
    if _second[0] != second:            # strftime once per second, not per line
        _second[:] = [second, time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))]
    return f"{_second[1]}.{int(epoch % 1 * 1000):03d}Z"


# One encoder, built once: json.dumps with options would build a new one per line.
# ensure_ascii escapes every control and non-ASCII character as \uXXXX: one line, always.
_encode = json.JSONEncoder(separators=(",", ":"), ensure_ascii=True).encode


def format_json(record: dict) -> str:
    return _encode(record)


# In an escaped value (see ``escape``) a backslash always starts an escape.
_ESCAPED = re.compile(r'\\(?:x([0-9a-f]{2})|u([0-9a-f]{4})|(.))|"')
_NGINX = {"r": "\\x0D", "n": "\\x0A", "t": "\\x09", "\\": "\\x5C"}


def _nginx_one(match: re.Match) -> str:
    hex_byte, wide, char = match.groups()
    if hex_byte is not None:
        return "\\x" + hex_byte.upper()
    if wide is not None:
        return "\\u" + wide.upper()
    if char is not None:
        return _NGINX.get(char, "\\x5C" + char)
    return "\\x22"                      # a double quote


def nginx_escape(value: str) -> str:
    """An escaped value (``escape``) re-escaped as NGINX writes its logs: ``"`` as ``\\x22``,
    backslash as ``\\x5C``, other bytes outside printable ASCII as ``\\xHH``."""
    if "\\" not in value and '"' not in value:
        return value
    return _ESCAPED.sub(_nginx_one, value)


def format_combined(record: dict) -> str:
    """NGINX/Apache "combined", plus lbctl's fields as key=value pairs at the end."""
    def q(value) -> str:
        return "-" if value is None else '"' + nginx_escape(str(value)) + '"'

    when = time.strftime("%d/%b/%Y:%H:%M:%S +0000", time.gmtime(record["epoch"]))
    line = (f'{record["client"]} - - [{when}] "{nginx_escape(record["method"])} '
            f'{nginx_escape(record["path"])} '
            f'{record["protocol"]}" {record["status"]} {record["bytes"]} '
            f'{q(record.get("referer"))} {q(record.get("user_agent"))}')
    extra = [f'rt={record["duration"]:.6f}',
             f'uct={"-" if record["upstream_time"] is None else format(record["upstream_time"], ".6f")}',
             f'route={q(record["route"])}', f'pool={record["pool"] or "-"}',
             f'backend={record["backend"] or "-"}', f'attempts={record["attempts"]}',
             f'rid={record["request_id"] or "-"}', f'term={record["termination"] or "-"}']
    if record.get("decision"):
        extra.append(f'decision={q(record["decision"])}')
    if record.get("worker") is not None:
        extra.append(f'worker={record["worker"]}')
    return line + " " + " ".join(extra)


FORMATS = {"json": format_json, "combined": format_combined}


class AccessLog:
    """Formats records on the loop; a daemon thread writes them to stdout or a file."""

    def __init__(self, target: str, fmt: str, *, stream: IO[str] | None = None) -> None:
        self.target = target
        self.format_name = fmt
        self.format = FORMATS[fmt]
        self.stream = stream              # tests may pass a stream; "stdout" uses sys.stdout
        self.queue: queue.SimpleQueue = queue.SimpleQueue()    # batches of lines for the thread
        self.buffer: list[str] = []                              # lines not handed off yet
        self.timer = None
        self.dropped = 0
        self._reopen = False
        self._file: IO[str] | None = None
        self._thread = threading.Thread(target=self._run, name="lbctl-access-log", daemon=True)
        self._open()
        self._thread.start()

    def write(self, record: dict) -> None:
        """Format on the loop, buffer, and hand the batch to the thread every ``BATCH`` s:
        one thread wake-up per batch rather than per line keeps the GIL with the loop."""
        if self.queue.qsize() >= MAX_PENDING:
            self.dropped += 1
            return
        self.buffer.append(self.format(record))
        if self.timer is None:
            import asyncio
            self.timer = asyncio.get_running_loop().call_later(BATCH, self.hand_off)

    def hand_off(self) -> None:
        """Give the buffered lines to the writer thread now (call on the loop)."""
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        if self.buffer:
            self.queue.put("\n".join(self.buffer) + "\n")
            self.buffer.clear()

    def reopen(self) -> None:
        """Close and reopen the file before the next write (after logrotate moved it)."""
        self.hand_off()                   # lines logged before the signal go to the old file
        self._reopen = True
        self.queue.put("")                # wake the thread even when idle

    def close(self, timeout: float = 2.0) -> None:
        self.hand_off()
        self.queue.put(None)
        self._thread.join(timeout)

    def flush(self, timeout: float = 5.0) -> None:
        """Wait until every batch handed off so far is written (any thread)."""
        done = threading.Event()
        self.queue.put(done)
        done.wait(timeout)

    def _open(self) -> None:
        self._file, self._fd = None, None
        if self.stream is not None:
            self._file = self.stream
        elif self.target == "stdout":
            sys.stdout.flush()
            self._fd = sys.stdout.fileno()
        else:
            self._fd = os.open(self.target, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC,
                               0o644)

    def _close(self) -> None:
        if self._fd is not None and self.target != "stdout":
            os.close(self._fd)
        self._fd = None

    def _write(self, item: str) -> None:
        """One batch of whole lines. Several workers of an instance append to the same file
        or pipe, so every write(2) ends at a line's end: a file opened with O_APPEND takes
        each write whole, and a pipe each write of up to PIPE_BUF bytes."""
        if self._file is not None:
            self._file.write(item)
            return
        data = item.encode("utf-8", "backslashreplace")
        limit = PIPE_BUF if self.target == "stdout" else len(data)
        start = 0
        while start < len(data):
            end = len(data)
            if end - start > limit:
                cut = data.rfind(b"\n", start, start + limit)
                # A single line longer than the limit goes in one write anyway.
                end = cut + 1 if cut >= start else data.find(b"\n", start) + 1 or len(data)
            view = memoryview(data)[start:end]
            while view:
                view = view[os.write(self._fd, view):]
            start = end

    def _run(self) -> None:
        while True:
            item = self.queue.get()
            try:
                if item is None:
                    self._flush_file()
                    self._close()
                    return
                if isinstance(item, threading.Event):
                    self._flush_file()
                    item.set()
                    continue
                if self._reopen:
                    self._reopen = False
                    if self._fd is not None and self.target != "stdout":
                        self._close()
                        self._open()
                if item:
                    self._write(item)
                    if self.queue.empty():
                        self._flush_file()
            except Exception as exc:   # a full disk must not kill the thread
                log.error("access log: cannot write to %s: %s", self.target, exc)

    def _flush_file(self) -> None:
        if self._file is not None:
            self._file.flush()
