"""What the PiKVM pages and their JSON API both do: check the device name and the history
window (``404`` for a device not registered, ``400`` naming a bad parameter) and read
:mod:`saltext_fleet.store.kvm`. Reading needs the ``view`` permission; the registry itself is
written by ``salt-run fleet.kvm_add`` (credentials never reach the web layer).

The device page's buttons (``kvm.power``: power on, off, reset; ``kvm.media``: mount an image
of the ISO library, eject) run the ``fleet.kvm_*`` runners through Salt's RunnerClient as the
user, like every action of the UI; the runners take the device's rate-limit slot and audit.
A mount uploads for minutes, so the page takes the device's ISO slot itself first (a refusal
is the answer to the click, audited) and runs ``fleet.kvm_iso_mount`` with that hold in a
thread of the engine; the page shows its progress from the slot's row.
"""

from __future__ import annotations

import datetime as dt
import importlib.util
import logging
import threading
from typing import Any

from flask import abort, g, request, url_for

from saltext_fleet import config
from saltext_fleet.core import gate as core_gate
from saltext_fleet.core import webauth
from saltext_fleet.core.errors import FleetError
from saltext_fleet.master import kvmops
from saltext_fleet.store import audit as store_audit
from saltext_fleet.store import kvm as store_kvm
from saltext_fleet.store import kvm_actions as store_actions
from saltext_fleet.webui import charts
from saltext_fleet.webui.base import actor, ctx, salt
from saltext_fleet.webui.salt import SaltError

log = logging.getLogger(__name__)

#: The history windows a device page offers, in hours (the default first).
WINDOWS = (24, 6, 168)
#: How to register a device, for the empty page.
ADD_HINT = "salt-run fleet.kvm_add <name> host=<address> password_file=<file> fingerprint=<sha256>"
#: The power buttons of a device page: action -> label.
POWER_ACTIONS = {
    "on": "Power on",
    "off": "Power off",
    "off_hard": "Force off",
    "reset_hard": "Reset",
}
#: How many of a device's recent actions its page lists (for those who may read the audit).
RECENT_ACTIONS = 15


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
        upload = store_actions.running_media(conn, name)
    since = dt.datetime.now(dt.timezone.utc) - dt.timedelta(hours=hours)
    history = store_kvm.poll_history(ctx().engine, name, since=since)
    return {
        "device": found,
        "history": history,
        "hours": hours,
        "windows": WINDOWS,
        "media": _shown_slot(upload),
    }


def _shown_slot(slot: dict[str, Any] | None) -> dict[str, Any] | None:
    if slot is None:
        return None
    return {
        "action": slot["action"],
        "actor": slot["actor"],
        "image": slot["image"],
        "started_at": slot["started_at"].isoformat() if slot["started_at"] else None,
        "done_bytes": slot["done_bytes"],
        "total_bytes": slot["total_bytes"],
        "percent": slot["percent"],
    }


def _role() -> str | None:
    user = g.get("user")
    return user["role"] if user else None


def controls(name: str) -> dict[str, Any]:
    """What the device page offers the user: the power buttons (``kvm.power``), the library's
    images to mount (``kvm.media``), and the device's recent actions (``audit.view``)."""
    role = _role()
    out: dict[str, Any] = {"power_actions": {}, "library": [], "recent": []}
    if webauth.allowed(role, "kvm.power"):
        out["power_actions"] = POWER_ACTIONS
    if webauth.allowed(role, "kvm.media"):
        with ctx().engine.connect() as conn:
            out["library"] = store_actions.isos(conn)
    if webauth.allowed(role, "audit.view"):
        events = store_audit.events(ctx().engine, limit=200, target=name)
        out["recent"] = [e for e in events if e["action"].startswith("kvm.")][:RECENT_ACTIONS]
    return out


# -- actions -------------------------------------------------------------------------------------


def _kvm_settings() -> config.KvmConfig:
    return getattr(ctx().config, "kvm", None) or config.KvmConfig()


def _actions() -> kvmops.KvmActions:
    return kvmops.KvmActions(ctx().engine, ctx().vault, _kvm_settings(), actor())


def _registered(name: str) -> str:
    valid_device(name)
    with ctx().engine.connect() as conn:
        try:
            store_kvm.device(conn, name)
        except store_kvm.KvmStoreError:
            abort(404, description=f"no KVM device named {name!r}")
    return name


def power(name: str, action: str) -> str:
    """Run ``fleet.kvm_power`` as the user; what to flash (the result, or the refusal)."""
    _registered(name)
    if action not in POWER_ACTIONS:
        abort(400, description=f"action: one of {', '.join(POWER_ACTIONS)}")
    try:
        result = salt().runner("fleet.kvm_power", {"device": name, "action": action}, user=actor())
    except SaltError as exc:
        return str(exc)
    clicked = (result or {}).get("clicked")
    done = "done" if clicked or clicked is None else "nothing to do (the power LED says so)"
    return f"{name}: {POWER_ACTIONS[action].lower()}: {done}."


def eject(name: str) -> str:
    """Run ``fleet.kvm_iso_eject`` as the user; what to flash."""
    _registered(name)
    try:
        result = salt().runner("fleet.kvm_iso_eject", {"device": name}, user=actor())
    except SaltError as exc:
        return str(exc)
    image = (result or {}).get("image")
    return f"{name}: virtual drive ejected" + (f" ({image})." if image else " (it was empty).")


def start_mount(name: str, iso: str) -> str:
    """Take the device's ISO slot for the library image ``iso`` and run
    ``fleet.kvm_iso_mount`` with that hold in a thread; what to flash (started, or why not)."""
    _registered(name)
    if not iso:
        abort(400, description="iso: choose an image of the library")
    ops = _actions()
    try:
        token = ops.take_media(name, iso)
    except FleetError as exc:  # the rate limit, an image not in the library
        return str(exc)
    gateway, who = salt(), actor()

    def run() -> None:
        try:
            gateway.runner(
                "fleet.kvm_iso_mount", {"device": name, "iso": iso, "hold": token}, user=who
            )
        except Exception as exc:  # noqa: BLE001 - a thread's last word: the hold goes back
            # (a runner failure is audited by the runner; anything else is logged here)
            log.warning("fleet: mounting %s on %s from the UI failed: %s", iso, name, exc)
            ops.release_media(name, token)

    threading.Thread(target=run, name=f"fleet-ui-kvm-mount-{name}", daemon=True).start()
    return f"{name}: mounting {iso} started; its progress shows on this page."


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
