"""Alerts without a database: events -> alerts, routes, and the send decisions."""

import datetime as dt
import random

import pytest

from saltext_fleet import config
from saltext_fleet.core import alerts as core
from saltext_fleet.core import certs, signing

NOW = dt.datetime(2026, 12, 5, 19, 0, tzinfo=dt.timezone.utc)
SHA1 = "ab" * 20


def drift(state, score, alert_score=50.0, **extra):
    return {
        "id": "mac-07",
        "state": state,
        "score": score,
        "previous_score": 10.0,
        "alert_score": alert_score,
        "baseline": "macos-build",
        **extra,
    }


@pytest.mark.parametrize(
    ("score", "severity"), [(50, "warning"), (74.9, "warning"), (75, "error"), (150, "critical")]
)
def test_drift_above_fires_with_a_severity_by_how_far_over(score, severity):
    alert = core.normalise("fleet/alert/drift", drift("above", score), now=NOW)
    assert alert["kind"] == "drift" and alert["node"] == "mac-07" and alert["subject"] == ""
    assert (alert["state"], alert["condition"], alert["severity"]) == ("firing", "above", severity)
    assert "macos-build" in alert["summary"] and alert["raised_at"] == NOW


def test_drift_below_resolves_and_keeps_the_events_own_time_and_data_without_signature():
    data = signing.signed(bytes(32), "fleet/alert/drift", drift("below", 5))
    data["raised_at"] = "2026-12-05T18:59:58.500000+00:00"
    alert = core.normalise("fleet/alert/drift", {**data, "_stamp": "x"}, now=NOW)
    assert (alert["state"], alert["condition"], alert["severity"]) == ("resolved", "below", "info")
    assert alert["raised_at"] == dt.datetime(2026, 12, 5, 18, 59, 58, 500000, dt.timezone.utc)
    assert "sig" not in alert["data"] and "_stamp" not in alert["data"]
    assert core.drift_severity(10, 0) == "warning"


def test_cve_fires_with_the_worst_findings_severity_and_has_a_resolved_form():
    findings = [
        {"advisory_id": "A-1", "package": "idna", "version": "3.6", "severity": "medium"},
        {"advisory_id": "A-2", "package": "jinja2", "version": "3.1.2", "severity": "critical"},
        {"advisory_id": "A-3", "package": "x", "version": "1", "severity": "high"},
    ]
    alert = core.normalise("fleet/alert/cve", {"id": "web-1", "count": 3, "findings": findings})
    assert (alert["state"], alert["condition"], alert["severity"]) == ("firing", "open", "critical")
    assert "A-2 in jinja2 3.1.2" in alert["summary"] and "3 new" in alert["summary"]
    unknown = core.normalise("fleet/alert/cve", {"id": "web-1", "findings": [{"severity": None}]})
    assert unknown["severity"] == "warning"
    gone = core.normalise("fleet/alert/cve", {"id": "web-1", "state": "resolved", "findings": []})
    assert (gone["state"], gone["condition"], gone["severity"]) == ("resolved", "resolved", "info")


@pytest.mark.parametrize(
    ("what", "subject", "state", "severity"),
    [
        ("offline", "pikvm-3:reach", "firing", "error"),
        ("online", "pikvm-3:reach", "resolved", "info"),
        ("over_temperature", "pikvm-3:temp", "firing", "warning"),
        ("temperature_ok", "pikvm-3:temp", "resolved", "info"),
    ],
)
def test_kvm_alerts_are_about_the_devices_node_and_reach_or_temperature(
    what, subject, state, severity
):
    data = {"id": "pikvm-3", "alert": what, "node": "srv-1", "poll": {"temperature": 91.0}}
    alert = core.normalise("fleet/alert/kvm", data)
    assert (alert["node"], alert["subject"], alert["state"]) == ("srv-1", subject, state)
    assert (alert["condition"], alert["severity"]) == (what, severity)
    alone = core.normalise("fleet/alert/kvm", {**data, "node": None})
    assert alone["node"] == "pikvm-3"


@pytest.mark.parametrize(
    ("threshold", "severity"),
    [("30d", "warning"), ("7d", "error"), ("1d", "critical"), ("expired", "critical")],
)
def test_cert_thresholds_have_their_severity_and_the_sha1_as_subject(threshold, severity):
    data = {
        "id": "mac-07",
        "sha1": SHA1.upper(),
        "name": "Apple Distribution: Example (TEAM123)",
        "team_id": "TEAM123",
        "not_after": "2027-01-04T00:00:00+00:00",
        "days_left": 29,
        "threshold": threshold,
    }
    alert = core.normalise("fleet/alert/cert", data)
    assert (alert["subject"], alert["condition"], alert["severity"]) == (
        SHA1.upper(),
        threshold,
        severity,
    )
    assert alert["state"] == "firing" and "Apple Distribution" in alert["summary"]


