"""Allow ``python -m lbctl``."""

from lbctl.cli import main

main()
