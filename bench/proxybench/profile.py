"""Where lbctl's time goes: py-spy's folded stacks, by function and by stage of a request.

``top_functions`` lists self and inclusive shares per function. ``breakdown`` puts every
sample in one stage of the data path: each stack is read from its leaf toward the root and
the first frame that names a stage decides (so ``writev`` under ``flush_writes`` is response
relay, and the same ``writev`` under the request's head write is the upstream write). Helpers
shared by several stages (``connection_tokens``, ``Exchange.header``) name none and are
charged to their caller. Samples in no lbctl frame are the event loop (uvloop, the asyncio
task machinery) or, for ``read``, the socket reads uvloop makes before it hands the bytes
to a protocol (client and backend sides alike: one stack cannot tell them apart).

With ``--native`` the syscalls appear as leaves (``read``, ``write``, ``writev``,
``epoll_pwait``, ``accept4``, ``close``...): ``syscalls`` sums them, whatever stage made
them (``syscall`` is libuv's way to ``close`` a socket, or to enter io_uring). Rules name
lbctl's functions: a function renamed without its rule here lands in
"other lbctl", which the report shows, so a stale rule is noticed.
"""

from __future__ import annotations

import re
from pathlib import Path

# (stage, patterns): a frame matches when it starts with one of the patterns (function
# names as py-spy prints them, file dropped). Checked in this order for each frame.
STAGES: list[tuple[str, tuple[str, ...]]] = [
    ("connection setup/teardown", (
        "ClientConnection.__init__", "ClientConnection.connection_made",
        "ClientConnection.connection_lost", "ClientConnection.close", "ClientConnection._finish",
        "ProxyServer.forget", "ProxyServer._accept", "ClientConnection.eof_received",
        "accept4", "uv__server_io", "UVStreamServer__on_listen", "UVStream__accept",
        "TCPTransport__call_connection_made", "UVBaseTransport__call_connection_lost",
        "uv__run_closing_handles", "UVSocketHandle__close", "UVStream__close", "uv_close",
        "shutdown", "getpeername", "getsockname", "setsockopt")),
    ("accounting", (
        "_end_attempt (lbctl/proxy/forward", "Observer.", "BackendStats.", "Frontend.", "Pool.on_end", "Backend.observe_latency",
        "OutlierDetector.", "AccessLog.")),
    ("select", (
        "Pool.select", "Pool.on_start", "Pool.has_alternative", "AttemptPolicy.",
        "RoundRobin.", "Weighted.", "LeastConn.", "PowerOfTwo.", "Ewma.", "Random.",
        "ConsistentHash.", "Algorithm.", "Backend.ewma_cost", "_traced")),
    ("route", (
        "Router.", "strip_port", "path_has_prefix", "Gateway.", "RoutePolicy.",
        "ClientResolver.", "RequestIds.", "key_getter", "RouteDecision", "_route")),
    ("parse", (
        "ClientConnection.data_received", "ClientConnection.on_", "Exchange.__init__",
        "Exchange.inspect", "request_problem", "drop_underscored", "canonical_path",
        "split_absolute", "parser_error", "Body.", "ClientConnection._refuse")),
    ("upstream write", (
        "upstream_request_head", "UpstreamConnection.attach", "IdlePool.",
        "_send (lbctl/proxy/forward",
        "UpstreamConnection.connection_made", "UpstreamConnection.send")),
    ("response relay", (
        "UpstreamConnection.", "Exchange.response_", "Exchange.flush_writes",
        "Exchange.hold_writes", "Exchange._send", "Exchange.upstream_", "client_response_head",
        "body_fields", "response_framing", "error_response", "_respond")),
    ("request flow (task, futures, timers)", (
        "start (lbctl/proxy/forward", "_forward (lbctl", "_next_attempt (lbctl",
        "proceed (lbctl", "_finish (lbctl", "abort (lbctl", "_after_failure (lbctl",
        "_arm_response_timeout", "_watch (lbctl", "ProxyServer.soon", "ProxyServer._run_soon",
        "_attempt", "_handle", "handle", "ClientConnection._run", "ClientConnection._next",
        "ClientConnection.", "Deadline.", "_ResponseTimer", "_Watchdog", "_expire",
        "Exchange.", "forward.", "_finish", "_start",
        # the asyncio machinery a request's task and futures cost
        "task_step", "TaskObj_", "TaskStepMethWrapper", "enter_task", "leave_task",
        "_asyncio_Future", "future_", "FutureObj_", "FutureIter", "Loop__new_future",
        "create_future", "create_task")),
]
READS = ("read (libc", "recv (libc", "recvfrom (libc")
SYSCALLS = ("syscall", "read", "write", "writev", "epoll_pwait", "epoll_wait", "epoll_ctl", "accept4",
            "close", "shutdown", "setsockopt", "getsockopt", "getpeername", "getsockname",
            "connect", "socket", "recv", "send", "sendmsg", "recvfrom", "ioctl", "fcntl")
