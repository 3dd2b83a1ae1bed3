"""What one poll of a PiKVM says, and what it means for the device's status and alerts.

Pure: no I/O. :func:`summarize` turns kvmd's answers (``/api/info`` with the ``health`` and
``uptime`` fields, ``/api/atx``, ``/api/hid``, ``/api/msd``) into one flat :class:`Poll`
(the row the store keeps per poll and the history chart draws); :func:`evaluate` folds a poll
into the device's :class:`Status` and says which alerts it raises:

* ``offline``: the device missed ``offline_after`` polls in a row (default 3: one missed poll
  is a hiccup, not an outage); ``online`` when it answers again after that;
* ``over_temperature``: its CPU reached ``over_temp_c`` (default 80 °C, where a Raspberry Pi
  starts to throttle); ``temperature_ok`` once it is ``hysteresis_c`` below again, so a
  device hovering at the threshold does not page anyone on every poll.

Each alert fires on the transition only, never again while the condition lasts.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

#: Polls missed in a row before a device is offline.
OFFLINE_AFTER = 3
#: CPU temperature (°C) at or above which a device is over temperature.
OVER_TEMP_C = 80.0
#: How far (°C) below the threshold a hot device must cool to be ok again.
HYSTERESIS_C = 5.0
#: Seconds between polls of a device.
POLL_INTERVAL_S = 15.0

#: The alerts :func:`evaluate` may raise, in the order it raises them.
ALERTS = ("offline", "online", "over_temperature", "temperature_ok")


@dataclasses.dataclass(frozen=True)
class Poll:
    """One poll of one device: ``online`` False (with ``error``) when it did not answer."""

    online: bool
    power: bool | None = None
    hid_online: bool | None = None
    msd_connected: bool | None = None
    msd_image: str | None = None
    temperature: float | None = None
    uptime_s: int | None = None
    throttled: bool | None = None
    error: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclasses.dataclass(frozen=True)
class Status:
    """A device's standing between polls: ``missed`` polls in a row, whether it counts as
    ``offline`` and as ``hot`` (both as of the last alert about them)."""

    missed: int = 0
    offline: bool = False
    hot: bool = False

    @property
    def state(self) -> str:
        """``online``, ``unreachable`` (missed polls, not yet offline) or ``offline``."""
        if self.offline:
            return "offline"
        return "unreachable" if self.missed else "online"

    def as_dict(self) -> dict[str, Any]:
        return {**dataclasses.asdict(self), "state": self.state}

    @classmethod
    def from_dict(cls, value: Any) -> Status:
        """A stored status (any shape: a broken one counts as a fresh device)."""
        if not isinstance(value, Mapping):
            return cls()
        missed = value.get("missed")
        return cls(
            missed=missed if isinstance(missed, int) and missed >= 0 else 0,
            offline=value.get("offline") is True,
            hot=value.get("hot") is True,
        )


def _get(data: Any, *path: str) -> Any:
    for part in path:
        if not isinstance(data, Mapping):
            return None
        data = data.get(part)
    return data


def _flag(value: Any) -> bool | None:
    return value if isinstance(value, bool) else None


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value)


def summarize(info: Any, atx: Any, hid: Any, msd: Any) -> Poll:
    """The :class:`Poll` of a device that answered (each argument is kvmd's ``result`` of that
    call; a part kvmd did not give, e.g. ATX disabled, is None in the poll).

    ``info`` may be the legacy shape (``hw.health``) or the current one (``health``)."""
    health = _get(info, "health")
    if not isinstance(health, Mapping):
        health = _get(info, "hw", "health")
    temperature = _number(_get(health, "temp", "cpu"))
    uptime = _number(_get(info, "uptime", "total"))
    throttled = _get(health, "throttling", "parsed_flags", "throttled", "now")
    image = _get(msd, "drive", "image", "name")
    return Poll(
        online=True,
        power=_flag(_get(atx, "leds", "power")) if _get(atx, "enabled") is not False else None,
        hid_online=_flag(_get(hid, "online")),
        msd_connected=_flag(_get(msd, "drive", "connected")),
        msd_image=image if isinstance(image, str) else None,
        temperature=temperature,
        uptime_s=int(uptime) if uptime is not None else None,
        throttled=_flag(throttled),
    )


def missed(error: str) -> Poll:
    """The :class:`Poll` of a device that did not answer."""
    return Poll(online=False, error=error)


def evaluate(
    status: Status,
    poll: Poll,
    *,
    offline_after: int = OFFLINE_AFTER,
    over_temp_c: float = OVER_TEMP_C,
    hysteresis_c: float = HYSTERESIS_C,
) -> tuple[Status, list[str]]:
    """The device's status after ``poll`` and the alerts the poll raises (see the module
    docstring); ``offline_after`` is at least 1."""
    offline_after = max(1, int(offline_after))
    alerts: list[str] = []
    if not poll.online:
        count = status.missed + 1
        offline = status.offline or count >= offline_after
        if offline and not status.offline:
            alerts.append("offline")
        # a device that cannot be read keeps its last known temperature standing
        return Status(missed=count, offline=offline, hot=status.hot), alerts
    if status.offline:
        alerts.append("online")
    hot = status.hot
    if poll.temperature is not None:
        if not hot and poll.temperature >= over_temp_c:
            hot = True
            alerts.append("over_temperature")
        elif hot and poll.temperature <= over_temp_c - hysteresis_c:
            hot = False
            alerts.append("temperature_ok")
    return Status(missed=0, offline=False, hot=hot), alerts
