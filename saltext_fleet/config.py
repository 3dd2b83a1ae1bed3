"""One typed, validated view of the ``fleet:`` options.

Every Salt adapter reads its settings through :func:`cached`, which parses them with
:func:`load` once per process and keeps them in the adapter's ``__context__`` (parsed again when
the ``fleet`` section changes); nobody else digs into raw opts. Functions outside the adapters
(``master/``, the web UI) get ``opts`` and call :func:`load`: a parse takes some 15 µs. A bad
value raises :class:`FleetConfigError`, whose message names the option (``fleet:ui:port``) and
says what was expected.

.. code-block:: yaml

    fleet:
      db_url: postgresql+psycopg://fleet@127.0.0.1/fleet   # default: SQLite under the cachedir
      # a replicated PostgreSQL: libpq's failover between hosts (docs: replicated PostgreSQL)
      #   postgresql+psycopg://fleet@/fleet?host=db1:5432,db2:5432&target_session_attrs=read-write
      db_read_url: null            # read-only pages and runners (a standby); default: db_url
      key_file: /etc/salt/pki/master/fleet.fernet           # default: <pki_dir>/fleet.fernet
      ui: {host: 127.0.0.1, port: 8443, tls_cert: null, tls_key: null, live_poll_seconds: 10,
           header_timeout: 10, body_timeout: 30, max_connections_per_address: 64}
      gate: {mode: enrolment, ttl: 24h}                     # enrolment | manual; never auto-accept
      onboard: {sync: true, inventory_minutes: 60, highstate_test_hours: 6, beacon_interval: 60}
      drift: {alert_score: 50, weights: {extra: 2, missing: 10}, history_days: 730}
      vulns: {alert_severity: high}                         # fleet/alert/cve for new findings
      kvm: {poll_interval: 15, offline_after: 3, over_temp_c: 80,   # PiKVM polls and alerts
            power_interval: 10, iso_stale_after: 300, iso_dir: null}  # actions, ISO library
      inventory: {pip: [/usr/bin/python3]}                  # minion side: interpreters to list
      grains: {keychains: [/Library/Keychains/System.keychain]}   # minion side (macOS)
      alerts:                                               # alert delivery (the engine's worker)
        routes:
          - {name: oncall, destination: pagerduty, match: {kinds: [drift, cve], min_severity: warning}}
        dedup_minutes: 15
        flapping: {changes: 3, minutes: 30}
        retry: {first_s: 2, max_s: 300, give_up_after_h: 24}
        ui_url: https://fleet.example.com
        cert_check_minutes: 60                              # certificate expiry checks (0: off)
      actions:                                              # named commands per OS (the UI's)
        NixOS: {pull: "git -C /etc/nixos pull --ff-only", switch: "nixos-rebuild switch"}
        MacOS: {switch: {cmd: "home-manager switch", runas: build}}
"""

from __future__ import annotations

import copy
import dataclasses
import os
import stat
from collections.abc import Mapping, MutableMapping
from typing import Any

import yaml

from saltext_fleet.core import alerts as core_alerts
from saltext_fleet.core import dburl
from saltext_fleet.core.drift import weights_from
from saltext_fleet.core.errors import FleetError
from saltext_fleet.core.gate import GateError, parse_ttl
from saltext_fleet.core.webauth import ROLES

GATE_MODES = ("manual", "enrolment")
#: The named commands operators may run on a node or a group from the web UI.
ACTION_NAMES = ("pull", "switch", "pull-switch", "test")
DB_SCHEMES = ("sqlite", "postgresql", "postgresql+psycopg")


class FleetConfigError(FleetError, ValueError):
    """A ``fleet:`` option has a bad value. ``option`` is its full path, e.g. ``fleet:ui:port``."""

    def __init__(self, option: str, message: str):
        self.option = option
        super().__init__(f"bad configuration option {option}: {message}")


@dataclasses.dataclass(frozen=True)
class UIConfig:
    host: str = "127.0.0.1"
    port: int = 8443
    tls_cert: str | None = None
    tls_key: str | None = None
    #: Salt eauth backend for logins of users not kept here (``pam``, ``ldap``...), and the
    #: roles its users and groups get: ``((name or "group%" or "*", role), ...)``
    eauth: str | None = None
    eauth_roles: tuple = ()
    #: seconds between the live overview's looks at the store when no event woke it; 0: only
    #: events from the master's bus wake it
    live_poll_seconds: float = 10.0
    #: seconds a client has for a request line and headers (from connecting, or from the
    #: end of its previous request)
    header_timeout: float = 10
    #: seconds a request body may make no progress
    body_timeout: float = 30
    #: open connections one client address may have
    max_connections_per_address: int = 64


