"""Every exit code lbctl uses, in one place (the README's "Commands" table)."""

from enum import IntEnum


class Exit(IntEnum):
    """Process exit codes shared by all commands."""

    OK = 0
    RUNTIME = 1          # serve: runtime failure (port in use); stats: admin API unreachable
    USAGE = 2            # bad config, bad scenario or bad usage


class CheckExit(IntEnum):
    """`lbctl check` follows the monitoring-plugin convention read by cron and Nagios-style monitors."""

    OK = 0
    WARNING = 1
    CRITICAL = 2
    UNKNOWN = 3
