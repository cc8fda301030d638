"""Config: the TOML file read into typed, immutable objects (``model``), validated in full.

``load_config(path)`` returns a ``Config`` or raises ``ConfigError`` carrying *every* problem
found, each naming the file, the key path and what was expected.

    model.py     the frozen dataclasses the rest of lbctl reads, with every default
    schema.py    which keys each TOML table has, and the kind of each value
    kinds.py     how one kind of value is checked, converted and written back
    problems.py  collecting problems; key paths, found values and suggestions in messages
    loader.py    reading the file, and the checks that span several keys or tables
    gateway.py   the checks of keys, auth, allow-lists, TLS and CA files (they span tables
                 and read files and the environment)
    keys.py      key material, loaded once: API key digests, HMAC secrets, public keys, JWKS
    tls.py       TLS contexts (listener, upstream verification), built the way they are used
    effective.py the config written back as TOML with every default filled in

Config sits right above ``balancing`` (whose algorithm names it validates against) and below
everything else; ``lbctl.gateway`` and ``lbctl.proxy`` use the key material and TLS contexts
built here, so validation and use load a file the same way.
"""

from lbctl.config.loader import ConfigError, load_config

__all__ = ["ConfigError", "load_config"]