@dataclasses.dataclass(frozen=True)
class GateConfig:
    #: ``enrolment``: operators accept keys, and so do live enrolments; ``manual``: only
    #: operators (``fleet.enrol`` is refused)
    mode: str = "enrolment"
    #: default lifetime of an enrolment, in seconds
    ttl: int = 86400
    #: the master address written into enrolled minions' configuration (default: the
    #: master's ``interface`` when it is a single address, else this host's FQDN)
    master: str | None = None
    #: a pending key's ``last_seen`` is written at most this often, in seconds
    seen_window: int = 60


@dataclasses.dataclass(frozen=True)
class OnboardConfig:
    #: run saltutil.sync_all on a node when it starts
    sync: bool = True
    #: schedule fleet.inventory every N minutes (0: do not schedule)
    inventory_minutes: int = 60
    #: schedule ``state.apply test=True`` every N hours (0: do not schedule)
    highstate_test_hours: int = 6
    #: turn on the fleet_pkgset beacon with this interval in seconds (0: leave beacons alone)
    beacon_interval: int = 60


@dataclasses.dataclass(frozen=True)
class DriftConfig:
    alert_score: float = 50.0
    #: ``(kind, weight)`` pairs overriding :data:`saltext_fleet.core.drift.DEFAULT_WEIGHTS`.
    weights: tuple[tuple[str, float], ...] = ()
    #: Drift history kept, in days; 0 keeps everything.
    history_days: int = 730

    def weight_map(self) -> dict[str, float]:
        return weights_from(dict(self.weights))


#: ``fleet:vulns:alert_severity`` values: a severity (that one and above), ``any`` (every new
#: finding, unknown severity included) or ``off``.
ALERT_SEVERITIES = ("critical", "high", "medium", "low", "any", "off")


@dataclasses.dataclass(frozen=True)
class VulnsConfig:
    #: new findings at or above this severity fire ``fleet/alert/cve``
    alert_severity: str = "high"


@dataclasses.dataclass(frozen=True)
class KvmConfig:
    #: seconds between two polls of every PiKVM device
    poll_interval: float = 15.0
    #: polls missed in a row before a device is offline (``fleet/alert/kvm``)
    offline_after: int = 3
    #: CPU temperature (°C) at which a device is over temperature (``fleet/alert/kvm``)
    over_temp_c: float = 80.0
    #: seconds from one power action (power, click) on a device to the next allowed there
    power_interval: float = 10.0
    #: seconds without progress after which an ISO action's hold on a device lapses (the
    #: process running it died); one ISO mount or eject runs on a device at a time
    iso_stale_after: float = 300.0
    #: the master's ISO library (``fleet.iso_add``); default ``<cachedir>/fleet/iso``
    iso_dir: str | None = None


@dataclasses.dataclass(frozen=True)
class AlertsConfig:
    """``fleet:alerts``: where alerts go (the routes of the master config; the web UI's are
    in the store) and when they are sent again (see :mod:`saltext_fleet.core.alerts`)."""

    routes: tuple[core_alerts.Route, ...] = ()
    #: the same condition to the same route is sent once within this many minutes (0: always)
    dedup_minutes: float = 15.0
    #: more than ``flap_changes`` condition changes within ``flap_minutes``: one grouped
    #: "flapping" alert, then quiet until it settles (changes 0: off)
    flap_changes: int = 3
    flap_minutes: float = 30.0
    #: retries: the first after ``retry_first_s``, doubling up to ``retry_max_s``, given up
    #: ``give_up_after_h`` hours after the alert
    retry_first_s: float = 2.0
    retry_max_s: float = 300.0
    give_up_after_h: float = 24.0
    #: the web UI's public address, for links in the messages (None: no links)
    ui_url: str | None = None

    def policy(self) -> core_alerts.Policy:
        return core_alerts.Policy(
            dedup_minutes=self.dedup_minutes,
            flap_changes=self.flap_changes,
            flap_minutes=self.flap_minutes,
            retry_first_s=self.retry_first_s,
            retry_max_s=self.retry_max_s,
            give_up_after_h=self.give_up_after_h,
        )

    def as_dict(self) -> dict[str, Any]:
        routes = []
        for route in self.routes:
            item = {"name": route.name, "destination": route.destination}
            item["match"] = route.match_dict()
            item["target"] = dict(route.target)
            if not route.enabled:
                item["enabled"] = False
            routes.append(item)
        out: dict[str, Any] = {
            "routes": routes,
            "dedup_minutes": self.dedup_minutes,
            "flapping": {"changes": self.flap_changes, "minutes": self.flap_minutes},
            "retry": {
                "first_s": self.retry_first_s,
                "max_s": self.retry_max_s,
                "give_up_after_h": self.give_up_after_h,
            },
        }
        if self.ui_url:
            out["ui_url"] = self.ui_url
        return out


