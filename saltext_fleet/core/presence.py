"""Whether a node is online: presence checks and what the master saw, and why.

A node that misses one presence check (a ``test.ping`` by id that got no answer in time) is
not offline yet: on a busy machine a node that is up can miss one. It goes offline when it has
missed more than one check in a row (:data:`MISSES_OFFLINE`), or at once when the master saw
it disconnect (``salt/presence/change``, confirmed by the master's connected ids). An answer
brings it back online and clears the count. Each status says since when and why.
"""

from __future__ import annotations

import dataclasses
import datetime as dt

#: Presence checks missed in a row after which a node is offline.
MISSES_OFFLINE = 2

REASON_ANSWERED = "answered a presence check"
REASON_CONNECTED = "the master saw the minion connect"
REASON_DISCONNECTED = "the master saw the minion disconnect"


def missed_reason(misses: int) -> str:
    return f"missed {misses} presence check{'' if misses == 1 else 's'}"


@dataclasses.dataclass(frozen=True)
class Presence:
    """A node's presence: ``status`` (online, offline or None: unknown), the checks it missed
    in a row, since when the status holds and why."""

    status: str | None = None
    misses: int = 0
    since: dt.datetime | None = None
    reason: str | None = None

    def _become(self, status: str | None, now: dt.datetime, reason: str | None, misses: int):
        if status == self.status:
            return Presence(status, misses, self.since or now, reason)
        return Presence(status, misses, now, reason)

    def checked(self, answered: bool, now: dt.datetime) -> Presence:
        """After a presence check the node answered, or not."""
        if answered:
            return self._become("online", now, REASON_ANSWERED, 0)
        misses = self.misses + 1
        if misses >= MISSES_OFFLINE:
            # offline since the check that made it so, not since each later miss
            if self.status == "offline":
                return Presence("offline", misses, self.since or now, missed_reason(misses))
            return Presence("offline", misses, now, missed_reason(misses))
        # one miss: the status stays what it was (and says so)
        return Presence(self.status, misses, self.since, self.reason)

    def seen(self, connected: bool, now: dt.datetime, reason: str | None = None) -> Presence:
        """After the master saw the node connect (or answer a job) or disconnect."""
        if connected:
            return self._become("online", now, reason or REASON_CONNECTED, 0)
        return self._become("offline", now, reason or REASON_DISCONNECTED, self.misses)


def describe(presence: Presence) -> str:
    """A line for people: "offline: missed 2 presence checks" (the page adds since when)."""
    status = presence.status or "unknown"
    if presence.reason:
        text = f"{status}: {presence.reason}"
    else:
        text = status
    if presence.status == "online" and presence.misses:
        text += f" ({missed_reason(presence.misses)} since)"
    return text
