"""Run the installed ``lbctl`` as a real subprocess and follow its event log."""

from __future__ import annotations

import asyncio
import os
import re
import sys
from pathlib import Path

LBCTL = str(Path(sys.executable).parent / "lbctl")
# The subprocess imports this checkout's lbctl, whatever the virtualenv's install points at.
REPO = str(Path(__file__).resolve().parent.parent)
ENV = {**os.environ, "PYTHONPATH": REPO + os.pathsep + os.environ.get("PYTHONPATH", "")}


class LbctlProcess:
    """``lbctl serve`` in a subprocess; ``wait_for_log`` waits for a stderr line, not a timer."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc
        self.lines: list[str] = []
        self._changed = asyncio.Condition()
        self._reader = asyncio.get_running_loop().create_task(self._read())

    @classmethod
    async def start(cls, *args: str, env: dict | None = None) -> "LbctlProcess":
        proc = await asyncio.create_subprocess_exec(
            LBCTL, *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
            env={**ENV, **(env or {})})
        return cls(proc)

    async def _read(self) -> None:
        assert self.proc.stderr is not None
        while True:
            line = await self.proc.stderr.readline()
            async with self._changed:
                if line:
                    self.lines.append(line.decode(errors="replace").rstrip("\n"))
                self._changed.notify_all()
            if not line:
                return

    async def wait_for_log(self, pattern: str, timeout: float = 10.0, start: int = 0) -> re.Match:
        regex = re.compile(pattern)

        async def scan():
            async with self._changed:
                while True:
                    for line in self.lines[start:]:
                        match = regex.search(line)
                        if match:
                            return match
                    if self._reader.done():
                        raise AssertionError(f"lbctl exited before logging {pattern!r}:\n"
                                             + "\n".join(self.lines))
                    await self._changed.wait()
        return await asyncio.wait_for(scan(), timeout)

    async def wait(self, timeout: float = 15.0) -> int:
        code = await asyncio.wait_for(self.proc.wait(), timeout)
        await self._reader
        return code

    def kill(self) -> None:
        if self.proc.returncode is None:
            self.proc.kill()