@dataclasses.dataclass(frozen=True)
class CertCheckConfig:
    """``fleet:alerts:cert_check_minutes``: minutes between two certificate expiry checks of
    the ``fleet`` engine (``fleet/alert/cert``); 0 turns the periodic check off."""

    minutes: float = 60.0


@dataclasses.dataclass(frozen=True)
class InventoryConfig:
    pip: tuple[str, ...] = ()


@dataclasses.dataclass(frozen=True)
class GrainsConfig:
    keychains: tuple[str, ...] = ()


@dataclasses.dataclass(frozen=True)
class Command:
    """A named command of ``fleet:actions``, run with Salt's ``cmd.run`` on the node."""

    cmd: str
    cwd: str | None = None
    runas: str | None = None
    timeout: int = 1800


def _commands(**named: str) -> dict[str, Command]:
    return {name: Command(cmd) for name, cmd in named.items()}


#: What ``fleet:actions`` holds when it is not set: NixOS rebuilds from the flake or
#: configuration in /etc/nixos, macOS switches home-manager (as the minion's user unless
#: ``runas`` says otherwise). An OS given in ``fleet:actions`` replaces the names it lists.
DEFAULT_ACTIONS: dict[str, dict[str, Command]] = {
    "NixOS": _commands(
        pull="git -C /etc/nixos pull --ff-only",
        switch="nixos-rebuild switch",
        **{"pull-switch": "git -C /etc/nixos pull --ff-only && nixos-rebuild switch"},
        test="nixos-rebuild dry-activate",
    ),
    "MacOS": _commands(
        pull='git -C "$HOME/.config/home-manager" pull --ff-only',
        switch="home-manager switch",
        **{
            "pull-switch": 'git -C "$HOME/.config/home-manager" pull --ff-only'
            " && home-manager switch"
        },
        test="home-manager build",
    ),
}


@dataclasses.dataclass(frozen=True)
class FleetConfig:
    db_url: str
    key_file: str
    #: where the read-only pages and runners read (a standby); None: ``db_url``
    db_read_url: str | None = None
    ui: UIConfig = UIConfig()
    gate: GateConfig = GateConfig()
    onboard: OnboardConfig = OnboardConfig()
    drift: DriftConfig = DriftConfig()
    vulns: VulnsConfig = VulnsConfig()
    kvm: KvmConfig = KvmConfig()
    alerts: AlertsConfig = AlertsConfig()
    inventory: InventoryConfig = InventoryConfig()
    grains: GrainsConfig = GrainsConfig()
    #: read from ``fleet:alerts:cert_check_minutes`` (the rest of ``fleet:alerts`` is routes)
    cert_check: CertCheckConfig = CertCheckConfig()
    actions: Mapping[str, Mapping[str, Command]] = dataclasses.field(
        default_factory=lambda: {k: dict(v) for k, v in DEFAULT_ACTIONS.items()}
    )

    def as_dict(self) -> dict[str, Any]:
        """Plain data, in the shape of the YAML it came from."""
        data = dataclasses.asdict(self)
        if self.db_read_url is None:
            data.pop("db_read_url")  # optional: absent means "read where db_url is"
        data["inventory"]["pip"] = list(self.inventory.pip)
        data["grains"]["keychains"] = list(self.grains.keychains)
        data["drift"]["weights"] = dict(self.drift.weights)
        data["alerts"] = self.alerts.as_dict()
        cert_minutes = data.pop("cert_check")["minutes"]
        data.setdefault("alerts", {})["cert_check_minutes"] = cert_minutes
        roles = data["ui"].pop("eauth_roles")
        if self.ui.eauth is None:
            data["ui"].pop("eauth")
        else:
            data["ui"]["eauth"] = {"backend": self.ui.eauth, "roles": dict(roles)}
        data["actions"] = {
            os_name: {name: dataclasses.asdict(cmd) for name, cmd in named.items()}
            for os_name, named in self.actions.items()
        }
        return data

    def commands_for(self, facts: Mapping[str, Any] | None) -> dict[str, Command]:
        """The named commands for a node with these facts (by ``os``, else ``os_family``)."""
        facts = facts or {}
        for key in ("os", "os_family"):
            value = facts.get(key)
            if isinstance(value, str) and value in self.actions:
                return dict(self.actions[value])
        return {}


class ConfigFileError(FleetError, ValueError):
    """A configuration file that cannot be used: missing, not a file, unreadable, not YAML.
    ``path`` is the file, and the message starts with it."""

    def __init__(self, path: str, message: str):
        self.path = path
        super().__init__(f"{path}: {message}")


