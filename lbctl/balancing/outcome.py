"""How one attempt on a backend ended: the words the proxy, health, observe and the simulator share.

``Outcome`` is a ``str`` enum, so an outcome compares equal to its word (``Outcome.OK ==
"ok"``) and reads the same in config (``retry_on``, ``failure_on``), logs and metrics.
``OutcomeSink`` is what a driver reports every attempt into (passive health plugs in here);
it lives at the bottom of the layers so health need not import the proxy to implement it.
"""

from __future__ import annotations

from enum import Enum
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from lbctl.balancing.backend import Backend


class Outcome(str, Enum):
    OK = "ok"                  # a response head below 500 (the exchange may still fail later)
    FIVE_XX = "5xx"            # a 5xx response head
    CONNECT = "connect"        # no connection (refused, unreachable, connect timeout)
    RESET = "reset"            # closed or reset before any response byte
    TIMEOUT = "timeout"        # no response head within timeouts.response
    INVALID = "invalid"        # a response that could not be parsed, or cut short
    CLIENT = "client"          # the client broke the exchange: not the backend's failure

    # Hash and compare as the word itself, so a dict or set of outcomes finds "5xx" too
    # (Enum's own hash is its member name's, on some Python versions).
    __hash__ = str.__hash__

    def __str__(self) -> str:
        return self.value


class OutcomeSink:
    """Where a driver reports each attempt's outcome; the default hears nothing."""

    def record(self, backend: Backend, outcome: str) -> None:
        pass
