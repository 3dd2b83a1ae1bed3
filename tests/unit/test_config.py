"""The ``fleet:`` options: defaults, and a clear error naming the option for each bad value."""

import pytest

from saltext_fleet import config

OPTS = {"cachedir": "/var/cache/salt/master", "pki_dir": "/etc/salt/pki/master"}


def test_defaults_without_a_fleet_section():
    cfg = config.load(OPTS)
    assert cfg.db_url == "sqlite:////var/cache/salt/master/fleet/fleet.db"
    assert cfg.key_file == "/etc/salt/pki/master/fleet.fernet"
    assert (cfg.ui.host, cfg.ui.port, cfg.ui.tls_cert) == ("127.0.0.1", 8443, None)
    assert (cfg.ui.header_timeout, cfg.ui.body_timeout) == (10, 30)
    assert cfg.ui.max_connections_per_address == 64
    assert (cfg.gate.mode, cfg.gate.ttl, cfg.gate.master) == ("enrolment", 86400, None)
    assert cfg.drift.alert_score == 50.0
    assert cfg.inventory.pip == ()
    assert cfg.onboard.beacon_interval == 60


def test_full_section_is_read():
    cfg = config.load(
        {
            **OPTS,
            "fleet": {
                "db_url": "postgresql+psycopg://fleet@127.0.0.1/fleet",
                "key_file": "/srv/fleet.key",
                "ui": {
                    "host": "0.0.0.0",
                    "port": 9443,
                    "tls_cert": "/c",
                    "tls_key": "/k",
                    "header_timeout": 2.5,
                    "body_timeout": 60,
                    "max_connections_per_address": 500,
                },
                "gate": {"mode": "manual", "ttl": "2h", "master": "salt.example", "seen_window": 5},
                "drift": {"alert_score": 12},
                "inventory": {"pip": "/usr/bin/python3"},
            },
        }
    )
    assert cfg.db_url.startswith("postgresql+psycopg://")
    assert cfg.ui.port == 9443 and cfg.ui.tls_key == "/k"
    assert (cfg.ui.header_timeout, cfg.ui.body_timeout) == (2.5, 60)
    assert cfg.ui.max_connections_per_address == 500
    assert cfg.gate == config.GateConfig("manual", 7200, "salt.example", 5)
    assert cfg.drift.alert_score == 12.0
    assert cfg.inventory.pip == ("/usr/bin/python3",)
    assert cfg.as_dict()["inventory"]["pip"] == ["/usr/bin/python3"]


@pytest.mark.parametrize(
    "section, option, words",
    [
        ({"ui": {"port": 70000}}, "fleet:ui:port", "TCP port"),
        ({"ui": {"port": "8443"}}, "fleet:ui:port", "TCP port"),
        ({"ui": {"port": True}}, "fleet:ui:port", "TCP port"),
        ({"ui": {"prot": 1}}, "fleet:ui:prot", "unknown option"),
        ({"ui": {"tls_cert": "/c"}}, "fleet:ui:tls_key", "together"),
        ({"ui": "127.0.0.1"}, "fleet:ui", "mapping"),
        ({"ui": {"header_timeout": 0}}, "fleet:ui:header_timeout", "seconds above 0"),
        ({"ui": {"header_timeout": "10s"}}, "fleet:ui:header_timeout", "seconds"),
        ({"ui": {"body_timeout": 7200}}, "fleet:ui:body_timeout", "up to 3600"),
        ({"ui": {"body_timeout": float("nan")}}, "fleet:ui:body_timeout", "seconds"),
        (
            {"ui": {"max_connections_per_address": 0}},
            "fleet:ui:max_connections_per_address",
            "1 to",
        ),
        (
            {"ui": {"max_connections_per_address": 2.5}},
            "fleet:ui:max_connections_per_address",
            "whole",
        ),
        ({"gate": {"mode": "auto"}}, "fleet:gate:mode", "never blanket"),
        ({"gate": {"ttl": "forever"}}, "fleet:gate:ttl", "duration"),
        ({"gate": {"ttl": "90d"}}, "fleet:gate:ttl", "at most 30 days"),
        ({"gate": {"seen_window": 0}}, "fleet:gate:seen_window", "seconds"),
        ({"gate": {"autosign": True}}, "fleet:gate:autosign", "unknown option"),
        ({"onboard": {"sync": "yes"}}, "fleet:onboard:sync", "true or false"),
        ({"onboard": {"inventory_minutes": -1}}, "fleet:onboard:inventory_minutes", "0 to"),
        ({"onboard": {"beacon_interval": "1m"}}, "fleet:onboard:beacon_interval", "0 to"),
        ({"drift": {"alert_score": -1}}, "fleet:drift:alert_score", ">= 0"),
        ({"drift": {"alert_score": "high"}}, "fleet:drift:alert_score", "number"),
        ({"db_url": "mysql://x@y/z"}, "fleet:db_url", "scheme"),
        ({"db_url": 5}, "fleet:db_url", "string"),
        ({"key_file": "relative/key"}, "fleet:key_file", "absolute"),
        ({"inventory": {"pip": ["python3"]}}, "fleet:inventory:pip", "absolute"),
        ({"inventory": {"pip": {"a": 1}}}, "fleet:inventory:pip", "list"),
        ({"dirft": {}}, "fleet:dirft", "unknown option"),
        ({"grains": {"keychains": ["login.keychain"]}}, "fleet:grains:keychains", "absolute"),
    ],
)
def test_bad_values_name_the_option(section, option, words):
    with pytest.raises(config.FleetConfigError) as err:
        config.load({**OPTS, "fleet": section})
    assert err.value.option == option
    assert option in str(err.value)
    assert words in str(err.value)