def test_the_cert_events_the_master_fires_are_understood():
    now = dt.datetime(2026, 12, 5, tzinfo=dt.timezone.utc)
    identity = certs.clean_identity(
        {"sha1": SHA1, "name": "Apple Development: Jo (AB12CD34EF)", "team_id": "AB12CD34EF",
         "not_after": "2026-12-12T00:00:00Z"}
    )  # fmt: skip
    for threshold, severity in (("7d", "error"), ("expired", "critical")):
        alert = core.normalise(
            "fleet/alert/cert", certs.alert_data("mac-1", identity, threshold, now)
        )
        assert (alert["node"], alert["subject"]) == ("mac-1", SHA1.upper())
        assert alert["severity"] == severity and "Apple Development: Jo" in alert["summary"]
    assert (
        "expires in 7 days"
        in core.normalise("fleet/alert/cert", certs.alert_data("mac-1", identity, "7d", now))[
            "summary"
        ]
    )


@pytest.mark.parametrize(
    ("tag", "data", "names"),
    [
        ("fleet/alert/drift", {"state": "above", "score": 1, "alert_score": 1}, "'id'"),
        ("fleet/alert/drift", {"id": "a", "state": "up", "score": 1, "alert_score": 1}, "'state'"),
        (
            "fleet/alert/drift",
            {"id": "a", "state": "above", "score": "x", "alert_score": 1},
            "'score'",
        ),
        (
            "fleet/alert/drift",
            {"id": "a", "state": "above", "score": True, "alert_score": 1},
            "'score'",
        ),
        ("fleet/alert/cve", {"id": "a", "findings": "x"}, "'findings'"),
        ("fleet/alert/cve", {"id": "a", "findings": []}, "'findings' is empty"),
        ("fleet/alert/cve", {"id": "a", "findings": [{"severity": "severe"}]}, "findings[0]"),
        ("fleet/alert/kvm", {"id": "k", "alert": "melted"}, "'alert'"),
        ("fleet/alert/cert", {"id": "m", "sha1": "zz", "threshold": "30d"}, "'sha1'"),
        ("fleet/alert/cert", {"id": "m", "sha1": SHA1, "threshold": "2d"}, "'threshold'"),
        ("fleet/alert/drift", drift("above", 60, raised_at="yesterday"), "'raised_at'"),
        ("fleet/alert/nope", {"id": "a"}, "tag"),
        ("fleet/other", {"id": "a"}, "tag"),
        ("fleet/alert/drift", ["id", "a"], "not a mapping"),
    ],
)
def test_malformed_events_are_a_clear_error_naming_the_field(tag, data, names):
    with pytest.raises(core.AlertError, match=None) as exc:
        core.normalise(tag, data)
    assert names in str(exc.value)
    assert isinstance(exc.value, core.FleetError)


def test_record_has_the_contracts_shape_and_a_stable_dedup_key():
    alert = core.normalise("fleet/alert/kvm", {"id": "pikvm-3", "alert": "offline"}, now=NOW)
    rec = core.record({**alert, "id": 7, "master": "m1"}, "https://fleet.example.com/")
    assert set(rec) == {
        "id", "kind", "node", "subject", "state", "condition", "severity", "summary",
        "raised_at", "tag", "master", "dedup_key", "flapping", "url", "data",
    }  # fmt: skip
    assert rec["dedup_key"] == "fleet:kvm:pikvm-3:pikvm-3:reach"
    assert rec["url"] == "https://fleet.example.com/nodes/pikvm-3"
    assert rec["raised_at"] == NOW.isoformat() and rec["flapping"] is False
    assert core.record(rec)["url"] is None


def test_event_key_comes_from_the_signature():
    data = signing.signed(bytes(32), "fleet/alert/drift", drift("above", 60))
    key = core.event_key("fleet/alert/drift", data)
    assert len(key) == 64 and key == core.event_key("fleet/alert/drift", dict(data))
    other = signing.signed(bytes(32), "fleet/alert/drift", drift("above", 61))
    assert core.event_key("fleet/alert/drift", other) != key
    with pytest.raises(core.AlertError, match="'sig'"):
        core.event_key("fleet/alert/drift", drift("above", 60))