def check_config_file(path: str) -> None:
    """Raise :class:`ConfigFileError` unless ``path`` is a readable file of YAML whose top
    level is a mapping of options (or empty): the shape of a Salt configuration file."""
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError as exc:
        raise ConfigFileError(path, "no such file") from exc
    except OSError as exc:
        raise ConfigFileError(path, f"cannot be read: {exc.strerror or exc}") from exc
    if stat.S_ISDIR(mode):
        raise ConfigFileError(path, "is a directory, not a configuration file")
    if not stat.S_ISREG(mode):
        raise ConfigFileError(path, "is not a regular file")
    try:
        with open(path, encoding="utf-8") as fh:
            content = fh.read()
    except UnicodeDecodeError as exc:
        raise ConfigFileError(path, f"is not UTF-8 text (byte {exc.start})") from exc
    except OSError as exc:
        raise ConfigFileError(path, f"cannot be read: {exc.strerror or exc}") from exc
    try:
        data = yaml.safe_load(content)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ConfigFileError(path, f"is not valid YAML{where}: {problem}") from exc
    if data is not None and not isinstance(data, Mapping):
        raise ConfigFileError(
            path,
            f"is not a configuration file: its top level is a {type(data).__name__}, "
            "not a mapping of options",
        )


def default_db_url(opts: Mapping[str, Any]) -> str:
    """The embedded default: a SQLite file under the master's cachedir."""
    cachedir = opts.get("cachedir") or "/var/cache/salt/master"
    return "sqlite:///" + os.path.join(cachedir, "fleet", "fleet.db")


def default_key_file(opts: Mapping[str, Any]) -> str:
    pki_dir = opts.get("pki_dir") or "/etc/salt/pki/master"
    return os.path.join(pki_dir, "fleet.fernet")


def load(opts: Mapping[str, Any]) -> FleetConfig:
    """Validate ``opts["fleet"]`` (missing means all defaults) into a :class:`FleetConfig`."""
    raw = opts.get("fleet")
    if raw is None:
        raw = {}
    section = _mapping(raw, "fleet")
    _known(
        section,
        "fleet",
        (
            "db_url",
            "db_read_url",
            "key_file",
            "ui",
            "gate",
            "onboard",
            "drift",
            "vulns",
            "kvm",
            "alerts",
            "inventory",
            "grains",
            "actions",
        ),
    )

    db_url = _db_url(
        _string(section.get("db_url"), "fleet:db_url") or default_db_url(opts), "fleet:db_url"
    )
    db_read_url = _string(section.get("db_read_url"), "fleet:db_read_url")
    if db_read_url is not None:
        db_read_url = _db_url(db_read_url, "fleet:db_read_url", writable=False)
        if db_read_url.startswith("sqlite") != db_url.startswith("sqlite"):
            raise FleetConfigError(
                "fleet:db_read_url", "must be the same kind of database as fleet:db_url"
            )

    key_file = _string(section.get("key_file"), "fleet:key_file") or default_key_file(opts)
    if not os.path.isabs(key_file):
        raise FleetConfigError("fleet:key_file", f"{key_file!r} must be an absolute path")

    return FleetConfig(
        db_url=db_url,
        db_read_url=db_read_url,
        key_file=key_file,
        ui=_ui(section.get("ui")),
        gate=_gate(section.get("gate")),
        onboard=_onboard(section.get("onboard")),
        drift=_drift(section.get("drift")),
        vulns=_vulns(section.get("vulns")),
        kvm=_kvm(section.get("kvm"), opts),
        alerts=_alerts(section.get("alerts")),
        inventory=_inventory(section.get("inventory")),
        grains=_grains(section.get("grains")),
        actions=_actions(section.get("actions")),
        cert_check=_cert_check(section.get("alerts")),
    )


#: Where :func:`cached` keeps the parsed options in an adapter's ``__context__``.
CONTEXT_KEY = "saltext_fleet.config"


def _source(opts: Mapping[str, Any]) -> tuple:
    """What :func:`load` reads from ``opts``: the ``fleet`` section and the defaults' roots."""
    return (opts.get("fleet"), opts.get("cachedir"), opts.get("pki_dir"))


def cached(opts: Mapping[str, Any], context: MutableMapping[str, Any] | None) -> FleetConfig:
    """:func:`load` ``opts``, once: the result is kept in ``context`` (a Salt adapter's
    ``__context__``, which lives as long as its loader) and handed out again while the
    ``fleet`` section of ``opts`` (and the ``cachedir`` and ``pki_dir`` its defaults come
    from) stays equal to what was parsed. A bad section is not kept: it raises every time.
    Without a ``context`` (a module loaded outside Salt's loader), it is parsed each call.

    .. code-block:: python

        def _cfg():
            return config.cached(__opts__, __context__)
    """
    if context is None:
        return load(opts)
    source = _source(opts)
    try:
        held = context.get(CONTEXT_KEY)
    except AttributeError:  # Salt's __context__ used outside its loader (another thread)
        return load(opts)
    if held is not None and held[0] == source:
        return held[1]
    parsed = load(opts)
    # a copy: a section changed in place must not look like the one that was parsed
    context[CONTEXT_KEY] = (copy.deepcopy(source), parsed)
    return parsed