_SYSCALL = re.compile(r"^(%s) \(libc" % "|".join(SYSCALLS))


def _frames(path: Path):
    """(frames leaf-last with file and line stripped to ``name (file)``, count) per stack."""
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack:
            continue
        frames = [re.sub(r"\s*\((.*?):\d+\)$", r" (\1)", f) for f in stack.split(";")]
        frames = [re.sub(r"^(.*? \().*?/(lbctl|asyncio|uvloop)/", r"\1\2/", f) for f in frames]
        yield frames, int(count)


def top_functions(path: Path, n: int = 25) -> str:
    """Self and inclusive share of samples per function."""
    self_: dict[str, int] = {}
    incl: dict[str, int] = {}
    total = 0
    for frames, c in _frames(path):
        total += c
        self_[frames[-1]] = self_.get(frames[-1], 0) + c
        for f in set(frames):
            incl[f] = incl.get(f, 0) + c
    if not total:
        return "(no samples)"
    lines = [f"{total} samples; self time:"]
    for f, c in sorted(self_.items(), key=lambda kv: -kv[1])[:n]:
        lines.append(f"  {100 * c / total:5.1f}%  {f}")
    lines.append("inclusive:")
    for f, c in sorted(incl.items(), key=lambda kv: -kv[1])[:n]:
        lines.append(f"  {100 * c / total:5.1f}%  {f}")
    return "\n".join(lines)


FLOW = STAGES[-1][0]
WRITES = ("write (libc", "writev (libc", "send (libc", "sendmsg (libc")


def stage_of(frames: list[str]) -> str:
    for frame in reversed(frames):
        for stage, patterns in STAGES:
            if frame.startswith(patterns):
                # The request flow writes one thing itself: the request to the backend.
                if stage == FLOW and frames[-1].startswith(WRITES):
                    return "upstream write"
                return stage
    if frames and frames[-1].startswith(READS):
        return "socket reads (uvloop, both sides)"
    if any("lbctl/proxy" in f or "lbctl/observe" in f or "lbctl/balancing" in f
           for f in frames):
        return "other lbctl"
    return "event loop (uvloop, asyncio)"


def breakdown(path: Path) -> dict:
    """``{"samples": N, "stages": {stage: share}, "syscalls": {name: share}}``."""
    stages: dict[str, int] = {}
    syscalls: dict[str, int] = {}
    total = 0
    for frames, c in _frames(path):
        total += c
        stage = stage_of(frames)
        stages[stage] = stages.get(stage, 0) + c
        m = _SYSCALL.match(frames[-1]) if frames else None
        if m:
            syscalls[m.group(1)] = syscalls.get(m.group(1), 0) + c
    share = (lambda d: {k: v / total for k, v in sorted(d.items(), key=lambda kv: -kv[1])}) \
        if total else (lambda d: {})
    return {"samples": total, "stages": share(stages), "syscalls": share(syscalls)}


def render_breakdown(doc: dict, us_per_req: float | None = None) -> str:
    """The stages as shares (and microseconds per request when ``us_per_req`` is known)."""
    if not doc["samples"]:
        return "(no samples)"
    lines = [f"{doc['samples']} samples; by stage of the data path"
             + (f" (of {us_per_req:.1f} us CPU per request)" if us_per_req else "") + ":"]
    for stage, share in doc["stages"].items():
        us = f"  {share * us_per_req:5.1f} us" if us_per_req else ""
        lines.append(f"  {100 * share:5.1f}%{us}  {stage}")
    if doc["syscalls"]:
        total = sum(doc["syscalls"].values())
        lines.append(f"in syscalls: {100 * total:.1f}% ("
                     + ", ".join(f"{k} {100 * v:.1f}%" for k, v in doc["syscalls"].items()
                                 if v >= 0.002) + ")")
    return "\n".join(lines)
