"""The response-framing decision (``framing.response_framing``), from a table.

Each row: what the request and the response head say, and how the response must cross to
the client: the framing its head announces, how body bytes are relayed, whether the client
connection stays open, and whether the backend's body ends only at its close.
"""

from __future__ import annotations

import pytest

from lbctl.proxy.framing import response_framing

# status, Content-Length (-1: none), chunked, HEAD, HTTP/1.0 client, granted Upgrade,
# client wants keep-alive, must close  ->  announced, relayed, keep-alive, ends at close
TABLE = [
    # a length-delimited response is copied as is, and the connection kept
    ((200, 10, False, False, False, False, True, False), ("length", "length", True, False)),
    # ... unless the client asked to close, or the proxy must (draining, unread body)
    ((200, 10, False, False, False, False, False, False), ("length", "length", False, False)),
    ((200, 10, False, False, False, False, True, True), ("length", "length", False, False)),
    # chunked from the backend: re-chunked (the proxy re-derives framing per hop)
    ((200, -1, True, False, False, False, True, False), ("chunked", "chunked", True, False)),
    # no length, not chunked: the body ends when the backend closes; chunked to a 1.1 client
    ((200, -1, False, False, False, False, True, False), ("chunked", "chunked", True, True)),
    # ... and copied until the proxy closes for a 1.0 client, which cannot read chunks
    ((200, -1, False, False, True, False, True, False), ("close", "close", False, True)),
    ((200, -1, True, False, True, False, True, False), ("close", "close", False, False)),
    # HTTP/1.0 client with a length: kept open when it asked (Connection: keep-alive)
    ((200, 10, False, False, True, False, True, False), ("length", "length", True, False)),
    # HEAD: the head announces the length the backend declared, no body is relayed
    ((200, 10, False, True, False, False, True, False), ("length", "none", True, False)),
    ((200, -1, False, True, False, False, True, False), ("none", "none", True, False)),
    ((200, -1, True, True, False, False, True, False), ("none", "none", True, False)),
    # 204 and 304 never carry a body, whatever the head says
    ((204, -1, False, False, False, False, True, False), ("none", "none", True, False)),
    ((304, 10, False, False, False, False, True, False), ("none", "none", True, False)),
    ((304, -1, False, False, False, False, False, False), ("none", "none", False, False)),
    # 101 granting the client's Upgrade: no framing, the connection becomes a tunnel
    ((101, -1, False, False, False, True, True, False), ("none", "none", True, False)),
    ((101, -1, False, False, False, True, False, False), ("none", "none", True, False)),
    ((101, -1, False, False, False, True, True, True), ("none", "none", False, False)),
    # a 5xx is framed like any other response
    ((503, 5, False, False, False, False, True, False), ("length", "length", True, False)),
]


@pytest.mark.parametrize("given, expected", TABLE)
def test_response_framing(given, expected):
    assert response_framing(*given) == expected
