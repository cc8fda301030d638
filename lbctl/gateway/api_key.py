"""API keys: named once under ``[keys]``, held only as SHA-256 digests.

A presented key is hashed and compared with *every* configured digest using
``hmac.compare_digest``, without stopping at a match: the time taken does not depend on
which key matched, how many bytes of it were right, or whether any did. Comparing fixed-
length digests (not the keys) also keeps a key's length from showing in the timing.
"""

from __future__ import annotations

import hashlib
import hmac
from typing import Iterable

DEFAULT_HEADER = "X-API-Key"


class KeyRing:
    """The configured keys: name -> digest."""

    def __init__(self, keys: Iterable[tuple[str, bytes]]) -> None:
        self.entries = [(name, digest) for name, digest in keys]

    def identify(self, presented: bytes) -> str | None:
        """The name of the key ``presented`` is, or None."""
        digest = hashlib.sha256(presented).digest()
        found = None
        for name, expected in self.entries:
            # No early exit: every digest is compared whatever happened before.
            if hmac.compare_digest(digest, expected) and found is None:
                found = name
        return found
