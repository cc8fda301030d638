"""Long fuzzing runs of the proxy's request handling (CI runs a bounded budget).

    python fuzz/fuzz_proxy.py --examples 20000

Uses the same strategies (requests mutated byte by byte, and request targets mutated with
what backends read differently) and the same invariants as tests/test_fuzz.py; a failure
prints the minimal input Hypothesis found.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from tests.fuzzing import ProxyUnderTest, check  # noqa: E402
from tests.test_fuzz import mutated_requests, mutated_targets  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--examples", type=int, default=10_000)
    args = parser.parse_args()
    put = ProxyUnderTest()
    started = time.monotonic()

    @settings(max_examples=args.examples, deadline=None, database=None,
              suppress_health_check=list(HealthCheck))
    @given(data=st.one_of(mutated_requests(), mutated_targets()))
    def run(data):
        check(put, data)
    try:
        run()
    finally:
        put.close()
    print(f"{args.examples} examples, invariants held, {time.monotonic() - started:.1f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
