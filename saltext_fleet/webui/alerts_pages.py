"""The alert pages and their JSON API: the fleet's alerts (filtered, paged, each with its
deliveries and its condition's acknowledgement) with an Acknowledge button, one alert with
every delivery attempt, the delivery log with a chart of deliveries per hour, and the routes
(the master config's, read-only, and the UI's, with forms) with a Test-send button. Thin
views over :mod:`saltext_fleet.webui.alerts_ops`: reading needs ``view``; acknowledging
``alerts.ack`` and test-sending ``alerts.test`` (operators and admins); routes and their
secrets ``alerts.routes`` (admins). Every change is a ``fleet.alert_*`` runner run as the
user through Salt, which audits it.

Blueprints: ``alerts`` (the pages) and ``alerts_api`` (registered under ``/api/v1``).
"""

from __future__ import annotations

from flask import Blueprint, abort, flash, jsonify, redirect, render_template, request, url_for

from saltext_fleet.webui import alerts_ops
from saltext_fleet.webui.base import requires

bp = Blueprint("alerts", __name__)
api_bp = Blueprint("alerts_api", __name__)


@bp.route("/alerts")
@requires("view")
def alerts():
    """The fleet's alerts, newest first: filters, deliveries, acknowledgement."""
    return render_template(
        "alerts.html",
        **alerts_ops.alerts_page(),
        severities=alerts_ops.alert_views.SEVERITIES,
        states=alerts_ops.alert_views.STATES,
        suppressed_filters=alerts_ops.alert_views.SUPPRESSED_FILTERS,
    )


@bp.route("/alerts/<alert_id>")
@requires("view")
def alert(alert_id):
    """One alert: its data, its condition, each delivery with every attempt."""
    return render_template("alert.html", **alerts_ops.alert_page(alert_id))


@bp.route("/alerts/ack", methods=["POST"])
@requires("alerts.ack")
def ack():
    """Acknowledge an alert's condition (``fleet.alert_ack``): repeats stop until the
    condition changes."""
    flash(alerts_ops.acknowledge(request.form))
    return redirect(alerts_ops.back_url(request.form, url_for("alerts.alerts")), 303)


@bp.route("/alerts/unack", methods=["POST"])
@requires("alerts.ack")
def unack():
    """Withdraw the acknowledgement of an alert's condition (``fleet.alert_unack``)."""
    flash(alerts_ops.withdraw(request.form))
    return redirect(alerts_ops.back_url(request.form, url_for("alerts.alerts")), 303)


@bp.route("/alerts/deliveries")
@requires("view")
def deliveries():
    """The delivery log: each delivery with its newest attempts, and deliveries per hour."""
    values = alerts_ops.deliveries_page()
    return render_template(
        "alert_deliveries.html", chart=alerts_ops.deliveries_chart(values["over_time"]), **values
    )


@bp.route("/alerts/routes")
@requires("view")
def routes():
    """The master config's routes and the UI's; the forms (admins) and Test-send
    (operators)."""
    return render_template("alert_routes.html", **alerts_ops.routes_page())


@bp.route("/alerts/routes", methods=["POST"])
@requires("alerts.routes")
def route_set():
    """Add or change a UI route (``fleet.alert_route_set``)."""
    flash(alerts_ops.set_route(request.form))
    return redirect(url_for("alerts.routes"), 303)


@bp.route("/alerts/routes/<name>/delete", methods=["POST"])
@requires("alerts.routes")
def route_delete(name):
    """Delete a UI route and its secrets (``fleet.alert_route_delete``)."""
    flash(alerts_ops.delete_route(name))
    return redirect(url_for("alerts.routes"), 303)


@bp.route("/alerts/routes/secret", methods=["POST"])
@requires("alerts.routes")
def route_secret():
    """Set one secret of a route, of the UI or the master config (``fleet.alert_secret``)."""
    flash(alerts_ops.set_secret(request.form))
    return redirect(url_for("alerts.routes"), 303)


@bp.route("/alerts/routes/test", methods=["POST"])
@requires("alerts.test")
def route_test():
    """Send a test alert through one route now (``fleet.alert_test``); the routes page shows
    the outcome."""
    outcome = alerts_ops.send_test(request.form)
    return redirect(url_for("alerts.routes", _anchor=f"route-{outcome['route']}"), 303)


# -- API -------------------------------------------------------------------------------------------


@api_bp.route("/alerts")
@requires("view")
def alerts_api():
    """Alerts, newest first (the page's filters and paging), with deliveries and acks."""
    values = alerts_ops.alerts_page()
    return jsonify(
        {
            "query": values["query"].args(),
            "summary": values["summary"],
            "latest": values["latest"],
            **values["page"],
        }
    )


@api_bp.route("/alerts/<alert_id>")
@requires("view")
def alert_api(alert_id):
    """One alert with its data, deliveries and attempts."""
    return jsonify(alerts_ops.alert_page(alert_id)["alert"])


@api_bp.route("/alerts/deliveries")
@requires("view")
def deliveries_api():
    """The delivery log (``status``, ``route``, ``alert``, paging) and deliveries per hour."""
    values = alerts_ops.deliveries_page()
    return jsonify(
        {
            "query": values["query"].args(),
            "over_time": values["over_time"],
            **values["page"],
        }
    )


@api_bp.route("/alerts/ack", methods=["POST"])
@requires("alerts.ack")
def ack_api():
    """Acknowledge a condition: ``{"kind", "node", "subject", "comment"}``; the condition."""
    body = request.get_json(silent=True) if request.content_length else {}
    if not isinstance(body, dict):
        abort(400, description="the body must be a JSON object")
    return jsonify(alerts_ops.acknowledge_api(body))
