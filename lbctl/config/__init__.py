"""Config: the TOML file read into typed, immutable objects (``model``), validated in full.

``load_config(path)`` returns a ``Config`` or raises ``ConfigError`` carrying *every* problem
found, each naming the file, the key path and what was expected.
"""
