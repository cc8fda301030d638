"""The control channel between the master and one worker: JSON messages over a socketpair.

Each message is a 4-byte big-endian length and a JSON object with a ``"t"`` (its kind).
Both ends use asyncio streams on their end of a ``socket.socketpair()``; the worker's end
is inherited as a file descriptor (``pass_fds``), so nothing is reachable from outside the
two processes. A closed channel reads as None: for a worker, the master is gone; for the
master, the worker is.

Messages are small (a config's text, backend states, outcome batches, one stats answer), so
``send`` writes without waiting; the other side reads continuously.
"""

from __future__ import annotations

import asyncio
import json
import socket
import struct

_HEADER = struct.Struct("!I")
# A stats answer for a very large pool is the biggest message; anything past this is a bug.
MAX_MESSAGE = 64 * 1024 * 1024
_encode = json.JSONEncoder(separators=(",", ":"), allow_nan=False).encode


class ChannelError(Exception):
    """The other end sent something that is not a message."""


class Channel:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    @classmethod
    async def open(cls, sock: socket.socket) -> Channel:
        reader, writer = await asyncio.open_unix_connection(sock=sock, limit=1 << 20)
        return cls(reader, writer)

    @property
    def closed(self) -> bool:
        return self.writer.is_closing()

    def send(self, kind: str, **fields) -> bool:
        """Queue one message; False when the channel is already closed."""
        if self.writer.is_closing():
            return False
        body = _encode({"t": kind, **fields}).encode()
        self.writer.write(_HEADER.pack(len(body)) + body)
        return True

    async def receive(self) -> dict | None:
        """The next message, or None once the other end has closed."""
        try:
            head = await self.reader.readexactly(_HEADER.size)
            (size,) = _HEADER.unpack(head)
            if size > MAX_MESSAGE:
                raise ChannelError(f"message of {size} bytes")
            body = await self.reader.readexactly(size)
        except (asyncio.IncompleteReadError, ConnectionError):
            return None
        try:
            message = json.loads(body)
        except ValueError as exc:
            raise ChannelError(f"not JSON: {exc}") from None
        if not isinstance(message, dict) or not isinstance(message.get("t"), str):
            raise ChannelError("not a message object")
        return message

    def close(self) -> None:
        if not self.writer.is_closing():
            self.writer.close()
