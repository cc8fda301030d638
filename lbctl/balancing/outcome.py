"""How an attempt on a backend ended, and where such outcomes are reported.

Every driver of a pool speaks the same words: the proxy reports each attempt's ``Outcome``
to the pool's ``OutcomeSink`` (passive health listens there), to the accounting and to the
access log; the simulator reports its virtual attempts to the very same sink. The values are
the words of the config (``failure_on``, ``retry_on``), so a set of configured strings can be
tested for an outcome directly.
"""

from __future__ import annotations

from enum import Enum
from typing import Protocol

from lbctl.balancing.backend import Backend


class Outcome(str, Enum):
    """One attempt's end. A ``str`` enum: ``Outcome.RESET == "reset"``, and it hashes like
    the string, so ``outcome in config.failure_on`` costs one set lookup."""

    OK = "ok"                      # a response other than 5xx was relayed whole
    SERVER_ERROR = "5xx"           # the backend answered 5xx (relayed, or held for a retry)
    CONNECT_ERROR = "connect"      # no connection to the backend
    RESET = "reset"                # the backend closed or reset the connection before any
                                   # response byte
    TRUNCATED = "truncated"        # the response began, then the backend closed, reset or
                                   # garbled it before its end: the client got a cut message
    TIMEOUT = "timeout"            # no response head in time, or the response stalled
    INVALID = "invalid"            # a response the proxy could not parse or relay
    CLIENT_ABORT = "client"        # the client ended the exchange (went away, or broke a
                                   # limit): not the backend's failure
    LOCAL = "local"                # the proxy itself ran out of a resource (file descriptors,
                                   # memory, local ports): never the backend's failure

    def __str__(self) -> str:
        return self.value


class OutcomeSink(Protocol):
    """Where a driver reports each attempt's outcome (passive health is one)."""

    def record(self, backend: Backend, outcome: Outcome) -> None: ...


class Discard:
    """The sink of a pool that nothing listens to."""

    def record(self, backend: Backend, outcome: Outcome) -> None:
        pass


DISCARD = Discard()