def _ui(raw: Any) -> UIConfig:
    section = _mapping(raw or {}, "fleet:ui")
    _known(
        section,
        "fleet:ui",
        (
            "host",
            "port",
            "tls_cert",
            "tls_key",
            "eauth",
            "live_poll_seconds",
            "header_timeout",
            "body_timeout",
            "max_connections_per_address",
        ),
    )
    host = _string(section.get("host"), "fleet:ui:host") or UIConfig.host
    port = section.get("port", UIConfig.port)
    if isinstance(port, bool) or not isinstance(port, int) or not 1 <= port <= 65535:
        raise FleetConfigError("fleet:ui:port", f"{port!r} is not a TCP port (1-65535)")
    cert = _string(section.get("tls_cert"), "fleet:ui:tls_cert")
    key = _string(section.get("tls_key"), "fleet:ui:tls_key")
    if bool(cert) != bool(key):
        missing = "fleet:ui:tls_key" if cert else "fleet:ui:tls_cert"
        raise FleetConfigError(missing, "tls_cert and tls_key must be given together")
    eauth, roles = _ui_eauth(section.get("eauth"))
    poll = section.get("live_poll_seconds", UIConfig.live_poll_seconds)
    if isinstance(poll, bool) or not isinstance(poll, (int, float)) or not 0 <= poll <= 3600:
        raise FleetConfigError(
            "fleet:ui:live_poll_seconds",
            f"{poll!r} is not a number of seconds from 0 (off) to 3600",
        )
    timeouts = {}
    for name in ("header_timeout", "body_timeout"):
        value = section.get(name, getattr(UIConfig, name))
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value <= 3600:
            raise FleetConfigError(
                f"fleet:ui:{name}", f"{value!r} is not a number of seconds above 0, up to 3600"
            )
        timeouts[name] = value
    cap = section.get("max_connections_per_address", UIConfig.max_connections_per_address)
    if isinstance(cap, bool) or not isinstance(cap, int) or not 1 <= cap <= 100000:
        raise FleetConfigError(
            "fleet:ui:max_connections_per_address", f"{cap!r} is not a whole number, 1 to 100000"
        )
    return UIConfig(
        host=host,
        port=port,
        tls_cert=cert,
        tls_key=key,
        eauth=eauth,
        eauth_roles=roles,
        live_poll_seconds=float(poll),
        max_connections_per_address=cap,
        **timeouts,
    )


def _ui_eauth(raw: Any) -> tuple[str | None, tuple]:
    if raw is None:
        return None, ()
    section = _mapping(raw, "fleet:ui:eauth")
    _known(section, "fleet:ui:eauth", ("backend", "roles"))
    backend = _string(section.get("backend"), "fleet:ui:eauth:backend")
    if not backend or not backend.replace("_", "").isalnum():
        raise FleetConfigError(
            "fleet:ui:eauth:backend", "the name of a Salt eauth module (pam, ldap...)"
        )
    roles = _mapping(section.get("roles") or {}, "fleet:ui:eauth:roles")
    if not roles:
        raise FleetConfigError(
            "fleet:ui:eauth:roles", "map users, groups (name%) or * to roles, or nobody gets in"
        )
    for name, role in roles.items():
        if not isinstance(name, str) or not name:
            raise FleetConfigError("fleet:ui:eauth:roles", f"{name!r} is not a user or group")
        if role not in ROLES:
            raise FleetConfigError(
                f"fleet:ui:eauth:roles:{name}", f"{role!r} is not one of {', '.join(ROLES)}"
            )
    return backend, tuple(sorted((str(k), str(v)) for k, v in roles.items()))


def _gate(raw: Any) -> GateConfig:
    section = _mapping(raw or {}, "fleet:gate")
    _known(section, "fleet:gate", ("mode", "ttl", "master", "seen_window"))
    mode = _string(section.get("mode"), "fleet:gate:mode") or GateConfig.mode
    if mode not in GATE_MODES:
        raise FleetConfigError(
            "fleet:gate:mode",
            f"{mode!r} is not one of {', '.join(GATE_MODES)} (keys are never blanket auto-accepted)",
        )
    ttl = GateConfig.ttl
    if section.get("ttl") is not None:
        try:
            ttl = int(parse_ttl(section["ttl"], "fleet:gate:ttl").total_seconds())
        except GateError as exc:
            raise FleetConfigError("fleet:gate:ttl", str(exc).split(": ", 1)[1]) from exc
    window = section.get("seen_window", GateConfig.seen_window)
    if isinstance(window, bool) or not isinstance(window, int) or not 1 <= window <= 86400:
        raise FleetConfigError("fleet:gate:seen_window", f"{window!r} is not 1 to 86400 seconds")
    master = _string(section.get("master"), "fleet:gate:master")
    return GateConfig(mode=mode, ttl=ttl, master=master, seen_window=window)