def route(**match):
    return core.route_of("r1", "config", "webhook", match, {"url": "https://h.example/x"})


def test_routes_match_kind_severity_group_and_node_glob():
    alert = core.normalise("fleet/alert/drift", drift("above", 80))  # error
    assert route().matches(alert) and route().key == "config:r1"
    assert route(kinds=["drift", "cve"]).matches(alert)
    assert not route(kinds=["cve"]).matches(alert)
    assert route(min_severity="error").matches(alert)
    assert not route(min_severity="critical").matches(alert)
    assert route(node="mac-*").matches(alert) and not route(node="web-*").matches(alert)
    assert route(node="mac-0[0-9]").matches(alert)
    assert route(group="macs").matches(alert, "macs")
    assert not route(group="macs").matches(alert, "linux") and not route(group="macs").matches(
        alert
    )
    # a resolve goes where its trigger went, whatever its severity
    below = core.normalise("fleet/alert/drift", drift("below", 5))
    assert route(min_severity="error").matches(below)
    disabled = core.route_of("r", "ui", "slack", {}, {}, enabled=False)
    assert not disabled.matches(alert)
    test = core.normalise("fleet/alert/test", {"route": "config:r1"})
    assert not route().matches(test)


@pytest.mark.parametrize(
    ("match", "target", "names"),
    [
        ({"kinds": ["drift", "weather"]}, {}, "match:kinds"),
        ({"min_severity": "high"}, {}, "match:min_severity"),
        ({"node": "mac-[0-9"}, {}, "match:node"),
        ({"colour": "red"}, {}, "match:colour"),
        ({}, {"url": "https://x", "secret": "s3"}, "target:secret"),
        ({}, {"routing_key": "abc"}, "target:routing_key"),
        ({}, {"url": "https://user:pw@hooks.example/x"}, "target:url"),
        ({}, {"url": "https://hooks.slack.com/services/T0/B0/xyz"}, "target:url"),
    ],
)
def test_bad_routes_name_the_option(match, target, names):
    with pytest.raises(core.AlertError) as exc:
        core.route_of("r1", "config", "webhook", match, target, what="fleet:alerts:routes:r1")
    assert f"fleet:alerts:routes:r1:{names}" in str(exc.value)


def opts(alerts):
    return {"cachedir": "/tmp/x", "pki_dir": "/tmp/x", "fleet": {"alerts": alerts}}


def test_config_alerts_defaults_routes_and_round_trip():
    cfg = config.load(opts(None)).alerts
    assert cfg.routes == () and cfg.dedup_minutes == 15 and cfg.flap_changes == 3
    assert cfg.policy() == core.Policy()
    raw = {
        "routes": [
            {
                "name": "oncall",
                "destination": "pagerduty",
                "match": {"kinds": ["drift", "cve"], "min_severity": "warning", "node": "mac-*"},
                "target": {"url": "http://127.0.0.1:9/v2/enqueue"},
            },
            {"name": "hook", "destination": "webhook", "target": {"url": "https://h/x"}},
        ],
        "dedup_minutes": 5,
        "flapping": {"changes": 4, "minutes": 10},
        "retry": {"first_s": 0.5, "max_s": 30, "give_up_after_h": 2},
        "ui_url": "https://fleet.example.com",
    }
    cfg = config.load(opts(raw))
    assert [r.key for r in cfg.alerts.routes] == ["config:oncall", "config:hook"]
    assert cfg.alerts.routes[0].kinds == ("drift", "cve")
    assert cfg.alerts.policy().retry_first_s == 0.5 and cfg.alerts.flap_minutes == 10
    again = config.load(opts(cfg.as_dict()["alerts"]))
    assert again.alerts == cfg.alerts


