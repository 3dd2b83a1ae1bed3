"""The PiKVM pages and their JSON API: every registered device with its state, and one
device with its polls over time (a temperature chart and the polls' table), the device
page's buttons: power (``kvm.power``), mount an image of the ISO library and eject
(``kvm.media``), and a device's console page. Thin views over
:mod:`saltext_fleet.webui.kvm_ops`; reading needs ``view``, the console ``kvm.watch``
(typing on it ``kvm.console``).

Blueprints: ``kvm`` (the pages) and ``kvm_api`` (registered under ``/api/v1``).
"""

from __future__ import annotations

from flask import Blueprint, flash, jsonify, redirect, render_template, request, url_for

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
        **kvm_ops.controls(name),
        **values,
    )


@bp.route("/kvm/<name>/power", methods=["POST"])
@requires("kvm.power")
def power(name):
    """Power the device's server on, off or reset it (rate-limited; refusals are flashed)."""
    flash(kvm_ops.power(name, request.form.get("action") or ""))
    return redirect(url_for("kvm.device", name=name), 303)


@bp.route("/kvm/<name>/media/mount", methods=["POST"])
@requires("kvm.media")
def mount(name):
    """Start mounting an image of the ISO library on the device."""
    flash(kvm_ops.start_mount(name, request.form.get("iso") or ""))
    return redirect(url_for("kvm.device", name=name), 303)


@bp.route("/kvm/<name>/media/eject", methods=["POST"])
@requires("kvm.media")
def eject(name):
    """Eject the device's virtual drive."""
    flash(kvm_ops.eject(name))
    return redirect(url_for("kvm.device", name=name), 303)


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