def _onboard(raw: Any) -> OnboardConfig:
    section = _mapping(raw or {}, "fleet:onboard")
    _known(
        section,
        "fleet:onboard",
        ("sync", "inventory_minutes", "highstate_test_hours", "beacon_interval"),
    )
    sync = section.get("sync", OnboardConfig.sync)
    if not isinstance(sync, bool):
        raise FleetConfigError("fleet:onboard:sync", f"{sync!r} is not true or false")
    out = {"sync": sync}
    limits = (
        ("inventory_minutes", 10080),
        ("highstate_test_hours", 720),
        ("beacon_interval", 86400),
    )
    for name, limit in limits:
        value = section.get(name, getattr(OnboardConfig, name))
        if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= limit:
            raise FleetConfigError(f"fleet:onboard:{name}", f"{value!r} is not 0 to {limit}")
        out[name] = value
    return OnboardConfig(**out)


def _drift(raw: Any) -> DriftConfig:
    section = _mapping(raw or {}, "fleet:drift")
    _known(section, "fleet:drift", ("alert_score", "weights", "history_days"))
    score = section.get("alert_score", DriftConfig.alert_score)
    if isinstance(score, bool) or not isinstance(score, (int, float)) or score < 0:
        raise FleetConfigError("fleet:drift:alert_score", f"{score!r} is not a number >= 0")
    weights = _mapping(section.get("weights") or {}, "fleet:drift:weights")
    try:
        weights_from(weights)
    except ValueError as exc:
        raise FleetConfigError("fleet:drift:weights", str(exc)) from exc
    days = section.get("history_days", DriftConfig.history_days)
    if isinstance(days, bool) or not isinstance(days, int) or days < 0:
        raise FleetConfigError(
            "fleet:drift:history_days", f"{days!r} is not a whole number of days >= 0 (0: keep all)"
        )
    return DriftConfig(
        alert_score=float(score),
        weights=tuple(sorted((k, float(v)) for k, v in weights.items())),
        history_days=days,
    )


def _vulns(raw: Any) -> VulnsConfig:
    section = _mapping(raw or {}, "fleet:vulns")
    _known(section, "fleet:vulns", ("alert_severity",))
    severity = section.get("alert_severity", VulnsConfig.alert_severity)
    if severity is False:  # YAML's bare ``off``
        severity = "off"
    if not isinstance(severity, str) or severity.lower() not in ALERT_SEVERITIES:
        raise FleetConfigError(
            "fleet:vulns:alert_severity",
            f"{severity!r} is not one of {', '.join(ALERT_SEVERITIES)}",
        )
    return VulnsConfig(alert_severity=severity.lower())


def default_iso_dir(opts: Mapping[str, Any]) -> str:
    """The ISO library's default folder: ``fleet/iso`` under the master's cachedir."""
    cachedir = opts.get("cachedir") or "/var/cache/salt/master"
    return os.path.join(cachedir, "fleet", "iso")


def _kvm(raw: Any, opts: Mapping[str, Any]) -> KvmConfig:
    section = _mapping(raw or {}, "fleet:kvm")
    _known(
        section,
        "fleet:kvm",
        (
            "poll_interval",
            "offline_after",
            "over_temp_c",
            "power_interval",
            "iso_stale_after",
            "iso_dir",
        ),
    )
    iso_dir = _string(section.get("iso_dir"), "fleet:kvm:iso_dir") or default_iso_dir(opts)
    if not os.path.isabs(iso_dir) or "\0" in iso_dir:
        raise FleetConfigError("fleet:kvm:iso_dir", f"{iso_dir!r} must be an absolute path")
    out: dict[str, Any] = {"iso_dir": iso_dir}
    for name, low, high, kind in (
        ("poll_interval", 1, 86400, "seconds"),
        ("offline_after", 1, 1000, "polls"),
        ("over_temp_c", 20, 150, "degrees Celsius"),
        ("power_interval", 0, 3600, "seconds"),
        ("iso_stale_after", 10, 86400, "seconds"),
    ):
        value = section.get(name, getattr(KvmConfig, name))
        if (
            isinstance(value, bool)
            or not isinstance(value, (int, float))
            or not low <= value <= high
        ):
            raise FleetConfigError(f"fleet:kvm:{name}", f"{value!r} is not {low} to {high} {kind}")
        if name == "offline_after" and not float(value).is_integer():
            raise FleetConfigError(f"fleet:kvm:{name}", f"{value!r} is not a whole number of polls")
        out[name] = int(value) if name == "offline_after" else float(value)
    return KvmConfig(**out)