@pytest.mark.parametrize(
    ("raw", "option"),
    [
        ({"routes": [{"name": "a", "destination": "fax"}]}, "fleet:alerts:routes:a:destination"),
        (
            {"routes": [{"name": "a", "destination": "slack", "match": {"kinds": ["x"]}}]},
            "fleet:alerts:routes:a:match:kinds",
        ),
        (
            {"routes": [{"name": "a", "destination": "slack", "match": {"min_severity": "x"}}]},
            "fleet:alerts:routes:a:match:min_severity",
        ),
        (
            {"routes": [{"name": "a", "destination": "slack", "match": {"node": "[ab"}}]},
            "fleet:alerts:routes:a:match:node",
        ),
        (
            {"routes": [{"name": "a", "destination": "webhook"}] * 2},
            "fleet:alerts:routes:a:name",
        ),
        (
            {"routes": [{"name": "a", "destination": "email", "target": {"password": "x"}}]},
            "fleet:alerts:routes:a:target:password",
        ),
        ({"routes": [{"name": "bad name", "destination": "slack"}]}, "fleet:alerts:routes:0:name"),
        ({"routes": [{"name": "a", "destination": "slack", "to": 1}]}, "fleet:alerts:routes:a:to"),
        ({"routes": "oncall"}, "fleet:alerts:routes"),
        ({"dedup_minutes": -1}, "fleet:alerts:dedup_minutes"),
        ({"flapping": {"changes": 2.5}}, "fleet:alerts:flapping:changes"),
        ({"retry": {"first_s": 10, "max_s": 5}}, "fleet:alerts:retry:max_s"),
        ({"ui_url": "fleet.example.com"}, "fleet:alerts:ui_url"),
        ({"colour": 1}, "fleet:alerts:colour"),
    ],
)
def test_bad_alert_options_name_the_option(raw, option):
    with pytest.raises(config.FleetConfigError) as exc:
        config.load(opts(raw))
    assert exc.value.option == option, str(exc.value)


def minutes(n):
    return NOW + dt.timedelta(minutes=n)


def test_duplicate_window_is_per_condition_and_configurable():
    last = {"at": NOW.isoformat(), "condition": "above"}
    assert core.is_duplicate(last, "above", minutes(14.9), 15)
    assert not core.is_duplicate(last, "above", minutes(15), 15)
    assert not core.is_duplicate(last, "below", minutes(1), 15)  # a change is never one
    assert not core.is_duplicate(last, "above", minutes(1), 0)  # 0: off
    assert not core.is_duplicate(None, "above", NOW, 15)
    assert core.is_duplicate(last, "above", minutes(40), 60)


def test_flapping_four_changes_in_thirty_minutes_is_one_grouped_alert_then_quiet():
    changes, flapping, verdicts = (), False, []
    for n in range(6):
        flap = core.flap_decision(changes, True, flapping, minutes(n * 5), 3, 30)
        changes, flapping = flap.changes, flap.flapping
        verdicts.append(flap.verdict)
    assert verdicts == [None, None, None, "start", "quiet", "quiet"]
    # unchanged repeats stay quiet while it flaps
    assert core.flap_decision(changes, False, True, minutes(26), 3, 30).verdict == "quiet"
    # fewer changes within the window: settled, delivered again
    later = core.flap_decision(changes, True, True, minutes(60), 3, 30)
    assert later.verdict == "settled" and not later.flapping
    assert core.settled(changes, minutes(55), 30) and not core.settled(changes, minutes(40), 30)
    # changes spread out never flap; 0 turns it off
    spread = ()
    for n in range(8):
        flap = core.flap_decision(spread, True, False, minutes(n * 11), 3, 30)
        spread = flap.changes
        assert flap.verdict is None
    assert core.flap_decision(changes, True, False, minutes(26), 0, 30).verdict is None


def test_the_flapping_alert_groups_the_changes():
    alert = core.normalise("fleet/alert/drift", drift("below", 5))
    grouped = core.flapping_alert(alert, ["a", "b", "c", "d"], 30)
    assert grouped["condition"] == core.FLAPPING and grouped["state"] == "firing"
    assert grouped["severity"] == "warning" and "4 changes in 30 minutes" in grouped["summary"]
    assert grouped["data"]["flapping"]["now"] == "below"
    assert core.record({**grouped, "id": 1})["flapping"] is True


def test_ack_holds_until_the_condition_changes():
    assert core.ack_decision(None, "above") is None
    assert core.ack_decision("above", "above") == "suppress"
    assert core.ack_decision("above", "below") == "clear"


def test_retry_back_off_is_exponential_with_jitter_capped_and_gives_up():
    rand = random.Random(7)
    delays = [core.retry_delay(n, 2, 300, rand) for n in range(1, 12)]
    for n, delay in enumerate(delays[:7], 1):
        base = 2 * 2 ** (n - 1)
        assert base * 0.8 <= delay <= base * 1.2
    assert all(d <= 300 for d in delays) and delays[-1] >= 240
    assert len({round(d, 6) for d in delays}) == len(delays)  # jittered
    assert core.retry_delay(1, 2, 300, rand, jitter=0) == 2
    assert not core.gives_up(NOW, minutes(60 * 24 - 1), 24)
    assert core.gives_up(NOW, minutes(60 * 24), 24)