def test_fleet_section_must_be_a_mapping():
    with pytest.raises(config.FleetConfigError, match="fleet: expected a mapping"):
        config.load({**OPTS, "fleet": ["db_url"]})


def test_password_is_not_echoed_in_errors():
    with pytest.raises(config.FleetConfigError) as err:
        config.load({**OPTS, "fleet": {"db_url": "mysql://fleet:s3cret@db/fleet"}})
    assert "s3cret" not in str(err.value)


def test_actions_default_per_os_and_can_be_changed_or_removed():
    cfg = config.load({})
    assert cfg.commands_for({"os": "NixOS"})["switch"].cmd == "nixos-rebuild switch"
    assert "home-manager switch" in cfg.commands_for({"os": "MacOS"})["pull-switch"].cmd
    assert cfg.commands_for({"os": "Debian"}) == {}
    assert cfg.commands_for(None) == {}
    cfg = config.load(
        {
            "fleet": {
                "actions": {
                    "NixOS": {
                        "test": None,
                        "switch": {
                            "cmd": "nixos-rebuild switch --flake .",
                            "cwd": "/etc/nixos",
                            "timeout": 600,
                        },
                    },
                    "Debian": {"pull": "git -C /srv/ops pull --ff-only"},
                }
            }
        }
    )
    nixos = cfg.commands_for({"os": "NixOS"})
    assert "test" not in nixos and nixos["switch"].cwd == "/etc/nixos"
    assert nixos["switch"].timeout == 600 and nixos["pull"].cmd.startswith("git -C /etc/nixos")
    # os_family when the os itself has none
    assert cfg.commands_for({"os": "Raspbian", "os_family": "Debian"})["pull"].runas is None


@pytest.mark.parametrize(
    "actions, option",
    [
        ({"NixOS": {"reboot": "reboot"}}, "fleet:actions:NixOS:reboot"),
        ({"NixOS": {"switch": {"cmd": ""}}}, "fleet:actions:NixOS:switch:cmd"),
        ({"NixOS": {"switch": {"cmd": "x", "cwd": "etc"}}}, "fleet:actions:NixOS:switch:cwd"),
        ({"NixOS": {"switch": {"cmd": "x", "timeout": 0}}}, "fleet:actions:NixOS:switch:timeout"),
        ({"NixOS": {"switch": {"cmd": "x", "shell": "zsh"}}}, "fleet:actions:NixOS:switch:shell"),
        ({"NixOS": ["switch"]}, "fleet:actions:NixOS"),
        (["NixOS"], "fleet:actions"),
    ],
)
def test_bad_actions_name_the_option(actions, option):
    with pytest.raises(config.FleetConfigError) as exc:
        config.load({"fleet": {"actions": actions}})
    assert exc.value.option == option


def test_ui_eauth_maps_users_and_groups_to_roles():
    cfg = config.load(
        {
            "fleet": {
                "ui": {"eauth": {"backend": "pam", "roles": {"ops%": "operator", "alice": "admin"}}}
            }
        }
    )
    assert cfg.ui.eauth == "pam" and dict(cfg.ui.eauth_roles) == {
        "ops%": "operator",
        "alice": "admin",
    }
    # the snippet's shape round-trips
    again = config.load({"fleet": cfg.as_dict()})
    assert again.ui == cfg.ui
    assert "eauth" not in config.load({}).as_dict()["ui"]


@pytest.mark.parametrize(
    "eauth, option",
    [
        ({"backend": "pam"}, "fleet:ui:eauth:roles"),
        ({"backend": "pam", "roles": {"ops%": "root"}}, "fleet:ui:eauth:roles:ops%"),
        ({"backend": "../x", "roles": {"*": "viewer"}}, "fleet:ui:eauth:backend"),
        ({"roles": {"*": "viewer"}}, "fleet:ui:eauth:backend"),
        ({"backend": "pam", "roles": {"*": "viewer"}, "groups": 1}, "fleet:ui:eauth:groups"),
    ],
)
def test_bad_ui_eauth_names_the_option(eauth, option):
    with pytest.raises(config.FleetConfigError) as exc:
        config.load({"fleet": {"ui": {"eauth": eauth}}})
    assert exc.value.option == option


@pytest.mark.parametrize(
    "value, expected",
    [
        (None, "high"),
        ("critical", "critical"),
        ("Medium", "medium"),
        ("any", "any"),
        (False, "off"),
    ],
)
def test_vulns_alert_severity(value, expected):
    section = {} if value is None else {"vulns": {"alert_severity": value}}
    cfg = config.load({"fleet": section, "cachedir": "/tmp/c", "pki_dir": "/tmp/p"})
    assert cfg.vulns.alert_severity == expected


@pytest.mark.parametrize("value", ["severe", 7, ["high"], ""])
def test_bad_vulns_alert_severity_names_the_option(value):
    with pytest.raises(
        config.FleetConfigError, match="fleet:vulns:alert_severity: .* is not one of"
    ):
        config.load(
            {"fleet": {"vulns": {"alert_severity": value}}, "cachedir": "/c", "pki_dir": "/p"}
        )
    with pytest.raises(config.FleetConfigError, match="fleet:vulns"):
        config.load({"fleet": {"vulns": {"alert": "high"}}, "cachedir": "/c", "pki_dir": "/p"})
