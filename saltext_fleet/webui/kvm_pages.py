"""The PiKVM pages and their JSON API: every registered device with its state, and one
device with its polls over time (a temperature chart and the polls' table), and a device's
console page. Thin views over :mod:`saltext_fleet.webui.kvm_ops`; reading needs ``view``,
the console ``kvm.watch`` (typing on it ``kvm.console``).

Blueprints: ``kvm`` (the pages) and ``kvm_api`` (registered under ``/api/v1``).
"""

from __future__ import annotations

from flask import Blueprint, jsonify, render_template

from saltext_fleet.webui import kvm_ops
from saltext_fleet.webui.base import requires

bp = Blueprint("kvm", __name__)
api_bp = Blueprint("kvm_api", __name__)


@bp.route("/kvm")
@requires("view")
def devices():
    """Every PiKVM device: its node, state, power, temperature and last poll."""
    return render_template("kvm.html", **kvm_ops.devices_page())


@bp.route("/kvm/<name>")
@requires("view")
def device(name):
    """One device: its status, and its polls of the last hours with a temperature chart."""
    values = kvm_ops.device_page(name)
    return render_template(
        "kvm_device.html",
        chart=kvm_ops.temperature_chart(values["history"], kvm_ops.over_temp()),
        **values,
    )


@bp.route("/kvm/<name>/console")
@requires("kvm.watch")
def console(name):
    """A device's console: its video through the engine and, with ``kvm.console``, its
    keyboard and mouse (the stream and the websocket are the engine's, :mod:`.console`)."""
    return render_template("kvm_console.html", **kvm_ops.console_page(name))


@api_bp.route("/kvm/devices")
@requires("view")
def devices_api():
    """Every device (no credentials) and the counts per state."""
    values = kvm_ops.devices_page()
    values.pop("add_hint")
    return jsonify(values)


@api_bp.route("/kvm/devices/<name>")
@requires("view")
def device_api(name):
    """One device and its polls of the last ``hours`` (24, 6 or 168), oldest first."""
    return jsonify(kvm_ops.device_page(name))
