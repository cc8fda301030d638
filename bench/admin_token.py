"""How long a wrong admin token takes to refuse, by how wrong it is: the timing an attacker
guessing the token byte by byte (or its length) would read.

The admin API and per-request explain compare ``sha256(presented)`` with the token's
digest (``lbctl.config.keys.same_secret``). This measures, in one process, the median time
of that check for guesses that differ from the token in different ways, and the same for the
old check (``hmac.compare_digest`` on the tokens themselves), as ratios to the right token's
time. A ratio near 1.00 in every row is what constant time looks like; the old check's
"shorter" row shows what it gave away (the length, at once).

    python bench/admin_token.py [--rounds 21] [--calls 200000]

Not a test: timing goals live here (see bench/README.md), reported as ratios measured in the
same run.
"""

from __future__ import annotations

import argparse
import hmac
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from lbctl.config.keys import digest_of, same_secret  # noqa: E402

TOKEN = b"0f3c9a1e7b2d4c6e8a0b1c2d3e4f5a6b"       # 32 characters, as `openssl rand -hex 16`


def guesses() -> dict[str, bytes]:
    return {
        "right token": TOKEN,
        "wrong first byte": b"x" + TOKEN[1:],
        "wrong last byte": TOKEN[:-1] + b"x",
        "shorter (16)": TOKEN[:16],
        "longer (64)": TOKEN * 2,
        "empty": b"",
    }


def median_ns(check, guess: bytes, calls: int, rounds: int) -> float:
    times = []
    for _ in range(rounds):
        start = time.perf_counter_ns()
        for _ in range(calls):
            check(guess)
        times.append((time.perf_counter_ns() - start) / calls)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=21)
    parser.add_argument("--calls", type=int, default=200_000)
    args = parser.parse_args()
    digest = digest_of(TOKEN)
    checks = {"lbctl (digests)": lambda g: same_secret(g, digest),
              "tokens compared": lambda g: hmac.compare_digest(g, TOKEN)}
    print(f"{'guess':<18}" + "".join(f"{name:>26}" for name in checks))
    results = {name: {label: median_ns(check, guess, args.calls, args.rounds)
                      for label, guess in guesses().items()} for name, check in checks.items()}
    for label in guesses():
        cells = []
        for name in checks:
            ns = results[name][label]
            cells.append(f"{ns:8.1f} ns  x{ns / results[name]['right token']:5.2f}")
        print(f"{label:<18}" + "".join(f"{c:>26}" for c in cells))


if __name__ == "__main__":
    main()