def _number_in(section: Mapping[str, Any], name: str, option: str, default, low, high, what):
    value = section.get(name, default)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not low <= value <= high:
        raise FleetConfigError(f"{option}:{name}", f"{value!r} is not {low} to {high} {what}")
    return value


def _alerts(raw: Any) -> AlertsConfig:
    option = "fleet:alerts"
    section = _mapping(raw or {}, option)
    _known(
        section,
        option,
        ("routes", "dedup_minutes", "flapping", "retry", "ui_url", "cert_check_minutes"),
    )
    routes = []
    raw_routes = section.get("routes") or []
    if not isinstance(raw_routes, (list, tuple)):
        raise FleetConfigError(f"{option}:routes", "expected a list of routes")
    seen: set[str] = set()
    for n, item in enumerate(raw_routes):
        where = f"{option}:routes:{n}"
        item = _mapping(item, where)
        try:
            where = f"{option}:routes:{core_alerts.check_route_name(item.get('name'))}"
        except core_alerts.AlertError:
            pass
        _known(item, where, ("name", "destination", "match", "target", "enabled"))
        try:
            route = core_alerts.route_of(
                item.get("name"),
                "config",
                item.get("destination"),
                item.get("match"),
                item.get("target"),
                item.get("enabled", True),
                what=where,
            )
        except core_alerts.AlertError as exc:
            at, _, message = str(exc).partition(": ")
            raise FleetConfigError(at, message) from exc
        if route.name in seen:
            raise FleetConfigError(f"{where}:name", f"a second route named {route.name!r}")
        seen.add(route.name)
        routes.append(route)
    dedup = _number_in(
        section, "dedup_minutes", option, AlertsConfig.dedup_minutes, 0, 10080, "minutes"
    )
    flapping = _mapping(section.get("flapping") or {}, f"{option}:flapping")
    _known(flapping, f"{option}:flapping", ("changes", "minutes"))
    changes = _number_in(
        flapping,
        "changes",
        f"{option}:flapping",
        AlertsConfig.flap_changes,
        0,
        1000,
        "changes (0: off)",
    )
    if not float(changes).is_integer():
        raise FleetConfigError(f"{option}:flapping:changes", f"{changes!r} is not a whole number")
    minutes = _number_in(
        flapping, "minutes", f"{option}:flapping", AlertsConfig.flap_minutes, 1, 10080, "minutes"
    )
    retry = _mapping(section.get("retry") or {}, f"{option}:retry")
    _known(retry, f"{option}:retry", ("first_s", "max_s", "give_up_after_h"))
    first = _number_in(
        retry, "first_s", f"{option}:retry", AlertsConfig.retry_first_s, 0.01, 3600, "seconds"
    )
    most = _number_in(
        retry, "max_s", f"{option}:retry", AlertsConfig.retry_max_s, 0.01, 86400, "seconds"
    )
    if most < first:
        raise FleetConfigError(f"{option}:retry:max_s", f"{most!r} is below first_s ({first!r})")
    give_up = _number_in(
        retry,
        "give_up_after_h",
        f"{option}:retry",
        AlertsConfig.give_up_after_h,
        0.001,
        24 * 90,
        "hours",
    )
    ui_url = _string(section.get("ui_url"), f"{option}:ui_url")
    if ui_url is not None and not ui_url.startswith(("https://", "http://")):
        raise FleetConfigError(f"{option}:ui_url", f"{ui_url!r} is not an http(s):// address")
    return AlertsConfig(
        routes=tuple(routes),
        dedup_minutes=float(dedup),
        flap_changes=int(changes),
        flap_minutes=float(minutes),
        retry_first_s=float(first),
        retry_max_s=float(most),
        give_up_after_h=float(give_up),
        ui_url=ui_url,
    )


def _cert_check(raw: Any) -> CertCheckConfig:
    """``fleet:alerts:cert_check_minutes`` (the other ``fleet:alerts`` options are checked
    with the alert routes)."""
    section = _mapping(raw or {}, "fleet:alerts")
    minutes = section.get("cert_check_minutes", CertCheckConfig.minutes)
    if (
        isinstance(minutes, bool)
        or not isinstance(minutes, (int, float))
        or not 0 <= minutes <= 10080
    ):
        raise FleetConfigError(
            "fleet:alerts:cert_check_minutes",
            f"{minutes!r} is not a number of minutes from 0 (off) to 10080",
        )
    return CertCheckConfig(minutes=float(minutes))


