"""The health verdict of one backend: a small state machine with hysteresis.

A backend is up or down. ``count`` counts consecutive observations that *disagree* with the
current verdict; ``rise`` agreeing successes bring a down backend up, ``fall`` failures take
an up backend down, and any observation that agrees with the verdict resets the count. This
is what stops a single lost probe from flapping a backend (Pingora ``HealthInner``).

``observe`` returns whether the verdict flipped, so callers log and act on flips only. The
same object serves the live checker and ``lbctl check --state-file`` (via ``to_dict``).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class HealthState:
    rise: int = 2               # consecutive successes to mark a down backend up
    fall: int = 3               # consecutive failures to mark an up backend down
    healthy: bool = True
    count: int = 0              # consecutive observations against the current verdict
    unproven: bool = False      # started down and never seen up: one success is enough
    streak: int = 0             # how many observations the last flip took (for its log line)

    @classmethod
    def initial(cls, rise: int, fall: int, initial: str = "up") -> "HealthState":
        """``initial = "down"`` means "no traffic until the first good probe": the first time,
        one success brings the backend up rather than ``rise`` of them."""
        if initial == "down":
            return cls(rise, fall, healthy=False, unproven=True)
        return cls(rise, fall, healthy=True)

    def observe(self, ok: bool) -> bool:
        """Take one probe result; True when the verdict changed."""
        if ok == self.healthy:
            self.count = 0
            return False
        self.count += 1
        needed = 1 if ok and self.unproven else (self.rise if ok else self.fall)
        if self.count >= needed:
            self.healthy, self.streak, self.count, self.unproven = ok, self.count, 0, False
            return True
        return False

    def retune(self, rise: int, fall: int) -> None:
        """A reload changed rise/fall: keep the verdict and the streak, apply the new bounds."""
        self.rise, self.fall = rise, fall

    def to_dict(self) -> dict:
        return {"healthy": self.healthy, "count": self.count, "unproven": self.unproven}

    @classmethod
    def from_dict(cls, data: object, rise: int, fall: int) -> "HealthState | None":
        """Rebuild from ``to_dict`` output; None when ``data`` is not a valid record."""
        if not isinstance(data, dict):
            return None
        healthy, count = data.get("healthy"), data.get("count")
        if not isinstance(healthy, bool) or not isinstance(count, int) or isinstance(count, bool) \
                or count < 0:
            return None
        return cls(rise, fall, healthy=healthy, count=count,
                   unproven=bool(data.get("unproven", False)) and not healthy)
