"""What the PiKVM pages and their JSON API both do: check the device name and the history
window (``404`` for a device not registered, ``400`` naming a bad parameter) and read
:mod:`saltext_fleet.store.kvm`. Reading needs the ``view`` permission; the registry itself is
written by ``salt-run fleet.kvm_add`` (credentials never reach the web layer).
"""

from __future__ import annotations

import datetime as dt
import importlib.util
from typing import Any

from flask import abort, g, request, url_for

from saltext_fleet.core import gate as core_gate
from saltext_fleet.core import webauth
from saltext_fleet.store import kvm as store_kvm
from saltext_fleet.webui import charts
from saltext_fleet.webui.base import ctx

#: The history windows a device page offers, in hours (the default first).
WINDOWS = (24, 6, 168)
#: How to register a device, for the empty page.
ADD_HINT = "salt-run fleet.kvm_add <name> host=<address> password_file=<file> fingerprint=<sha256>"


def valid_device(name: str) -> str:
    """``name`` when it can be a device's name; 404 otherwise."""
    if not core_gate.is_minion_id(name):
        abort(404, description="no such KVM device")
    return name


def hours_arg() -> int:
    """The ``hours`` of history asked for: one of :data:`WINDOWS` (400 otherwise)."""
    raw = request.args.get("hours")
    if raw is None or raw == "":
        return WINDOWS[0]
    if not raw.isdigit() or int(raw) not in WINDOWS:
        abort(400, description=f"hours: one of {', '.join(map(str, WINDOWS))}, not {raw[:20]!r}")
    return int(raw)


def devices_page() -> dict[str, Any]:
    with ctx().engine.connect() as conn:
        listed = store_kvm.devices(conn)
    return {"devices": listed, "counts": store_kvm.state_counts(listed), "add_hint": ADD_HINT}


def device_page(name: str) -> dict[str, Any]:
    """The device, its polls of the last ``hours`` (oldest first) and that window."""
    valid_device(name)
    hours = hours_arg()
    with ctx().engine.connect() as conn:
        try:
            found = store_kvm.device(conn, name)
        except store_kvm.KvmStoreError:
            abort(404, description=f"no KVM device named {name!r}")
    since = dt.datetime.now(dt.timezone.utc) - dt.timedelta(hours=hours)
    history = store_kvm.poll_history(ctx().engine, name, since=since)
    return {"device": found, "history": history, "hours": hours, "windows": WINDOWS}


def webrtc_available() -> bool:
    """Whether this engine has the WebRTC peer (``saltext_fleet.kvm.webrtc`` and aiortc): the
    console page then tries it first, MJPEG being the fallback."""
    try:
        return all(
            importlib.util.find_spec(name) is not None
            for name in ("aiortc", "saltext_fleet.kvm.webrtc")
        )
    except (ImportError, ValueError):
        return False


def console_page(name: str) -> dict[str, Any]:
    """The device, where its video and websocket are, and whether this user may type."""
    valid_device(name)
    with ctx().engine.connect() as conn:
        try:
            found = store_kvm.device(conn, name)
        except store_kvm.KvmStoreError:
            abort(404, description=f"no KVM device named {name!r}")
    base = url_for("kvm.device", name=name)
    return {
        "device": found,
        "input_allowed": webauth.allowed(g.user["role"], "kvm.console"),
        "stream_url": f"{base}/console/stream",
        "ws_path": f"{base}/console/ws",
        "webrtc_url": f"{base}/console/webrtc" if webrtc_available() else "",
    }


def temperature_chart(history: list[dict[str, Any]], threshold: float | None) -> str:
    """The device's CPU temperature over the window, with the over-temperature line."""
    points = [
        {"at": p["polled_at"], "temperature": p["temperature"]}
        for p in history
        if p.get("temperature") is not None
    ]
    return charts.line_chart(
        points, value="temperature", title="CPU temperature (°C)", threshold=threshold
    )


def node_devices(conn, minion_id: str) -> list[dict[str, Any]]:
    """The devices that control a node (its page's KVM section)."""
    return store_kvm.devices(conn, node=minion_id)


def over_temp() -> float | None:
    kvm = getattr(ctx().config, "kvm", None)
    return getattr(kvm, "over_temp_c", None)