def _inventory(raw: Any) -> InventoryConfig:
    section = _mapping(raw or {}, "fleet:inventory")
    _known(section, "fleet:inventory", ("pip",))
    return InventoryConfig(pip=tuple(pip_interpreters(section.get("pip"))))


def _grains(raw: Any) -> GrainsConfig:
    section = _mapping(raw or {}, "fleet:grains")
    _known(section, "fleet:grains", ("keychains",))
    return GrainsConfig(
        keychains=tuple(absolute_paths(section.get("keychains"), "fleet:grains:keychains"))
    )


def _actions(raw: Any) -> dict[str, dict[str, Command]]:
    actions = {os_name: dict(named) for os_name, named in DEFAULT_ACTIONS.items()}
    if raw is None:
        return actions
    section = _mapping(raw, "fleet:actions")
    for os_name, named in section.items():
        option = f"fleet:actions:{os_name}"
        if not isinstance(os_name, str) or not os_name:
            raise FleetConfigError("fleet:actions", f"{os_name!r} is not an OS name")
        named = _mapping(named or {}, option)
        _known(named, option, ACTION_NAMES)
        mine = actions.setdefault(os_name, {})
        for name, value in named.items():
            if value is None:  # removes a default
                mine.pop(name, None)
                continue
            mine[name] = _command(value, f"{option}:{name}")
    return actions


def _command(value: Any, option: str) -> Command:
    if isinstance(value, str):
        value = {"cmd": value}
    value = _mapping(value, option)
    _known(value, option, ("cmd", "cwd", "runas", "timeout"))
    cmd = _string(value.get("cmd"), f"{option}:cmd")
    if not cmd or "\0" in cmd:
        raise FleetConfigError(f"{option}:cmd", "a command is needed")
    cwd = _string(value.get("cwd"), f"{option}:cwd")
    if cwd is not None and not os.path.isabs(cwd):
        raise FleetConfigError(f"{option}:cwd", f"{cwd!r} is not an absolute path")
    timeout = value.get("timeout", Command.timeout)
    if isinstance(timeout, bool) or not isinstance(timeout, int) or not 1 <= timeout <= 86400:
        raise FleetConfigError(f"{option}:timeout", f"{timeout!r} is not 1 to 86400 seconds")
    return Command(
        cmd=cmd, cwd=cwd, runas=_string(value.get("runas"), f"{option}:runas"), timeout=timeout
    )


def pip_interpreters(raw: Any, option: str = "fleet:inventory:pip") -> list[str]:
    """Validate the list of Python executables whose packages are inventoried."""
    return absolute_paths(raw, option)


def absolute_paths(raw: Any, option: str) -> list[str]:
    """A list of absolute paths (a single string is a one-item list)."""
    if raw is None:
        return []
    if isinstance(raw, str):
        raw = [raw]
    if not isinstance(raw, (list, tuple)):
        raise FleetConfigError(option, f"expected a list of absolute paths, got {raw!r}")
    paths = []
    for item in raw:
        if not isinstance(item, str) or not item or not os.path.isabs(item) or "\0" in item:
            raise FleetConfigError(option, f"{item!r} is not an absolute path")
        paths.append(item)
    return paths


def _mapping(raw: Any, option: str) -> Mapping[str, Any]:
    if not isinstance(raw, Mapping):
        raise FleetConfigError(option, f"expected a mapping, got {type(raw).__name__}")
    return raw


def _known(section: Mapping[str, Any], option: str, known: tuple[str, ...]) -> None:
    for key in section:
        if key not in known:
            raise FleetConfigError(
                f"{option}:{key}", f"unknown option (known under {option}: {', '.join(known)})"
            )


def _string(value: Any, option: str) -> str | None:
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise FleetConfigError(option, f"expected a string, got {type(value).__name__}")
    return value


def _redact(url: str) -> str:
    """Hide a password in a database URL (after the user, or ``?password=``) before it goes
    into an error message."""
    return dburl.redact(url)


def _db_url(url: str, option: str, writable: bool = True) -> str:
    """A database URL of a supported kind whose PostgreSQL hosts make sense (libpq's
    multi-host forms: :mod:`saltext_fleet.core.dburl`); ``writable``: several hosts need
    ``target_session_attrs=read-write`` (or ``primary``)."""
    scheme = url.split("://", 1)[0] if "://" in url else ""
    if scheme not in DB_SCHEMES:
        raise FleetConfigError(
            option,
            f"{_redact(url)!r} is not a database URL this extension supports "
            f"(scheme must be one of {', '.join(DB_SCHEMES)})",
        )
    try:
        found = dburl.endpoints(url)
        if writable:
            dburl.check_writable(found)
    except dburl.DbUrlError as exc:
        raise FleetConfigError(option, f"{_redact(url)!r}: {exc}") from exc
    return url
