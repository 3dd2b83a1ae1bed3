"""
Fleet runners: ``salt-run fleet.*`` on the master.

Reads the master's ``fleet:`` options (see the configuration docs):

.. code-block:: yaml

    fleet:
      db_url: postgresql+psycopg://fleet@127.0.0.1/fleet   # default: SQLite under the cachedir

:depends: saltext-fleet's store (SQLAlchemy 2, psycopg 3), installed with the package.
"""

from __future__ import annotations

import datetime
import fnmatch
import logging
import os
import re

import salt.cache
import salt.pillar
import salt.utils.event
import salt.utils.json
import salt.utils.minions
import salt.utils.user
import salt.utils.yaml
from salt.exceptions import SaltRunnerError

from saltext_fleet import config
from saltext_fleet.core import alerts as core_alerts
from saltext_fleet.core import anchor as core_anchor
from saltext_fleet.core import baseline as core_baseline
from saltext_fleet.core import certs as core_certs
from saltext_fleet.core import drift as core_drift
from saltext_fleet.core import gate as core_gate
from saltext_fleet.core import sbom as core_sbom
from saltext_fleet.core import secrets as core_secrets
from saltext_fleet.core.errors import FleetError
from saltext_fleet.core.text import terminal_safe
from saltext_fleet.core.vulns import sources as vuln_sources
from saltext_fleet.core.vulns import triage as core_triage
from saltext_fleet.kvm.poller import Poller
from saltext_fleet.master import (
    alertsend,
    alertworker,
    bootstrapper,
    certcheck,
    crossings,
    eventsig,
    kvmops,
    kvmpoll,
)
from saltext_fleet.master import keys as master_keys
from saltext_fleet.master import onboard as master_onboard
from saltext_fleet.store import alert_views, queries
from saltext_fleet.store import alerts as store_alerts
from saltext_fleet.store import audit as store_audit
from saltext_fleet.store import certs as store_certs
from saltext_fleet.store import claims as store_claims
from saltext_fleet.store import drift as store_drift
from saltext_fleet.store import engine as store_engine
from saltext_fleet.store import gate as store_gate
from saltext_fleet.store import kvm as store_kvm
from saltext_fleet.store import sbom as store_sbom
from saltext_fleet.store import secrets as store_secrets
from saltext_fleet.store import vulns as store_vulns
from saltext_fleet.store.batch import is_connection_error
from saltext_fleet.store.spool import spool_status
from saltext_fleet.store.vulns import findings as store_findings
from saltext_fleet.store.vulns import triage as store_triage

log = logging.getLogger(__name__)

__virtualname__ = "fleet"


def __virtual__():
    try:
        _cfg()
    except config.FleetConfigError as exc:
        return False, f"the fleet runners cannot load: {exc}"
    return __virtualname__


def _cfg() -> config.FleetConfig:
    """The ``fleet:`` options, parsed once per loader (see :func:`saltext_fleet.config.cached`)."""
    return config.cached(__opts__, __context__)


def store_status():
    """
    Show the store: backend, schema revision (current and newest), spool depth and age,
    quarantined records, and row counts. With ``fleet:db_read_url`` also ``read_url``,
    ``read_reachable`` and ``read_standby`` (whether that server is a standby).

    CLI Example:

    .. code-block:: bash

        salt-run fleet.store_status
    """
    cfg = _cfg()
    engine = store_engine.get_engine(cfg.db_url)
    spool = spool_status(os.path.join(__opts__["cachedir"], "fleet", "spool"))
    status = {
        "backend": engine.dialect.name,
        "url": store_engine.display_url(engine),
        "schema_revision": None,
        "schema_head": store_engine.head_revision(),
        "spool_depth": spool["depth"],
        "spool_oldest_age_seconds": spool["oldest_age"],
        "spool_bytes": spool["bytes"],
        "reachable": True,
    }
    if cfg.db_read_url is not None:
        status.update(_read_status(cfg.db_read_url))
    try:
        store_engine.ensure_schema(engine)
        status["schema_revision"] = store_engine.current_revision(engine)
        rows = queries.counts(engine)
        status["quarantine"] = rows.pop("quarantine")
        status["rows"] = rows
    except Exception as exc:  # noqa: BLE001 - away is a status; _unreachable raises the rest
        status.update(_unreachable(exc))
    return status


def _read_status(url: str) -> dict:
    """``fleet:db_read_url``: where it is, whether it answers and whether that server is a
    standby (in recovery)."""
    engine = store_engine.get_engine(url, writable=False)
    out = {"read_url": store_engine.display_url(engine), "read_reachable": True}
    try:
        out["read_standby"] = store_engine.is_standby(engine)
    except Exception as exc:  # noqa: BLE001 - away is a status; _unreachable raises the rest
        out.update(_unreachable(exc, "read_"))
    return out


def _unreachable(exc: BaseException, prefix: str = "") -> dict:
    """``{"<prefix>reachable": False, "<prefix>error": why}`` for a database that is away;
    any other error is the runner's failure."""
    if not _is_unreachable(exc):
        raise SaltRunnerError(f"fleet.store_status: {exc}") from exc
    why = f"{type(exc).__name__}: {str(exc).splitlines()[0][:300]}"
    return {f"{prefix}reachable": False, f"{prefix}error": why}


def _is_unreachable(exc: BaseException) -> bool:
    return is_connection_error(exc)


# -- drift and baselines ----------------------------------------------------------------------

ALERT_TAG = "fleet/alert/drift"
#: Salt's target types (``tgt_type``) an assignment may use.
TARGET_TYPES = (
    "glob",
    "list",
    "pcre",
    "grain",
    "grain_pcre",
    "pillar",
    "pillar_pcre",
    "pillar_exact",
    "compound",
    "nodegroup",
    "ipcidr",
    "range",
    "data",
)


def _engine():
    cfg = _cfg()
    engine = store_engine.get_engine(cfg.db_url)
    store_engine.ensure_schema(engine)
    store_audit.use_anchor(engine, cfg.key_file)
    return engine


#: The runners that only read, and read through ``fleet:db_read_url`` when it is set (a
#: standby: they answer during a failover, and take their load off the primary). Their view
#: may lag the primary by the standby's replication delay.
READ_ONLY_RUNNERS = (
    "nodes",
    "drift_history",
    "cve_history",
    "certs",
    "xcode",
    "baseline_list",
    "baseline_show",
)


def _read_engine():
    """The engine of :data:`READ_ONLY_RUNNERS`: ``fleet:db_read_url``'s (no migrations run
    there: a standby replays the primary's), else :func:`_engine`."""
    cfg = _cfg()
    if cfg.db_read_url is None:
        return _engine()
    return store_engine.get_engine(cfg.db_read_url, writable=False)


#: The outputters a person reads: ``salt-run`` with no ``--out`` (and the drift table asked for
#: by name). Only with these does ``salt-run`` print progress events as they come; with any other
#: (``--out=json``, ``--out=yaml``...) it prints the result alone, one document a script can parse.
PROGRESS_PRINTED_WITH = (None, "", "fleet_drift")


def _progress(
    message: str, done: int | None = None, total: int | None = None, bar: bool = False
) -> None:
    """A runner progress event, ``salt/run/<jid>/progress``: always on the master's event bus
    (for whatever listens there: the tests, a reactor, salt-api's event stream), and printed by ``salt-run`` as it runs only for
    a person (:data:`PROGRESS_PRINTED_WITH`), as a line ``... <message>`` (with ``bar``, the
    line starts with a text progress bar of ``done`` out of ``total``)."""
    log.info("fleet: %s", message)
    jid_event = globals().get("__jid_event__")
    if jid_event is None:
        return
    # "outputter": how salt-run prints it (Salt's own runners name one in their progress events)
    data = {"message": message, "outputter": "fleet_drift"}
    if total:
        data.update(done=done, total=total)
        if bar:
            data["bar"] = True
    try:
        if __opts__.get("output") in PROGRESS_PRINTED_WITH:
            jid_event.fire_event(data, "progress")  # Salt's NamespacedEvent: fired and printed
        else:
            # The same event through the same bus connection, without the printing half of
            # NamespacedEvent.fire_event: salt-run's machine output stays one document.
            tag = salt.utils.event.tagify("progress", base=jid_event.base)
            jid_event.event.fire_event(data, tag)
    except Exception:  # progress is a courtesy, never a failure
        log.debug("fleet: could not fire a progress event", exc_info=True)


def _fire(tag: str, data: dict) -> bool:
    """Fire a ``fleet/...`` event, signed, on the master bus (:func:`eventsig.fire`)."""
    return eventsig.fire(__opts__, tag, data)


def _as_list(value, what: str) -> list[str] | None:
    if value is None or value == "":
        return None
    if isinstance(value, str):
        value = [v.strip() for v in value.split(",") if v.strip()]
    if not isinstance(value, (list, tuple)) or not all(isinstance(v, str) for v in value):
        raise SaltRunnerError(f"{what}: expected a comma-separated list, got {value!r}")
    return list(value)


def _match(nodes: list[str], tgt, tgt_type: str) -> list[str]:
    """The nodes (ids in the store) a Salt target selects.

    ``glob``, ``list`` and ``pcre`` match ids directly, so nodes whose key was deleted still
    show; every other type (``compound``, ``grain``, ``nodegroup``...) asks Salt's own
    matcher, which sees accepted minions only.
    """
    if tgt_type == "glob":
        return [n for n in nodes if fnmatch.fnmatchcase(n, str(tgt))]
    if tgt_type == "list":
        wanted = set(_as_list(tgt, "tgt") or [])
        return [n for n in nodes if n in wanted]
    if tgt_type == "pcre":
        try:
            pattern = re.compile(str(tgt))
        except re.error as exc:
            raise SaltRunnerError(f"tgt: {tgt!r} is not a regular expression: {exc}") from exc
        return [n for n in nodes if pattern.match(n)]
    found = salt.utils.minions.CkMinions(__opts__).check_minions(tgt, tgt_type)
    matched = set(found.get("minions", []) if isinstance(found, dict) else found)
    return [n for n in nodes if n in matched]


def _assignment(nodes: list[str], baseline: str | None, engine) -> dict[str, str]:
    """``{minion: baseline}``: ``baseline`` for all, else each node's assigned baseline."""
    if baseline is not None:
        return {n: baseline for n in nodes}
    out: dict[str, str] = {}
    for entry in store_drift.assignments(engine):  # lowest priority first: later ones win
        for node in _match(nodes, entry["target"], entry["tgt_type"]):
            out[node] = entry["baseline"]
    return out


def _alerts(results: dict, threshold: float) -> int:
    """Fire ``fleet/alert/drift`` for the nodes whose score crossed ``threshold``, each
    crossing once for the fleet (:func:`crossings.fire_once`, the condition and threshold as
    the claim's token)."""
    out = {}
    for minion, result in results.items():
        state = core_drift.crossing(result.get("previous_score"), result["score"], threshold)
        if state is None:
            continue
        data = {
            "id": minion,
            "state": state,
            "score": result["score"],
            "previous_score": result.get("previous_score"),
            "alert_score": threshold,
            "baseline": result["baseline"],
        }
        out[minion] = (f"{state}:{threshold:g}", data)
    if not out:
        return 0
    return len(
        crossings.fire_once(
            _engine(),
            master_onboard.master_id(__opts__),
            store_claims.ALERT_DRIFT,
            ALERT_TAG,
            out,
            _fire,
        )
    )


_PUBLIC = (
    "counts",
    "score",
    "baseline",
    "missing",
    "extra",
    "changed",
    "facts",
    "pending_states",
    "computed_at",
)


def drift(tgt="*", tgt_type="glob", baseline=None, details=True):
    """
    Recompute the drift of the targeted nodes from their baselines, record it (current
    result, history, alerts) and show it.

    tgt
        Which nodes (``*``: every node with an inventory). Salt targeting: ``glob``,
        ``list`` and ``pcre`` match node ids in the store; ``compound``, ``grain``,
        ``nodegroup``... use Salt's own matcher on the master.
    tgt_type
        The target type (default ``glob``).
    baseline
        Compare every targeted node with this baseline instead of its assigned one (nodes with
        no assigned baseline are otherwise left out).
    details
        ``False`` leaves out the lists of extra packages (``"extra": null``; ``counts``
        still has how many) and, for a node whose inventory, baseline and weights did not
        change since the last run, the missing and changed lists: its package score is taken
        from the last run instead of compared again. Scores, counts, history and alerts are
        the same. For large fleets.

    Prints a table; ``--out=json`` gives ``{minion: {"score", "baseline", "missing", "extra",
    "changed", "facts", "pending_states", "computed_at"}}``. Progress is reported as runner
    progress events. Crossing ``fleet:drift:alert_score`` (either way) fires
    ``fleet/alert/drift``.

    CLI Example:

    .. code-block:: bash

        salt-run fleet.drift
        salt-run fleet.drift 'mac-*' baseline=macos-build --out=json
        salt-run fleet.drift tgt=builders tgt_type=nodegroup
    """
    cfg = _cfg()
    engine = _engine()
    if baseline is not None:
        _check_baseline_name(baseline)
        if store_drift.get_baseline(engine, baseline) is None:
            raise SaltRunnerError(f"fleet.drift: no baseline named {baseline!r}")
    nodes = _match(store_drift.node_ids(engine), tgt, tgt_type)
    assignment = _assignment(nodes, baseline, engine)
    _progress(
        f"computing drift of {len(assignment)} nodes (of {len(nodes)} targeted)",
        0,
        len(assignment) or None,
    )
    try:
        results = store_drift.recompute(
            engine,
            assignment,
            cfg.drift.weight_map(),
            trigger="runner",
            progress=_progress,
            details=_bool(details, "details"),
        )
    except store_drift.DriftError as exc:
        raise SaltRunnerError(f"fleet.drift: {exc}") from exc
    if baseline is None:
        store_drift.forget(engine, set(nodes) - set(assignment))
    alerts = _alerts(results, cfg.drift.alert_score)
    pruned = store_drift.prune_history(engine, cfg.drift.history_days)
    _progress(
        f"drift of {len(results)} nodes recorded; {alerts} alerts; "
        f"{len(pruned['dropped_partitions'])} old history partitions dropped",
        len(results),
        len(results) or None,
    )
    out = {m: {k: r.get(k) for k in _PUBLIC} for m, r in sorted(results.items())}
    if not __opts__.get("output"):
        return {"outputter": "fleet_drift", "data": out}
    return out


def drift_node(minion, trigger="inventory", event=None):
    """
    Recompute one node's drift from its stored inventory, append it to the node's history and
    fire ``fleet/alert/drift`` if its score crossed ``fleet:drift:alert_score``. This is what
    the shipped reactor runs on ``fleet/inventory/changed`` and ``fleet/states/ran``.

    event
        The reactor passes the event it reacts to (``{"tag", "data"}``): it must be signed by
        this master (minions can fire those tags too) and be about ``minion``; an event that
        is not is logged and nothing is recomputed.

    CLI Example:

    .. code-block:: bash

        salt-run fleet.drift_node web-01
    """
    minion = _check_minion_id(minion)
    refused = _refused(event, minion, "drift")
    if refused:
        return refused
    cfg = _cfg()
    engine = _engine()
    assignment = _assignment([minion], None, engine)
    trigger = str(trigger)[:32]
    try:
        result = store_drift.recompute_node(
            engine,
            minion,
            assignment.get(minion),
            cfg.drift.weight_map(),
            trigger=trigger,
            index=True,  # the new snapshot's keys, so that the next fleet.drift need not
        )
    except store_drift.DriftError as exc:
        raise SaltRunnerError(f"fleet.drift_node: {exc}") from exc
    if result is None:
        return {}
    _alerts({minion: result}, cfg.drift.alert_score)
    return {minion: {k: result.get(k) for k in _PUBLIC}}


def _refused(event, minion: str, what: str) -> dict | None:
    """``{"refused": why}`` (and a warning) when the reactor passed an ``event`` that this
    master did not sign or that is not about ``minion``; None when there is nothing to refuse."""
    if event is None:
        return None
    refused = _unsigned(event, minion)
    if not refused:
        return None
    log.warning("fleet: %s of %r not recomputed: %s", what, minion, refused)
    return {"refused": refused}


def _unsigned(event, minion: str) -> str | None:
    """Why a reactor's ``{"tag", "data"}`` is not this master's event about ``minion``."""
    if not isinstance(event, dict):
        return "the event is not a mapping"
    tag, data = event.get("tag"), event.get("data")
    try:
        eventsig.check(__opts__, tag, data)
    except (OSError, ValueError) as exc:
        return str(exc)
    if data.get("id") != minion:
        return f"the signed {tag} event is about {str(data.get('id'))[:80]!r}, not {minion!r}"
    return None


def drift_history(minion, days=None):
    """
    A node's drift over time: ``[{"computed_at", "score", "baseline", "missing", "extra",
    "changed", "facts", "pending_states", "trigger"}]``, oldest first.

    days
        Only the last N days (default: everything kept, see ``fleet:drift:history_days``).

    CLI Example:

    .. code-block:: bash

        salt-run fleet.drift_history web-01 days=30
    """
    minion = _check_minion_id(minion)
    if days is not None:
        try:
            days = float(days)
        except (TypeError, ValueError) as exc:
            raise SaltRunnerError(f"fleet.drift_history: days={days!r} is not a number") from exc
        if days <= 0:
            raise SaltRunnerError("fleet.drift_history: days must be > 0")
    return store_drift.history(_read_engine(), minion, days)


def _bool(value, what: str) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in ("true", "false", "yes", "no", "1", "0"):
        return value.lower() in ("true", "yes", "1")
    raise SaltRunnerError(f"{what}={value!r} is not true or false")


def _check_minion_id(minion) -> str:
    """The one minion id rule of the gate (``core.gate.check_minion_id``), as a runner error."""
    try:
        return core_gate.check_minion_id(minion, "minion")
    except core_gate.GateError as exc:
        raise SaltRunnerError(f"not a minion id: {exc}") from exc


def _check_baseline_name(name) -> str:
    try:
        return core_baseline.check_name(name)
    except core_baseline.BaselineError as exc:
        raise SaltRunnerError(str(exc)) from exc


def _need_baseline(engine, name) -> dict:
    _check_baseline_name(name)
    found = store_drift.get_baseline(engine, name)
    if found is None:
        raise SaltRunnerError(f"no baseline named {name!r} (see salt-run fleet.baseline_list)")
    return found


def baseline_pin(minion, name, facts=None, ecosystems=None, description="", overwrite=False):
    """
    Pin a baseline from a known-good node: every package it has (per ecosystem) at exactly
    its installed version, and chosen facts.

    facts
        Facts to record (comma-separated); default ``os,osrelease,osarch,xcode`` where the
        node reports them. ``facts=""`` records none.
    ecosystems
        Only these ecosystems (comma-separated, e.g. ``pypi``); default all.
    overwrite
        Replace an existing baseline of that name (default: refuse).

    CLI Example:

    .. code-block:: bash

        salt-run fleet.baseline_pin mini-07 name=macos-build
        salt-run fleet.baseline_pin web-01 name=py-web ecosystems=pypi facts=osrelease
    """
    minion = _check_minion_id(minion)
    _check_baseline_name(name)
    engine = _engine()
    inventory = store_drift.node_inventory(engine, minion)
    if inventory is None:
        raise SaltRunnerError(
            f"fleet.baseline_pin: no inventory of {minion!r} in the store "
            f"(run: salt {minion} fleet.inventory)"
        )
    if not overwrite and store_drift.get_baseline(engine, name) is not None:
        raise SaltRunnerError(
            f"fleet.baseline_pin: baseline {name!r} exists (overwrite=True replaces it)"
        )
    fact_list = [] if facts == "" else _as_list(facts, "facts")
    try:
        spec = core_baseline.from_inventory(
            name,
            inventory,
            facts=fact_list,
            ecosystems=_as_list(ecosystems, "ecosystems"),
            description=str(description or f"pinned from {minion}"),
        )
    except core_baseline.BaselineError as exc:
        raise SaltRunnerError(f"fleet.baseline_pin: {exc}") from exc
    store_drift.save_baseline(engine, spec, f"pin:{minion}")
    summary = _summary_of(spec, f"pin:{minion}")
    _audit("baseline.set", name, {"source": f"pin:{minion}", "revision": summary.get("revision")})
    return summary


def _summary_of(spec: dict, source: str) -> dict:
    return {
        "name": spec["name"],
        "source": source,
        "packages": {eco: len(rules) for eco, rules in spec["packages"].items()},
        "facts": spec["facts"],
        "revision": core_baseline.revision(spec),
    }


def baseline_list():
    """
    Every baseline: description, source, package and fact counts, assignments and how many
    nodes were last scored against it.

    CLI Example:

    .. code-block:: bash

        salt-run fleet.baseline_list
    """
    return store_drift.list_baselines(_read_engine())


def baseline_show(name, yaml=False):
    """
    Show a baseline (its normal form; ``yaml=True`` prints the short YAML people write, ready
    for ``fleet.baseline_import``).

    CLI Example:

    .. code-block:: bash

        salt-run fleet.baseline_show macos-build
        salt-run fleet.baseline_show macos-build yaml=True --out=txt > macos-build.yaml
    """
    found = _need_baseline(_read_engine(), name)
    if yaml:
        return salt.utils.yaml.safe_dump(
            core_baseline.to_yaml_doc(found), default_flow_style=False, sort_keys=False
        )
    return found


def baseline_diff(name, other):
    """
    What differs between two baselines: packages added, removed and changed (rule or
    version), facts, ecosystems.

    CLI Example:

    .. code-block:: bash

        salt-run fleet.baseline_diff macos-build macos-build-next
    """
    engine = _engine()
    return core_baseline.diff(_need_baseline(engine, name), _need_baseline(engine, other))


def baseline_set(
    name,
    package=None,
    rule=None,
    version=None,
    remove=False,
    fact=None,
    value=None,
    description=None,
    extras=None,
    create=False,
):
    """
    Edit a baseline: add a package or change its rule, remove a package, set or remove a
    fact, change the description or whether extra packages count.

    package
        ``<ecosystem>:<name>``, e.g. ``pypi:requests`` or ``deb:openssl``.
    rule
        ``exact`` (with ``version``), ``min`` (with ``version``: at least), ``any`` (any
        version, but installed) or ``ignore`` (never counted). A bare ``version`` means exact.
    remove
        With ``package`` or ``fact``: take it out of the baseline.
    create
        Create the baseline (empty) when it does not exist.

    CLI Example:

    .. code-block:: bash

        salt-run fleet.baseline_set macos-build package=pypi:requests version=2.31.0
        salt-run fleet.baseline_set macos-build package=pypi:urllib3 rule=min version=2.0
        salt-run fleet.baseline_set macos-build package=pypi:setuptools rule=ignore
        salt-run fleet.baseline_set macos-build package=brew:wget remove=True
        salt-run fleet.baseline_set macos-build fact=xcode value=15.4
    """
    engine = _engine()
    _check_baseline_name(name)
    current = store_drift.get_baseline(engine, name)
    if current is None:
        if not create:
            raise SaltRunnerError(f"no baseline named {name!r} (create=True starts an empty one)")
        current = core_baseline.parse({"name": name})
    try:
        spec = core_baseline.edit(
            current,
            package=package,
            rule=rule,
            version=None if version is None else str(version),
            remove=bool(remove),
            fact=fact,
            value=value,
            description=description,
            extras=extras,
        )
    except core_baseline.BaselineError as exc:
        raise SaltRunnerError(f"fleet.baseline_set: {exc}") from exc
    store_drift.save_baseline(engine, spec, "runner")
    changes = core_baseline.diff(current, spec) | {
        "name": name,
        "revision": core_baseline.revision(spec),
    }
    _audit("baseline.set", name, {"source": "runner", "revision": changes["revision"]})
    return changes


def baseline_import(path=None, pillar=None, name=None):
    """
    Declare baselines in YAML: a file on the master, or the ``fleet:baselines`` pillar of a
    minion (compiled on the master). A file holds one baseline document, or
    ``baselines: {name: document}``; pillar holds ``fleet: {baselines: {name: document}}``.
    Each is validated completely before anything is stored.

    CLI Example:

    .. code-block:: bash

        salt-run fleet.baseline_import /srv/fleet/baselines.yaml
        salt-run fleet.baseline_import pillar=mini-07
    """
    if (path is None) == (pillar is None):
        raise SaltRunnerError("fleet.baseline_import: give either path= or pillar=")
    if path is not None:
        docs, source = _yaml_file(path), f"yaml:{path}"
    else:
        minion = _check_minion_id(pillar)
        docs, source = _pillar_baselines(minion), f"pillar:{minion}"
    if isinstance(docs, dict) and "baselines" in docs and set(docs) == {"baselines"}:
        docs = docs["baselines"]
        if not isinstance(docs, dict):
            raise SaltRunnerError(f"fleet.baseline_import: {source}: baselines must be a mapping")
        items = list(docs.items())
    elif isinstance(docs, dict) and "name" in docs or name:
        items = [(name or docs.get("name"), docs)]
    else:
        raise SaltRunnerError(
            f"fleet.baseline_import: {source} holds neither a baseline (with name:) nor baselines:"
        )
    specs = []
    for key, doc in items:
        try:
            specs.append(core_baseline.parse(doc, name=key))
        except core_baseline.BaselineError as exc:
            raise SaltRunnerError(f"fleet.baseline_import: {source}: {key}: {exc}") from exc
    engine = _engine()
    out = {}
    for spec in specs:
        created = store_drift.save_baseline(engine, spec, source)
        out[spec["name"]] = "created" if created else "replaced"
        _audit(
            "baseline.set",
            spec["name"],
            {"source": source, "revision": core_baseline.revision(spec)},
        )
    return out


def _yaml_file(path):
    if not isinstance(path, str) or not os.path.isabs(path):
        raise SaltRunnerError(f"fleet.baseline_import: {path!r} is not an absolute path")
    try:
        with open(path, encoding="utf-8") as handle:
            return salt.utils.yaml.safe_load(handle)
    except OSError as exc:
        raise SaltRunnerError(f"fleet.baseline_import: cannot read {path}: {exc.strerror}") from exc
    except Exception as exc:  # YAML errors come in many classes
        raise SaltRunnerError(f"fleet.baseline_import: {path} is not valid YAML: {exc}") from exc


def _pillar_baselines(minion):
    # The grains the master cached from the minion itself (Salt 3008 keeps them in the
    # ``grains`` bank, keyed by minion id; older masters under ``minions/<id>``), so that a
    # pillar top file targeting by grain gives the node its own pillar.
    grains = {}
    try:
        cache = salt.cache.factory(__opts__)
        grains = cache.fetch("grains", minion) or {}
        if not grains:
            legacy = cache.fetch(f"minions/{minion}", "data")
            grains = legacy.get("grains", {}) if isinstance(legacy, dict) else {}
    except Exception:  # noqa: BLE001 - no cached grains: compile with none
        grains = {}
    if not isinstance(grains, dict):
        grains = {}
    pillar = salt.pillar.get_pillar(__opts__, grains, minion, saltenv="base").compile_pillar()
    found = (pillar.get("fleet") or {}).get("baselines") if isinstance(pillar, dict) else None
    if not found:
        raise SaltRunnerError(
            f"fleet.baseline_import: the pillar of {minion} has no fleet:baselines"
        )
    return {"baselines": found}


def baseline_delete(name):
    """
    Delete a baseline, its assignments and the current drift results against it (history
    stays).

    CLI Example:

    .. code-block:: bash

        salt-run fleet.baseline_delete old-image
    """
    _check_baseline_name(name)
    if not store_drift.delete_baseline(_engine(), name):
        raise SaltRunnerError(f"no baseline named {name!r}")
    _audit("baseline.delete", name)
    return {"deleted": name}


def baseline_assign(name, target, tgt_type="glob", priority=0):
    """
    Assign a baseline to a Salt target (a glob, list, compound expression, grain, node
    group...). A node matched by several assignments takes the one with the highest
    ``priority``, the latest on a tie.

    CLI Example:

    .. code-block:: bash

        salt-run fleet.baseline_assign macos-build 'mini-*'
        salt-run fleet.baseline_assign macos-build builders tgt_type=nodegroup priority=10
        salt-run fleet.baseline_assign nixos-base 'G@os:NixOS' tgt_type=compound
    """
    _check_baseline_name(name)
    if not isinstance(target, str) or not target or len(target) > 4096:
        raise SaltRunnerError(f"fleet.baseline_assign: {target!r} is not a target")
    types = TARGET_TYPES
    if tgt_type not in types:
        raise SaltRunnerError(
            f"fleet.baseline_assign: tgt_type {tgt_type!r} is not one of {', '.join(types)}"
        )
    if tgt_type == "nodegroup" and target not in (__opts__.get("nodegroups") or {}):
        raise SaltRunnerError(
            f"fleet.baseline_assign: no node group {target!r} in the master config"
        )
    try:
        priority = int(priority)
    except (TypeError, ValueError) as exc:
        raise SaltRunnerError(
            f"fleet.baseline_assign: priority={priority!r} is not a whole number"
        ) from exc
    try:
        made = store_drift.assign(_engine(), name, target, tgt_type, priority)
    except store_drift.DriftError as exc:
        raise SaltRunnerError(f"fleet.baseline_assign: {exc}") from exc
    _audit("baseline.assign", name, {"target": target, "tgt_type": tgt_type, "priority": priority})
    return made


def baseline_unassign(name, target=None):
    """
    Remove a baseline's assignment to ``target`` (all its assignments without ``target``).

    CLI Example:

    .. code-block:: bash

        salt-run fleet.baseline_unassign macos-build 'mini-*'
    """
    _check_baseline_name(name)
    removed = store_drift.unassign(_engine(), name, target)
    _audit("baseline.unassign", name, {"target": target, "removed": removed})
    return {"removed": removed}


def nodes(tgt="*", tgt_type="glob"):
    """
    The nodes in the store: id, first and last seen, inventory digest and time, pending
    states, the latest drift score, and how each is served (``served``: the master that
    stored its latest return, and the syndic that carries it to a master of masters, with
    ``claimants`` and ``disputed`` when several syndics claim it).

    CLI Example:

    .. code-block:: bash

        salt-run fleet.nodes
        salt-run fleet.nodes 'mini-*'
    """
    engine = _read_engine()
    rows = store_drift.node_rows(engine)
    wanted = set(_match([r["minion_id"] for r in rows], tgt, tgt_type))
    return [r for r in rows if r["minion_id"] in wanted]


# -- SBOM ------------------------------------------------------------------------------------


def _sbom_nodes(engine, tgt, tgt_type) -> list[str]:
    """The targeted nodes that have an inventory; an error naming what matched nothing."""
    known = store_sbom.known_nodes(engine)
    with_inventory = sorted(m for m, has in known.items() if has)
    nodes = _match(with_inventory, tgt, tgt_type)
    wanted = []
    if tgt_type == "list":
        wanted = _as_list(tgt, "tgt") or []
    elif tgt_type == "glob" and isinstance(tgt, str) and not set(tgt) & set("*?[]"):
        wanted = [tgt]
    for minion in wanted:
        if minion not in known:
            raise SaltRunnerError(f"fleet.sbom: no node {minion[:80]!r} in the store")
        if not known[minion]:
            raise SaltRunnerError(f"fleet.sbom: node {minion!r} has reported no inventory yet")
    if not nodes:
        raise SaltRunnerError(
            f"fleet.sbom: no node with an inventory matches {str(tgt)[:80]!r} ({tgt_type})"
        )
    return nodes


def _fleet_grain(minion: str) -> dict:
    """``{"fleet": ...}`` from Salt's own minion data cache (the grains the minion sent with
    its last pillar request), for a node the store has no ``grains.item(s)`` return of."""
    try:
        _id, grains, _pillar = salt.utils.minions.get_minion_data(minion, __opts__)
    except Exception:  # noqa: BLE001 - no cache, no cached data: the document goes without
        return {}
    fleet = grains.get("fleet") if isinstance(grains, dict) else None
    return {"fleet": fleet} if isinstance(fleet, dict) else {}


def _sbom_document(text: str, fmt: str):
    """What ``salt-run`` shows of one document: JSON parsed (any outputter prints it), XML
    as its text."""
    return salt.utils.json.loads(text) if fmt == "cyclonedx-json" else text


def sbom(
    tgt,
    format="cyclonedx-json",
    out=None,
    merged=True,
    tgt_type="glob",
    validate=False,
    vex=False,
):
    """
    CycloneDX 1.6 SBOMs of the targeted nodes, from their inventories in the store: the node
    (id, OS, hardware from its ``fleet`` grain) as the document's subject and one component
    with a purl per installed package version. See the SBOM docs for the purls of each
    ecosystem. The grain is the one the store has from the node's last ``grains.item(s)``
    return, else the one in Salt's minion data cache.

    tgt
        Which nodes: ``glob``, ``list`` and ``pcre`` match node ids in the store, other
        target types use Salt's matcher. Naming one node (or a list) that the store does not
        have, or that has reported no inventory, is an error naming it.
    format
        ``cyclonedx-json`` (default) or ``cyclonedx-xml``.
    out
        Write files instead of returning the documents: an absolute path of a folder
        (created when missing), or of a ``.tar.gz``/``.tgz``/``.zip`` archive. Each node's
        document goes to ``nodes/<minion id>.cdx.json`` (``.cdx.xml``), the merged document
        to ``merged.cdx.json``. Returns the path, the files and the counts.
    merged
        With ``out``: also write one document holding every node (default ``True``);
        ``False`` for very large fleets.
    vex
        Include each node's triage decisions (``fleet.cve_triage``) as CycloneDX VEX: one
        ``vulnerabilities`` entry per triaged advisory with its analysis (state,
        justification, response, detail) and the components it affects (default ``False``).
    validate
        Check every document against the CycloneDX 1.6 schema before returning or writing
        it (default ``False``: the documents are valid by construction, and checking a large
        one as JSON takes seconds).

    Without ``out``, one node gives its document (JSON as data, XML as text), several give
    ``{minion: document}``. Progress events report every node written.

    CLI Example:

    .. code-block:: bash

        salt-run fleet.sbom web-01 --out=json > web-01.cdx.json
        salt-run fleet.sbom web-01 format=cyclonedx-xml
        salt-run fleet.sbom web-01 vex=True
        salt-run fleet.sbom '*' out=/srv/sbom/fleet.tar.gz
        salt-run fleet.sbom 'mac-*' out=/srv/sbom/macs merged=False
    """
    try:
        fmt = core_sbom.check_format(format)
    except core_sbom.SbomError as exc:
        raise SaltRunnerError(f"fleet.sbom: {exc}") from exc
    merged = _bool(merged, "merged")
    validate = _bool(validate, "validate")
    vex = _bool(vex, "vex")
    engine = _engine()
    nodes = _sbom_nodes(engine, tgt, tgt_type)
    total = len(nodes)
    step = max(1, total // 20)
    _progress(f"building the SBOMs of {total} nodes", 0, total)
    docs: dict[str, str] = {}
    files: list[tuple[str, bytes]] = []
    fleet_input = []
    components = 0
    cache = core_sbom.ComponentCache()  # each unique package version written once
    try:
        for done, (minion, inventory, grains) in enumerate(
            store_sbom.node_inputs(engine, nodes), start=1
        ):
            entries = None
            if vex:
                with engine.connect() as conn:
                    entries = store_sbom.node_vex(conn, minion, inventory)
            text, count = core_sbom.node_document(
                minion, inventory, grains or _fleet_grain(minion), entries, fmt, cache=cache
            )
            components += count
            if validate:
                core_sbom.validate(text, fmt)
            if out is None:
                docs[minion] = text
            else:
                files.append((f"nodes/{core_sbom.file_name(minion, fmt)}", text.encode("utf-8")))
                if merged:
                    fleet_input.append((minion, inventory, grains))
            if done % step == 0 or done == total:
                _progress(f"SBOM of {done} of {total} nodes built", done, total)
        if out is None:
            if len(docs) == 1:
                return _sbom_document(next(iter(docs.values())), fmt)
            return {minion: _sbom_document(text, fmt) for minion, text in docs.items()}
        if merged:
            text = core_sbom.serialize(core_sbom.build_fleet_bom(fleet_input), fmt)
            if validate:
                core_sbom.validate(text, fmt)
            files.append((f"merged{core_sbom.EXTENSIONS[fmt]}", text.encode("utf-8")))
        path = core_sbom.write_bundle(out, files)
    except core_sbom.SbomError as exc:
        raise SaltRunnerError(f"fleet.sbom: {exc}") from exc
    except OSError as exc:
        raise SaltRunnerError(f"fleet.sbom: cannot write {out}: {exc}") from exc
    _progress(f"{len(files)} SBOM files written to {path}", total, total)
    return {
        "path": path,
        "format": fmt,
        "nodes": total,
        "components": components,
        "files": [name for name, _ in files],
    }


# -- the key gate, enrolment, the audit chain ---------------------------------------------------


def _actor() -> str:
    """Who runs this: ``reactor``, ``ui:<name>`` (a user of the web UI, which passes that as
    Salt's user), or ``user:<name>``: Salt's ``__user__`` (the shell user of ``salt-run``,
    the eauth user through salt-api), else the local user this process runs as (a runner
    called from Python with no user: Salt says ``UNKNOWN``). Salt's ``sudo_<name>`` (root
    through sudo) is written ``user:<name> (sudo)``."""
    return actor_for(globals().get("__user__") or globals().get("__pub_user"))


def actor_for(user) -> str:
    """The audit actor for Salt's user ``user`` (see :func:`_actor`)."""
    if not isinstance(user, str) or not user.strip() or user == "UNKNOWN":
        try:
            user = salt.utils.user.get_specific_user()
        except Exception:  # noqa: BLE001 - no passwd entry for this uid, say
            user = f"uid:{os.getuid()}"
    user = terminal_safe(user).strip() or "?"
    if user == "Reactor":
        return "reactor"
    if user.startswith("ui:"):
        return user[:128]
    if user.startswith("sudo_") and len(user) > 5:
        return f"user:{user[5:100]} (sudo)"
    return f"user:{user[:100]}"


def _audit(action: str, target: str, details: dict | None = None) -> None:
    store_audit.record(_engine(), _actor(), action, target, details or {})


def _keys_call(fun, *args, **kwargs):
    try:
        return fun(*args, **kwargs)
    except master_keys.KeyActionError as exc:
        raise SaltRunnerError(str(exc)) from exc


def key_seen(minion, pub, autosign_grains=None):
    """
    The key gate's reaction to ``salt/auth`` with ``act: pend`` (the shipped ``keys.sls``
    runs it): record the key (first and last seen, fingerprint), fire ``fleet/key/pending``
    the first time a key is seen, and accept the key only if it presents a live enrolment
    (``fleet.enrol``). Hostile input (a bad id, no key) is ignored and logged.

    CLI Example (for a test; the reactor calls it):

    .. code-block:: bash

        salt-run fleet.key_seen web-01 pub="$(cat web-01.pub)"
    """
    return master_keys.handle_auth(__opts__, _engine(), minion, pub, autosign_grains, fire=_fire)


def keys(status=None):
    """
    Every key Salt holds, with what the gate knows of it: ``{id: {"state", "fingerprint",
    "first_seen", "last_seen", "attempts", "decided_by", "decided_at", "note"}}``.

    status
        Only ``pending``, ``accepted``, ``rejected`` or ``denied`` keys.

    CLI Example:

    .. code-block:: bash

        salt-run fleet.keys status=pending
    """
    return _keys_call(master_keys.list_keys, __opts__, _engine(), status)


def keys_accept(minion, fingerprint=None, include_rejected=False):
    """
    Accept a pending key, by exact minion id (never a glob).

    fingerprint
        Accept only if the pending key has this fingerprint (as ``salt-key -f`` prints it).
    include_rejected
        Accept a rejected key too.

    CLI Example:

    .. code-block:: bash

        salt-run fleet.keys_accept web-01
        salt-run fleet.keys_accept web-01 fingerprint=3c:a1:...
    """
    return _keys_call(
        master_keys.accept,
        __opts__,
        _engine(),
        minion,
        _actor(),
        fingerprint=fingerprint,
        include_rejected=_bool(include_rejected, "include_rejected"),
        fire=_fire,
    )


def keys_reject(minion, include_accepted=False):
    """
    Reject a pending key (``include_accepted``: an accepted key too), by exact minion id.

    CLI Example:

    .. code-block:: bash

        salt-run fleet.keys_reject stranger-01
    """
    return _keys_call(
        master_keys.reject,
        __opts__,
        _engine(),
        minion,
        _actor(),
        include_accepted=_bool(include_accepted, "include_accepted"),
    )


def keys_delete(minion):
    """
    Delete every key Salt holds for a minion id (accepted, pending, rejected, denied).

    CLI Example:

    .. code-block:: bash

        salt-run fleet.keys_delete retired-01
    """
    return _keys_call(master_keys.delete, __opts__, _engine(), minion, _actor())


def enrol(minion, ttl=None, group=None, fingerprint=None):
    """
    Expect a minion: a one-time enrolment token for exactly this id, valid for ``ttl``
    (seconds, or ``30m``, ``2h``, ``7d``; default ``fleet:gate:ttl``, 24h). Returns the token
    (shown only now; the store keeps its hash) and the minion configuration that carries it,
    to install as ``/etc/salt/minion.d/fleet-enrolment.conf`` on the new machine. The first
    time that minion asks to be let in with that token, its key is accepted; a used, expired
    or foreign token is refused and recorded. Keys already held for the id are deleted first
    (a re-imaged machine has a new key).

    group
        The node group it joins (its onboarding states, its SSH credentials).
    fingerprint
        Also require the minion's key to have this fingerprint.

    CLI Example:

    .. code-block:: bash

        salt-run fleet.enrol mini-07 ttl=2h group=builders
    """
    return _keys_call(
        master_keys.enrol,
        __opts__,
        _engine(),
        minion,
        _actor(),
        ttl=ttl,
        group=group,
        fingerprint=fingerprint,
    )


def enrolments(minion=None):
    """
    Enrolments (never their tokens): id, state (live, used, expired, revoked), group,
    created, expires, used.

    CLI Example:

    .. code-block:: bash

        salt-run fleet.enrolments
    """
    if minion is not None:
        minion = _check_minion_id(minion)
    engine = _engine()
    with engine.begin() as conn:
        store_gate.expire_enrolments(conn)
        return store_gate.enrolments(conn, minion)


def audit(limit=50, target=None, action=None, before=None):
    """
    The audit chain, newest first: ``[{"id", "at", "actor", "action", "target", "details",
    "hash"}]``.

    CLI Example:

    .. code-block:: bash

        salt-run fleet.audit limit=20
        salt-run fleet.audit target=web-01
    """
    try:
        limit = int(limit)
        before = int(before) if before is not None else None
    except (TypeError, ValueError) as exc:
        raise SaltRunnerError("fleet.audit: limit and before are whole numbers") from exc
    return store_audit.events(_engine(), limit=limit, target=target, action=action, before=before)


def audit_verify():
    """
    Check the whole audit chain: ``{"ok": true, "checked": N, "last_id", "last_hash"}``, or
    ``{"ok": false, "broken": <id of the first broken event>, "reason", "message"}``.
    Record ``last_hash`` somewhere else now and then: it is what makes a rewrite evident.

    CLI Example:

    .. code-block:: bash

        salt-run fleet.audit_verify
    """
    return store_audit.verify(_engine())


def onboard(minion):
    """
    Set a node up (the shipped ``onboard.sls`` runs this on ``salt/minion/<id>/start``):
    sync the extension's modules, schedule ``fleet.inventory`` and ``state.apply test=True``
    (``fleet:onboard``), take a first inventory, apply the node group's states, mark it
    online.

    CLI Example:

    .. code-block:: bash

        salt-run fleet.onboard mini-07
    """
    minion = _check_minion_id(minion)
    state = master_keys.salt_state(master_keys.salt_key(__opts__), minion)
    if state != "accepted":
        raise SaltRunnerError(f"fleet.onboard: {minion} has no accepted key")
    return master_onboard.onboard(__opts__, _engine(), minion, _actor())


def node_started(minion, sender=None):
    """
    The shipped ``onboard.sls`` runs this on ``salt/minion/<id>/start``, an event any minion
    could fire for any id: ``minion`` is the id in the tag, ``sender`` the event's ``id``
    (Salt's authenticated sender for a single event). Refused at once when they differ;
    otherwise the node is asked when its salt-minion started (``fleet.started``, its answer
    read from the job cache) and onboarded (``fleet.onboard``) only when that is after its
    last onboarding. Refusals are logged and audited as ``node.onboard.refuse``.

    CLI Example (for a test; the reactor calls it):

    .. code-block:: bash

        salt-run fleet.node_started mini-07 sender=mini-07
    """
    return master_onboard.node_started(__opts__, _engine(), minion, sender, _actor())


def presence(new=None, lost=None, confirm=True):
    """
    Mark nodes online (``new``) and offline (``lost``): what the shipped ``presence.sls``
    does with ``salt/presence/change`` (the master's ``presence_events``). That event could
    come from any minion, so each claim is checked against the ids the master sees
    connected (``confirm=False``: an operator's word, taken as it is).

    CLI Example:

    .. code-block:: bash

        salt-run fleet.presence lost='[web-01]' confirm=False
    """
    connected = master_onboard.connected_ids(__opts__) if _bool(confirm, "confirm") else None
    return master_onboard.presence(
        _engine(),
        _as_list(new, "new"),
        _as_list(lost, "lost"),
        connected=connected,
        opts=__opts__ if connected is not None else None,
        master=master_onboard.master_id(__opts__),
    )


def presence_check(timeout=10, window=0):
    """
    Ask every node whose key is accepted (``test.ping``, by id): those that answer within
    ``timeout`` seconds are marked online, the others offline after two misses in a row.
    The snippet schedules it on the master every 5 minutes.

    window
        With several masters on one store, a check any of them did less than ``window``
        seconds ago holds for the fleet and this one is skipped (``{"skipped": ...}``). The
        snippet's schedule entry passes 240 (its period is 5 minutes); 0 (the default)
        checks anyway.

    CLI Example:

    .. code-block:: bash

        salt-run fleet.presence_check timeout=5
    """
    try:
        timeout = float(timeout)
    except (TypeError, ValueError) as exc:
        raise SaltRunnerError("fleet.presence_check: timeout is seconds") from exc
    try:
        window = float(window or 0)
    except (TypeError, ValueError) as exc:
        raise SaltRunnerError("fleet.presence_check: window is seconds") from exc
    return master_onboard.presence_check(__opts__, _engine(), timeout, window)


# -- node groups, secrets, the vault ------------------------------------------------------------


def _vault():
    try:
        return core_secrets.Vault.open(_cfg().key_file)
    except core_secrets.SecretsError as exc:
        raise SaltRunnerError(f"fleet:key_file: {exc}") from exc


def _read_secret_file(path, what):
    if not isinstance(path, str) or not os.path.isabs(path):
        raise SaltRunnerError(f"{what}: {path!r} is not an absolute path")
    try:
        with open(path, encoding="utf-8") as handle:
            return handle.read()
    except OSError as exc:
        raise SaltRunnerError(f"{what}: cannot read {path}: {exc.strerror}") from exc


def group_set(
    name,
    description=None,
    user=None,
    port=None,
    states=None,
    password=None,
    private_key_file=None,
):
    """
    Create or change a node group: the SSH user and port its machines are bootstrapped with,
    its credential (a password, or a private key read from a file on the master), and the
    states applied to its nodes when they start. The credential is encrypted with the
    master's vault (``fleet:key_file``) before it is stored, and never shown again.

    CLI Example:

    .. code-block:: bash

        salt-run fleet.group_set builders user=admin port=22 private_key_file=/root/.ssh/builders
        salt-run fleet.group_set builders states=xcode,ci-runner
    """
    try:
        core_gate.check_group(name, "name")
    except core_gate.GateError as exc:
        raise SaltRunnerError(str(exc)) from exc
    if password is not None and private_key_file is not None:
        raise SaltRunnerError("fleet.group_set: give password or private_key_file, not both")
    kind = credential = None
    if password is not None:
        kind, credential = "password", str(password)
    elif private_key_file is not None:
        kind = "private_key"
        credential = _read_secret_file(private_key_file, "private_key_file")
        if "PRIVATE KEY" not in credential:
            raise SaltRunnerError(f"private_key_file: {private_key_file} holds no private key")
    if port is not None:
        try:
            port = int(port)
        except (TypeError, ValueError):
            port = 0
        if not 1 <= port <= 65535:
            raise SaltRunnerError("fleet.group_set: port is a TCP port (1-65535)")
    if user is not None and (not isinstance(user, str) or not user or len(user) > 64):
        raise SaltRunnerError(f"fleet.group_set: user={user!r} is not a user name")
    states = _as_list(states, "states")
    engine = _engine()
    vault = _vault()
    with engine.begin() as conn:
        found = store_secrets.set_group(
            conn,
            vault,
            name,
            description=description,
            ssh_user=user,
            ssh_port=port,
            states=states,
            credential_kind=kind,
            credential=credential,
        )
    changed = [
        k
        for k, v in (
            ("description", description),
            ("user", user),
            ("port", port),
            ("states", states),
            ("credential", kind),
        )
        if v is not None
    ]
    _audit("group.set", name, {"changed": changed, "credential": kind})
    return found


def group_list():
    """
    Node groups: SSH user and port, the kind of credential (never the credential), states.

    CLI Example:

    .. code-block:: bash

        salt-run fleet.group_list
    """
    with _engine().connect() as conn:
        return store_secrets.groups(conn)


def group_delete(name):
    """
    Delete a node group and its secrets; the nodes that were in it are in no group after.

    CLI Example:

    .. code-block:: bash

        salt-run fleet.group_delete old-lab
    """
    with _engine().begin() as conn:
        gone = store_secrets.delete_group(conn, str(name))
    if not gone:
        raise SaltRunnerError(f"no node group named {name!r}")
    _audit("group.delete", str(name))
    return {"deleted": name}


def secret_set(scope, owner, name, value=None, value_file=None):
    """
    Store a secret of a node group (``scope=group``) or a node (``scope=node``), encrypted.
    The value is never returned by any runner.

    CLI Example:

    .. code-block:: bash

        salt-run fleet.secret_set group builders signing_password value_file=/root/pw
    """
    if scope not in store_secrets.SCOPES:
        raise SaltRunnerError(f"scope: expected one of {', '.join(store_secrets.SCOPES)}")
    try:
        (core_gate.check_group if scope == "group" else core_gate.check_minion_id)(owner, "owner")
        core_gate.check_group(name, "name")
    except core_gate.GateError as exc:
        raise SaltRunnerError(str(exc)) from exc
    if (value is None) == (value_file is None):
        raise SaltRunnerError("fleet.secret_set: give value or value_file")
    if value_file is not None:
        value = _read_secret_file(value_file, "value_file")
    with _engine().begin() as conn:
        store_secrets.put_secret(conn, _vault(), scope, owner, name, str(value))
    _audit("secret.set", f"{scope}:{owner}", {"name": name})
    return {"scope": scope, "owner": owner, "name": name, "stored": True}


def secret_delete(scope, owner, name=None):
    """
    Delete a secret (every secret of ``owner`` without ``name``).

    CLI Example:

    .. code-block:: bash

        salt-run fleet.secret_delete node mini-07 api_token
    """
    if scope not in store_secrets.SCOPES:
        raise SaltRunnerError(f"scope: expected one of {', '.join(store_secrets.SCOPES)}")
    with _engine().begin() as conn:
        gone = store_secrets.drop_secrets(conn, scope, str(owner), name)
    _audit("secret.delete", f"{scope}:{owner}", {"name": name, "deleted": gone})
    return {"deleted": gone}


def rotate_key(retire=True):
    """
    Rotate the vault key: a new key is added to ``fleet:key_file``, every stored secret is
    re-encrypted with it (one transaction), and the old keys are dropped (``retire=False``
    keeps them). Reports progress.

    CLI Example:

    .. code-block:: bash

        salt-run fleet.rotate_key
    """
    path = _cfg().key_file
    old = _vault()
    try:
        vault = core_secrets.rotate(path)
    except core_secrets.SecretsError as exc:
        raise SaltRunnerError(f"fleet:key_file: {exc}") from exc
    _progress(f"new key {vault.key_id} added; re-encrypting every secret")
    engine = _engine()
    try:
        store_audit.resign_anchor(engine)  # signed with the new key before the old one goes
    except (core_anchor.AnchorError, core_secrets.SecretsError) as exc:
        log.warning("fleet.rotate_key: the audit anchor was not re-signed: %s", exc)
    done = store_secrets.reencrypt_all(
        engine, vault, progress=lambda n, total: _progress(f"re-encrypted {n} of {total}", n, total)
    )
    retired = []
    if _bool(retire, "retire"):
        kept = core_secrets.retire(path, keep=1)
        retired = [k for k in old.key_ids if k not in kept.key_ids]
    result = {"key_id": vault.key_id, "reencrypted": done["reencrypted"], "retired": retired}
    _audit("secrets.rotate", "vault", result)
    return result


# -- vulnerabilities: the advisory import -------------------------------------------------------


def cve_import(path, batch=store_vulns.BATCH):
    """
    Import OSV advisories offline from ``path``: an ecosystem's ``all.zip`` as the OSV project
    publishes it (``https://osv-vulnerabilities.storage.googleapis.com/<ECOSYSTEM>/all.zip``),
    a folder of OSV JSON or YAML records (walked recursively, as in the advisory databases
    that publish OSV), or one record file.

    ``batch`` records are written per transaction (default 1000). A record whose ``modified``
    is newer than the stored one replaces it; the same or older leaves it unchanged, so
    importing the same data again changes nothing. Withdrawn records are kept and never
    match. A malformed file is rejected with an error naming it, and the rest is imported.
    Progress is printed as the import runs (and sent as runner progress events); then the
    fleet's findings are recomputed.

    Returns the counts per OSV ecosystem (added, replaced, unchanged, withdrawn, rejected),
    their total, and the rejected files with their errors.

    CLI Example:

    .. code-block:: bash

        salt-run fleet.cve_import /srv/osv/PyPI-all.zip
        salt-run fleet.cve_import /srv/advisory-database/vulns batch=5000
    """
    if isinstance(batch, bool):
        raise SaltRunnerError(f"fleet.cve_import: batch={batch!r} is not a number")
    try:
        batch = store_vulns.check_batch(int(batch))
    except (TypeError, ValueError) as exc:  # AdvisoryImportError is a ValueError too
        raise SaltRunnerError(f"fleet.cve_import: batch={batch!r}: {exc}") from exc
    if not isinstance(path, str) or not path.strip():
        raise SaltRunnerError("fleet.cve_import: give the path of an OSV zip, folder or file")
    path = os.path.abspath(os.path.expanduser(path))
    try:
        source = vuln_sources.open_source(path)
    except vuln_sources.SourceError as exc:
        raise SaltRunnerError(f"fleet.cve_import: {exc}") from exc
    engine = _engine()
    about = source.estimate()
    _progress(f"importing about {about:,} OSV records from {path}", 0, about or None, bar=True)

    def progress(done: int, total: int) -> None:
        _progress(f"imported {done:,} of about {total:,}", done, total, bar=True)

    try:
        result = store_vulns.import_advisories(
            engine, source, actor=_actor(), batch=batch, progress=progress, estimate=about
        )
    except Exception as exc:
        if not _is_unreachable(exc):
            raise
        raise SaltRunnerError(
            f"fleet.cve_import: the store became unreachable; what was imported so far is"
            f" kept, run the import again to finish it ({str(exc).splitlines()[0][:300]})"
        ) from exc
    total = result["counts"]["total"]
    _audit("cve.import", path, {"import_id": result["import_id"], "total": total})
    _progress(
        f"{total['added']:,} added, {total['replaced']:,} replaced, "
        f"{total['unchanged']:,} unchanged, {total['withdrawn']:,} withdrawn, "
        f"{total['rejected']:,} rejected in {result['seconds']:.1f} s"
    )
    _after_import(engine, result)
    return result


def _after_import(engine, result: dict) -> None:
    """What follows an import that changed advisories (anything added, replaced or
    withdrawn: ``imported_at`` changes only on the rows written): the fleet-wide recompute of
    findings, with its alerts (:func:`_recompute_fleet`); its summary goes into the result as
    ``"findings"``."""
    total = result["counts"]["total"]
    if not (total.get("added") or total.get("replaced") or total.get("withdrawn")):
        return
    try:
        result["findings"] = _recompute_fleet(engine)
    except Exception as exc:  # the import is committed: say what failed, keep its result
        log.error("fleet: findings not recomputed after the import", exc_info=True)
        result["findings"] = {
            "error": f"findings not recomputed ({type(exc).__name__}: "
            f"{str(exc).splitlines()[0][:300] if str(exc) else ''}); run salt-run "
            "fleet.cve_recompute"
        }


# -- bootstrap ----------------------------------------------------------------------------------


def bootstrap(
    host,
    id,  # the CLI's word: salt-run fleet.bootstrap host=... id=...
    group,
    port=None,
    user=None,
    python="python3",
    prefix="/opt/saltext-fleet",
    service="systemd",
    timeout=900,
    wait=300,
):
    """
    Bootstrap a machine that only has SSH and python3 into an accepted, inventoried minion:
    generate its key pair, enrol exactly that key, install Salt and this extension in a
    virtualenv under ``prefix`` from a wheelhouse of this master's own packages (no network
    on either side), configure and start the minion (``service``: systemd, launchd or
    daemon) over salt-ssh with the node group's credential, then wait until the gate has
    accepted it and its first inventory is stored. Every step is a progress event. A second
    bootstrap of a node that is still bootstrapping is refused.

    host
        Address or name of the machine.
    id
        The minion id it gets.
    group
        The node group: its SSH user, port and credential (``fleet.group_set``), and the
        states its nodes get when they start.
    port, user
        Override the group's SSH port and user.
    python
        The machine's Python 3 (default ``python3``); the wheelhouse serves machines with
        the master's Python version and platform.

    CLI Example:

    .. code-block:: bash

        salt-run fleet.bootstrap host=10.0.4.17 id=mini-07 group=builders
    """
    try:
        timeout, wait = float(timeout), float(wait)
    except (TypeError, ValueError) as exc:
        raise SaltRunnerError("fleet.bootstrap: timeout and wait are seconds") from exc
    try:
        return bootstrapper.run(
            __opts__,
            _engine(),
            host=host,
            minion_id=id,
            group=group,
            actor=_actor(),
            port=port,
            user=user,
            python=str(python),
            prefix=str(prefix),
            service=str(service),
            timeout=timeout,
            wait=wait,
            progress=_progress,
        )
    except bootstrapper.BootstrapError as exc:
        raise SaltRunnerError(f"fleet.bootstrap: {exc}") from exc


def bootstraps(id=None, limit=50):
    """
    Bootstrap attempts, newest first: state (running, done, failed), the step reached, each
    step's time, the error.

    CLI Example:

    .. code-block:: bash

        salt-run fleet.bootstraps id=mini-07
    """
    if id is not None:
        id = _check_minion_id(id)
    return bootstrapper.attempts(_engine(), id, int(limit))


# -- vulnerability triage ------------------------------------------------------------------------


def _now():
    return store_triage.utc(datetime.datetime.now(datetime.timezone.utc))


def _triage_call(name: str, fun, *args):
    try:
        return fun(*args)
    except core_triage.TriageError as exc:
        raise SaltRunnerError(f"fleet.{name}: {exc}") from exc


def cve_triage(
    advisory,
    state,
    node=None,
    group=None,
    fleet=False,
    package=None,
    justification=None,
    expires=None,
    detail="",
):
    """
    Record an operator's decision about an advisory: for one node (``node=<minion id>``), a
    node group (``group=<name>``) or the whole fleet (``fleet=True``), for every package the
    advisory hits there or only ``package=<name>``. Audited (``vuln.triage``). A triaged
    finding stays visible but raises no alert and does not count as open.

    state
        ``not_affected`` (needs ``justification``: code_not_present, code_not_reachable,
        requires_configuration, requires_dependency, requires_environment,
        protected_by_compiler, protected_at_runtime, protected_at_perimeter,
        protected_by_mitigating_control), ``accepted`` (needs ``expires``) or ``will_fix``.
    expires
        ``YYYY-MM-DD``: the decision holds until that day begins (UTC); in the future.
    detail
        Free text: why.

    CLI Example:

    .. code-block:: bash

        salt-run fleet.cve_triage GHSA-9wx4-h78v-vm56 not_affected node=web-01 \\
            justification=code_not_reachable detail="the CLI only, never a server"
        salt-run fleet.cve_triage PYSEC-2024-2 accepted group=builders expires=2027-03-31
        salt-run fleet.cve_triage DSA-5000-1 will_fix fleet=True
    """

    def make():
        now = _now()
        scope, target = core_triage.scope_of(node=node, group=group, fleet=fleet)
        decision = core_triage.check(
            str(advisory),
            state,
            scope,
            target,
            now=now,
            package=None if package is None else str(package),
            justification=justification,
            detail="" if detail is None else str(detail),
            expires=None if expires is None else str(expires),
        )
        with _engine().begin() as conn:
            return store_triage.decide(conn, decision, _actor(), now)

    return _triage_call("cve_triage", make)


def cve_triage_revoke(id):
    """
    End a triage decision now (audited, ``vuln.triage.revoke``): its findings count as open
    again unless another decision covers them.

    CLI Example:

    .. code-block:: bash

        salt-run fleet.cve_triage_revoke 12
    """

    def make():
        with _engine().begin() as conn:
            return store_triage.revoke(conn, id, _actor(), _now())

    return _triage_call("cve_triage_revoke", make)


def cve_triage_list(advisory=None, all=False, limit=500):
    """
    Triage decisions, newest first: the live ones, or with ``all=True`` the expired and
    revoked ones too; ``advisory=<id>`` for one advisory's.

    CLI Example:

    .. code-block:: bash

        salt-run fleet.cve_triage_list
        salt-run fleet.cve_triage_list advisory=GHSA-9wx4-h78v-vm56 all=True
    """

    def make():
        wanted = None if advisory is None else core_triage.check_advisory_id(str(advisory))
        try:
            most = int(limit)
        except (TypeError, ValueError) as exc:
            raise core_triage.TriageError("limit", "a whole number") from exc
        with _engine().connect() as conn:
            return store_triage.decisions(
                conn, _now(), advisory_id=wanted, live_only=not _bool(all, "all"), limit=most
            )

    return _triage_call("cve_triage_list", make)


# -- vulnerabilities: findings ----------------------------------------------------------------

CVE_ALERT_TAG = "fleet/alert/cve"
#: Findings listed in one ``fleet/alert/cve`` event (``count`` has them all).
CVE_ALERT_LISTED = 100
_ALERT_FIELDS = (
    "advisory_id",
    "ecosystem",
    "package",
    "version",
    "fixed",
    "severity",
    "cvss_score",
)


def _cve_alerts(engine, opened: dict, threshold: str) -> int:
    """Fire ``fleet/alert/cve`` once per node with new findings at or above ``threshold``
    that no live triage decision covers; returns how many nodes."""
    if not opened:
        return 0
    with engine.connect() as conn:
        picked = store_findings.alerts(conn, opened, threshold)
    me = master_onboard.master_id(__opts__)
    for minion, found in sorted(picked.items()):
        # new findings are opened once for the fleet (the open findings' unique index): no
        # claim needed to fire; the claim's token says the alert fires, so a resolve may follow
        fired = _fire(
            CVE_ALERT_TAG,
            {
                "id": minion,
                "alert_severity": threshold,
                "count": len(found),
                "findings": [{k: f[k] for k in _ALERT_FIELDS} for f in found[:CVE_ALERT_LISTED]],
            },
        )
        if fired:
            with engine.begin() as conn:
                store_claims.claim(conn, store_claims.ALERT_CVE, minion, me, token="firing")
    return len(picked)


def _cve_resolves(engine, candidates, threshold: str) -> int:
    """Fire the resolved form of ``fleet/alert/cve`` for each node whose cve alert is firing
    (in the alert store) and that no longer has an open, untriaged finding at or above
    ``threshold`` (every alerted finding resolved, so PagerDuty resolves the incident).
    ``candidates``: the nodes to look at (None: every node whose alert is firing)."""
    if not threshold or threshold == "off":
        return 0
    with engine.connect() as conn:
        firing = store_alerts.firing_nodes(conn, "cve")
    nodes = firing if candidates is None else [m for m in firing if m in set(candidates)]
    if not nodes:
        return 0
    found = store_findings.node_findings(engine, nodes)
    with engine.connect() as conn:
        still = store_findings.alerts(conn, {m: found.get(m, []) for m in nodes}, threshold)
    resolved = [m for m in nodes if m not in still]
    # once for the fleet: two masters (an import on one, an inventory on the other) may both
    # find a node resolved
    data = {"state": "resolved", "alert_severity": threshold, "count": 0, "findings": []}
    fired = crossings.fire_once(
        engine,
        master_onboard.master_id(__opts__),
        store_claims.ALERT_CVE,
        CVE_ALERT_TAG,
        {m: ("resolved", {"id": m, **data}) for m in resolved},
        _fire,
    )
    return len(fired)


def _severity_arg(severity):
    if severity is None or severity == "":
        return None
    value = str(severity).lower()
    if value not in store_findings.SEVERITIES:
        raise SaltRunnerError(
            f"severity={severity!r} is not one of {', '.join(store_findings.SEVERITIES)}"
        )
    return value


def _recompute_fleet(engine) -> dict:
    cfg = _cfg()
    _progress("matching the fleet's packages against the advisories")
    result = store_findings.recompute(engine)
    alerts = _cve_alerts(engine, result["opened"], cfg.vulns.alert_severity)
    resolves = _cve_resolves(engine, None, cfg.vulns.alert_severity) if result["resolved"] else 0
    opened = sum(len(found) for found in result["opened"].values())
    summary = {
        "nodes": result["nodes"],
        "changed": result["changed"],
        "opened": opened,
        "updated": result["updated"],
        "resolved": result["resolved"],
        "alerts": alerts,
        "alerts_resolved": resolves,
        "not_covered": len(result["not_covered"]),
        "matched_keys": result["verdicts"]["matched"],
        "computed_at": result["computed_at"],
    }
    _progress(
        f"findings of {result['nodes']} nodes recomputed: {opened} opened, "
        f"{result['resolved']} resolved, {alerts} nodes alerted"
    )
    return summary


def cve(tgt="*", tgt_type="glob", severity=None, id=None, recompute=False, resolved=False):
    """
    Vulnerability findings per node: open findings (advisory id, aliases, summary, severity,
    CVSS score and vector, package, version, fixed version, first seen, triaged or not) and the
    ecosystems OSV does not cover on the node (Homebrew, Nix, macOS applications, a distro
    release the facts do not tell): those are "not covered", never clean.

    tgt, tgt_type
        Which nodes (Salt targeting, as ``fleet.drift``).
    severity
        Only findings at or above this severity (``critical``, ``high``, ``medium``, ``low``,
        ``none``, ``unknown``).
    id
        Only findings of this advisory (its id, or an alias such as a CVE id).
    recompute
        First recompute the findings of the whole fleet (what the reactor does after an
        import), firing ``fleet/alert/cve`` for new findings at or above
        ``fleet:vulns:alert_severity``.
    resolved
        Include resolved findings (with ``resolved_at``).

    Returns ``{minion: {"open", "triaged", "findings": [...], "not_covered": {ecosystem:
    packages}, "computed_at"}}`` (with ``recompute``, ``"_recompute"`` has its summary).

    CLI Example:

    .. code-block:: bash

        salt-run fleet.cve
        salt-run fleet.cve 'web-*' severity=high
        salt-run fleet.cve id=CVE-2024-35195 --out=json
        salt-run fleet.cve recompute=True
    """
    severity = _severity_arg(severity)
    engine = _engine()
    summary = None
    if _bool(recompute, "recompute"):
        summary = _recompute_fleet(engine)
    nodes = _match(store_drift.node_ids(engine), tgt, tgt_type)
    try:
        found = store_findings.node_findings(
            engine, nodes, severity, id, _bool(resolved, "resolved")
        )
    except store_findings.FindingsError as exc:
        raise SaltRunnerError(f"fleet.cve: {exc}") from exc
    states = store_findings.node_states(engine, nodes)
    out = {}
    for minion in nodes:
        mine = found.get(minion, [])
        live = [f for f in mine if f["resolved_at"] is None]
        state = states.get(minion, {})
        if (severity or id) and not mine:
            continue
        out[minion] = {
            "open": sum(1 for f in live if not f["triaged"]),
            "triaged": sum(1 for f in live if f["triaged"]),
            "findings": mine,
            "not_covered": state.get("not_covered", {}),
            "computed_at": state.get("computed_at"),
        }
    if summary is not None:
        out["_recompute"] = summary
    return out


def cve_node(minion, event=None):
    """
    Recompute one node's findings from its stored inventory and fire ``fleet/alert/cve`` for
    its new findings at or above ``fleet:vulns:alert_severity`` not covered by a live triage
    decision. This is what the shipped reactor runs on ``fleet/inventory/changed``.

    event
        The reactor passes the event it reacts to: it must be signed by this master and be
        about ``minion`` (minions can fire that tag too); otherwise nothing is recomputed.

    CLI Example:

    .. code-block:: bash

        salt-run fleet.cve_node web-01
    """
    minion = _check_minion_id(minion)
    refused = _refused(event, minion, "findings")
    if refused:
        return refused
    cfg = _cfg()
    engine = _engine()
    result = store_findings.recompute_node(engine, minion)
    if result is None:
        return {}
    alerts = _cve_alerts(engine, {minion: result["opened"]}, cfg.vulns.alert_severity)
    resolves = 0
    if result["resolved"]:
        resolves = _cve_resolves(engine, [minion], cfg.vulns.alert_severity)
    return {
        minion: {
            "opened": len(result["opened"]),
            "resolved": result["resolved"],
            "counts": result["counts"],
            "not_covered": result["not_covered"],
            "alerted": bool(alerts),
            "alert_resolved": bool(resolves),
            "computed_at": result["computed_at"],
        }
    }


def cve_recompute():
    """
    Recompute the findings of the whole fleet and fire ``fleet/alert/cve`` for new findings
    at or above ``fleet:vulns:alert_severity``; returns a summary (nodes, opened, resolved,
    alerts...). ``fleet.cve_import`` does this itself after an import that changed anything.

    CLI Example:

    .. code-block:: bash

        salt-run fleet.cve_recompute
    """
    return _recompute_fleet(_engine())


def cve_history(minion, days=None):
    """
    A node's exposure over time: ``{"points": [{"computed_at", "open", "critical", "high",
    "medium", "low", "unknown", "triaged"}], "findings": [...]}`` with every finding, open
    and resolved (``first_seen``, ``resolved_at``).

    days
        Only the points of the last N days.

    CLI Example:

    .. code-block:: bash

        salt-run fleet.cve_history web-01 days=30
    """
    minion = _check_minion_id(minion)
    if days is not None:
        try:
            days = float(days)
        except (TypeError, ValueError) as exc:
            raise SaltRunnerError(f"fleet.cve_history: days={days!r} is not a number") from exc
        if days <= 0:
            raise SaltRunnerError("fleet.cve_history: days must be > 0")
    engine = _read_engine()
    return {
        "points": store_findings.history(engine, minion, days),
        "findings": store_findings.node_findings(engine, [minion], resolved=True).get(minion, []),
    }


# -- signing certificates and Xcode ------------------------------------------------------------


def cert_check(node=None, event=None):
    """
    Check the signing certificates the nodes report (their ``fleet`` grain) against the
    master's clock and fire ``fleet/alert/cert``, signed by the master, for each threshold
    newly crossed: 30, 7 and 1 days before ``not_after``, and ``expired``. Each fires once per
    (node, certificate), recorded in the store, however often this runs (the ``fleet``
    engine runs it every ``fleet:alerts:cert_check_minutes``). Returns what fired.

    node
        Check this node only (default: every node).

    event
        The shipped reactor passes the ``fleet/certs/changed`` event it reacts to (``{"tag",
        "data"}``): it must be signed by this master and be about ``node``; an event that is
        not is logged and nothing is checked. With an event, the node's check is done once
        for the fleet for the identities it reports: a master that finds it done answers
        ``{"skipped", "by"}``.

    CLI Example:

    .. code-block:: bash

        salt-run fleet.cert_check
        salt-run fleet.cert_check node=mac-07
    """
    nodes = None if node is None else [_check_minion_id(node)]
    if event is not None:
        if node is None:
            raise SaltRunnerError("fleet.cert_check: an event needs the node it is about")
        refused = _refused(event, nodes[0], "certificates")
        if refused:
            return refused
        # the reaction to changed grains: once for the fleet
        return certcheck.check_node_once(
            _engine(), _fire, nodes[0], master_onboard.master_id(__opts__)
        )
    engine = _engine()
    return certcheck.check(engine, _fire, nodes=nodes)


def certs(days=None, team=None, limit=1000):
    """
    Every code-signing identity in the fleet, soonest expiry first (unknown expiry last):
    ``[{"sha1", "name", "team_id", "not_after", "days_left", "node_count", "nodes"}]``.
    ``days_left`` is counted from ``not_after`` on the master's clock. An identity is what
    the nodes report: a node that reports another date or name for a SHA-1 gets a row of its
    own.

    days
        Only identities that expire within N days (expired ones included).

    team
        Only this team id.

    limit
        At most this many identities (default 1000).

    CLI Example:

    .. code-block:: bash

        salt-run fleet.certs
        salt-run fleet.certs days=30
    """
    try:
        days = core_certs.check_days(days, "days")
    except core_certs.CertError as exc:
        raise SaltRunnerError(f"fleet.certs: {exc}") from exc
    limit = _whole(limit, "fleet.certs: limit", 1, 100000)
    team = None if team in (None, "") else str(team)[:32]
    now = _now()
    engine = _read_engine()
    out = []
    page = 1
    with engine.connect() as conn:
        while len(out) < limit:
            query = store_certs.CertsQuery(
                team=team, days=days, page=page, per_page=min(500, limit)
            )
            found = store_certs.certs_page(conn, query, now)
            out += [{k: v for k, v in r.items() if k != "band"} for r in found["rows"]]
            if page >= found["pages"]:
                break
            page += 1
    return out[:limit]


def xcode(baseline=None, lacking=False, limit=1000):
    """
    The Xcode matrix: the Xcode versions in the fleet (oldest first) and, per node (macOS
    nodes and nodes whose baseline requires an Xcode), its macOS version, the Xcode versions
    installed, the selected one, its baseline and the Xcode version that baseline requires,
    and ``lacks`` when that version is not installed. ``lacking`` lists those nodes.

    baseline
        Compare every macOS node with this baseline's Xcode instead of its own baseline's.

    lacking
        Only the nodes that lack the required version.

    CLI Example:

    .. code-block:: bash

        salt-run fleet.xcode
        salt-run fleet.xcode baseline=macos-build lacking=True
    """
    if baseline is not None:
        baseline = _check_baseline_name(baseline)
    lacking = _bool(lacking, "lacking")
    limit = _whole(limit, "fleet.xcode: limit", 1, 100000)
    engine = _read_engine()
    nodes, versions, page = {}, [], 1
    with engine.connect() as conn:
        if baseline is not None and not store_certs.baseline_xcode(conn, baseline)[0]:
            raise SaltRunnerError(f"fleet.xcode: no baseline {baseline!r}")
        while len(nodes) < limit:
            query = store_certs.XcodeQuery(
                baseline=baseline, lacking=lacking, page=page, per_page=min(500, limit)
            )
            found = store_certs.xcode_matrix(conn, query)
            versions = found["versions"]
            for row in found["rows"]:
                nodes[row.pop("id")] = row
            if page >= found["pages"]:
                break
            page += 1
    nodes = dict(list(nodes.items())[:limit])
    return {
        "versions": versions,
        "nodes": nodes,
        "lacking": sorted(n for n, row in nodes.items() if row["lacks"]),
    }


def _whole(value, what: str, low: int, high: int) -> int:
    try:
        number = int(value)
    except (TypeError, ValueError) as exc:
        raise SaltRunnerError(f"{what}={value!r} is not a whole number") from exc
    if isinstance(value, bool) or not low <= number <= high:
        raise SaltRunnerError(f"{what}={value!r} is not {low} to {high}")
    return number


# -- PiKVM devices --------------------------------------------------------------------------


def kvm_add(
    name,
    host,
    password=None,
    password_file=None,
    totp_secret_file=None,
    node=None,
    **options,
):
    """
    Register a PiKVM device (or update one) under ``name``: its address and client options
    (``port``, ``user``, ``auth``, ``verify``, ``fingerprint``, ``timeout``,
    ``connect_timeout``: see the PiKVM docs page), the node it controls, and its password (and
    TOTP secret when the device has two-factor login on), read from a file on the master so
    they stay out of shell history. Credentials are stored encrypted by the master's vault and
    never printed. Everything is validated before anything is stored.

    CLI Example:

    .. code-block:: bash

        salt-run fleet.kvm_add pikvm-07 host=10.0.7.20 password_file=/root/pikvm-07.pw \\
            fingerprint=AB:CD:... node=mini-07
    """
    if password is not None and password_file is not None:
        raise SaltRunnerError("fleet.kvm_add: give password or password_file, not both")
    if password_file is not None:
        password = _read_secret_file(password_file, "password_file").strip()
    raw = {k: v for k, v in options.items() if not k.startswith("__")}
    raw.update(host=host, password=password)
    if totp_secret_file is not None:
        raw["totp_secret"] = _read_secret_file(totp_secret_file, "totp_secret_file").strip()
    raw = {k: v for k, v in raw.items() if v is not None}
    try:
        with _engine().begin() as conn:
            created = store_kvm.add_device(conn, _vault(), name, raw, node)
            found = store_kvm.device(conn, name)
    except store_kvm.KvmStoreError as exc:
        raise SaltRunnerError(f"fleet.kvm_add: {exc}") from exc
    _audit("kvm.add" if created else "kvm.update", name, {"host": found["host"], "node": node})
    return {"created" if created else "updated": found}


def kvm_list(node=None):
    """
    The registered PiKVM devices (without credentials): address, the node each controls, its
    state (online, unreachable, offline) and last poll.

    CLI Example:

    .. code-block:: bash

        salt-run fleet.kvm_list
        salt-run fleet.kvm_list node=mini-07
    """
    with _engine().connect() as conn:
        return {d["name"]: d for d in store_kvm.devices(conn, node=node)}


def kvm_remove(name):
    """
    Forget a PiKVM device, its poll history and its stored credentials.

    CLI Example:

    .. code-block:: bash

        salt-run fleet.kvm_remove pikvm-07
    """
    try:
        with _engine().begin() as conn:
            gone = store_kvm.remove_device(conn, name)
    except store_kvm.KvmStoreError as exc:
        raise SaltRunnerError(f"fleet.kvm_remove: {exc}") from exc
    if not gone:
        raise SaltRunnerError(f"fleet.kvm_remove: no KVM device named {name!r}")
    _audit("kvm.remove", name)
    return {"removed": name}


def kvm_poll(name=None):
    """
    Poll every PiKVM device (or one) now: online, power LED, HID and mass storage, CPU
    temperature, uptime. Each poll is stored (the device's history) and alerts fire as
    ``fleet/alert/kvm`` events on the transitions: ``offline`` after
    ``fleet:kvm:offline_after`` missed polls in a row, ``online`` when it is back,
    ``over_temperature`` at ``fleet:kvm:over_temp_c``, ``temperature_ok`` 5 °C below.

    CLI Example:

    .. code-block:: bash

        salt-run fleet.kvm_poll
        salt-run fleet.kvm_poll pikvm-07
    """
    _engine()  # the store ready, its audit anchor in use
    _progress("polling the KVM devices")
    try:
        with Poller() as poller:
            return kvmpoll.poll_once(__opts__, poller, None if name is None else [name])
    except store_kvm.KvmStoreError as exc:
        raise SaltRunnerError(f"fleet.kvm_poll: {exc}") from exc
    except core_secrets.SecretsError as exc:
        raise SaltRunnerError(f"fleet:key_file: {exc}") from exc


def kvm_history(name, hours=24):
    """
    A PiKVM device's polls of the last ``hours``, oldest first.

    CLI Example:

    .. code-block:: bash

        salt-run fleet.kvm_history pikvm-07 hours=2
    """
    try:
        hours = float(hours)
    except (TypeError, ValueError):
        raise SaltRunnerError(f"fleet.kvm_history: hours={hours!r} is not a number") from None
    since = datetime.datetime.now(datetime.timezone.utc) - datetime.timedelta(hours=hours)
    try:
        with _engine().connect() as conn:
            store_kvm.device(conn, name)
        return store_kvm.poll_history(_engine(), name, since=since)
    except store_kvm.KvmStoreError as exc:
        raise SaltRunnerError(f"fleet.kvm_history: {exc}") from exc


# -- PiKVM actions and the ISO library --------------------------------------------------------


def _kvm_actions() -> kvmops.KvmActions:
    return kvmops.KvmActions(
        _engine(), _vault(), _cfg().kvm, _actor(), progress=lambda m, d, t: _progress(m, d, t, True)
    )


def _kvm_call(fun: str, call, *args, **kwargs):
    """``call(*args, **kwargs)``, a refusal or failure as ``SaltRunnerError`` naming ``fun``."""
    try:
        return call(*args, **kwargs)
    except FleetError as exc:
        raise SaltRunnerError(f"fleet.{fun}: {exc}") from exc


def kvm_power(device, action, wait=False):
    """
    Power a registered PiKVM's server ``on``, ``off`` (a soft click), ``off_hard`` or
    ``reset_hard``, from the master with the device's stored credentials. kvmd clicks only
    when the power LED calls for it (``clicked`` in the answer). One power action per device
    every ``fleet:kvm:power_interval`` seconds (10 by default), whoever asks (the UI, another
    ``salt-run``): a second one sooner is refused with when to retry. Audited (``kvm.power``).

    CLI Example:

    .. code-block:: bash

        salt-run fleet.kvm_power pikvm-07 reset_hard
        salt-run fleet.kvm_power pikvm-07 on
    """
    return _kvm_call("kvm_power", _kvm_actions().power, device, action, wait=_bool(wait, "wait"))


def kvm_click(device, button, wait=False):
    """
    Press a registered PiKVM's ATX button ``power``, ``power_long`` or ``reset`` whatever the
    power LED says. A power action: the same rate limit as :func:`kvm_power`. Audited
    (``kvm.click``).

    CLI Example:

    .. code-block:: bash

        salt-run fleet.kvm_click pikvm-07 power_long
    """
    return _kvm_call("kvm_click", _kvm_actions().click, device, button, wait=_bool(wait, "wait"))


def kvm_iso_mount(device, iso, cdrom=True, overwrite=True, hold=None):
    """
    Mount an image of the master's ISO library (``fleet.iso_add``) on a registered PiKVM:
    the file is hashed again against its SHA-256 (refused before a byte is sent if it
    changed), uploaded (progress events as it goes), selected as a CD-ROM (``cdrom=False``:
    a flash drive) and connected to the server. An image of that name already on the device
    is replaced (``overwrite=False`` refuses instead). One ISO action per device at a time: a
    second mount or an eject while this runs is refused. Audited (``kvm.iso_mount``).
    ``hold`` is for the web UI, which takes the device's ISO slot when the button is clicked
    and passes its token here.

    CLI Example:

    .. code-block:: bash

        salt-run fleet.kvm_iso_mount pikvm-07 debian-12.8-netinst.iso
    """
    return _kvm_call(
        "kvm_iso_mount",
        _kvm_actions().iso_mount,
        device,
        iso,
        cdrom=_bool(cdrom, "cdrom"),
        overwrite=_bool(overwrite, "overwrite"),
        hold=hold,
    )


def kvm_iso_eject(device, remove=False):
    """
    Disconnect a registered PiKVM's virtual drive from its server and unselect the image
    (``remove=True``: delete the image from the device too). Refused while an ISO upload
    runs on the device. Audited (``kvm.iso_eject``).

    CLI Example:

    .. code-block:: bash

        salt-run fleet.kvm_iso_eject pikvm-07
    """
    return _kvm_call(
        "kvm_iso_eject", _kvm_actions().iso_eject, device, remove=_bool(remove, "remove")
    )


def iso_add(source, sha256, name=None, overwrite=False):
    """
    Add an image to the master's ISO library (``fleet:kvm:iso_dir``, default
    ``<cachedir>/fleet/iso``), to mount on any number of devices with
    ``fleet.kvm_iso_mount``. ``source`` is a path on the master, a ``file://`` or an
    ``http(s)://`` URL; it is copied in and hashed on the way, and kept only when its SHA-256
    is ``sha256`` (on a mismatch nothing is kept). ``name`` defaults to the source's file
    name. Progress events as it copies. Audited (``kvm.iso_add``).

    CLI Example:

    .. code-block:: bash

        salt-run fleet.iso_add https://cdimage.debian.org/.../debian-12.8.0-amd64-netinst.iso \\
            sha256=<the 64 hex digits its SHA256SUMS gives>
    """
    return _kvm_call(
        "iso_add",
        _kvm_actions().iso_add,
        source,
        sha256,
        name=name,
        overwrite=_bool(overwrite, "overwrite"),
    )


def iso_list():
    """
    The images of the master's ISO library: SHA-256, size, where each came from, who added
    it and when, and whether its file is on this master (``present``).

    CLI Example:

    .. code-block:: bash

        salt-run fleet.iso_list
    """
    return _kvm_call("iso_list", _kvm_actions().iso_list)


def iso_remove(name):
    """
    Remove an image from the master's ISO library (its file and its record). Images already
    on devices stay there. Audited (``kvm.iso_remove``).

    CLI Example:

    .. code-block:: bash

        salt-run fleet.iso_remove debian-12.8-netinst.iso
    """
    return _kvm_call("iso_remove", _kvm_actions().iso_remove, name)


# -- alerts: the delivery log, acknowledgements, routes ---------------------------------------


def _alerts_call(name: str, fun, *args, **kwargs):
    try:
        return fun(*args, **kwargs)
    except (FleetError, config.FleetConfigError) as exc:
        raise SaltRunnerError(f"fleet.{name}: {exc}") from exc


def _limit_arg(limit, what="limit") -> int:
    try:
        return int(limit)
    except (TypeError, ValueError) as exc:
        raise SaltRunnerError(f"{what}={limit!r} is not a whole number") from exc


def alerts(status=None, kind=None, node=None, limit=100, before=None):
    """
    The alert log, newest first: every ``fleet/alert/*`` event the engine's alert worker
    accepted (signed by this master), with its deliveries (route, status, attempts, last
    error).

    status
        Only alerts with a delivery in this status: ``pending`` (due, or waiting for a
        retry), ``delivered``, ``failed`` (given up), ``suppressed`` (duplicate, flapping,
        acknowledged).
    kind, node
        Only alerts of this kind (``drift``, ``cve``, ``kvm``, ``cert``, ``test``) or node.
    limit, before
        At most ``limit`` alerts (1-1000), with ids below ``before`` (the next page).

    Returns ``[{"id", "kind", "node", "subject", "state", "condition", "severity",
    "summary", "raised_at", "received_at", "suppressed", "dedup_key", "deliveries": [...]}]``.

    CLI Example:

    .. code-block:: bash

        salt-run fleet.alerts status=failed
        salt-run fleet.alerts node=mac-07 limit=20
    """
    engine = _engine()
    with engine.connect() as conn:
        return _alerts_call(
            "alerts",
            alert_views.alert_log,
            conn,
            kind=kind or None,
            node=node or None,
            status=status or None,
            limit=_limit_arg(limit),
            before=None if before in (None, "") else _limit_arg(before, "before"),
            ui_url=_cfg().alerts.ui_url,
        )


def alert_ack(kind, node, subject="", comment=""):
    """
    Acknowledge an alert's condition: further alerts of (``kind``, ``node``, ``subject``)
    are recorded but not sent while its condition stays as it is now; when it changes, the
    acknowledgement ends and alerts are sent again. Audited (``alert.ack``).

    CLI Example:

    .. code-block:: bash

        salt-run fleet.alert_ack drift mac-07 comment="rebuilding it tonight"
        salt-run fleet.alert_ack kvm pikvm-3 subject=pikvm-3:reach
    """
    if kind not in core_alerts.KINDS:
        raise SaltRunnerError(f"kind={kind!r} is not one of {', '.join(core_alerts.KINDS)}")
    node = str(node) if node not in (None, "") else None
    subject = "" if subject is None else str(subject)
    actor = _actor()
    done = _alerts_call(
        "alert_ack",
        store_alerts.ack,
        _engine(),
        kind,
        node,
        subject,
        actor=actor,
        comment=str(comment or ""),
    )
    _audit("alert.ack", f"{kind}:{node or ''}:{subject}", {"condition": done["condition"]})
    return done


def alert_unack(kind, node, subject=""):
    """
    Withdraw the acknowledgement of an alert's condition (``fleet.alert_ack``): its alerts
    are sent again from the next one on. Audited (``alert.unack``). Returns ``{"kind",
    "node", "subject", "withdrawn"}`` (``withdrawn`` false: it was not acknowledged).

    CLI Example:

    .. code-block:: bash

        salt-run fleet.alert_unack drift mac-07
    """
    if kind not in core_alerts.KINDS:
        raise SaltRunnerError(f"kind={kind!r} is not one of {', '.join(core_alerts.KINDS)}")
    node = str(node) if node not in (None, "") else None
    subject = "" if subject is None else str(subject)
    withdrawn = _alerts_call("alert_unack", store_alerts.unack, _engine(), kind, node, subject)
    if withdrawn:
        _audit("alert.unack", f"{kind}:{node or ''}:{subject}", {})
    return {"kind": kind, "node": node, "subject": subject, "withdrawn": withdrawn}


def _route(engine, key):
    with engine.connect() as conn:
        route = alertworker.find_route(_cfg(), conn, str(key))
    if route is None:
        raise SaltRunnerError(f"no alert route {key!r} (see salt-run fleet.alert_routes)")
    return route


def alert_routes():
    """
    The alert routes: the master config's (``fleet:alerts:routes``, ``source: config``) and
    the web UI's (``source: ui``), with the names of the secrets set for each (never their
    values).

    CLI Example:

    .. code-block:: bash

        salt-run fleet.alert_routes
    """
    engine = _engine()
    with engine.connect() as conn:
        out = []
        for route in _cfg().alerts.routes:
            item = route.as_dict()
            item["secrets"] = store_secrets.secret_names(conn, store_alerts.SCOPE, route.key)
            out.append(item)
        for item in alert_views.ui_routes(conn):
            item["secrets"] = store_secrets.secret_names(conn, store_alerts.SCOPE, item["key"])
            out.append(item)
    return out


def alert_test(route):
    """
    Send a test alert (kind ``test``) through one route now; it is recorded in the alert
    log like any other. Returns the attempt's outcome: ``{"route", "alert_id",
    "delivery_id", "status", "ok", "status_code", "latency_ms", "error"}``. Audited.

    CLI Example:

    .. code-block:: bash

        salt-run fleet.alert_test config:oncall
    """
    cfg = _cfg()
    engine = _engine()
    found = _route(engine, route)
    master = alertworker.master_id(__opts__)
    delivery = store_alerts.record_test(
        engine, found, master=master, actor=_actor(), ui_url=cfg.alerts.ui_url
    )
    try:
        vault = core_secrets.Vault.open(cfg.key_file)
    except core_secrets.SecretsError:
        vault = None
    done = alertworker.deliver(engine, vault, cfg, delivery, master, route=found, retry=False)
    _audit("alert.test", found.key, {"ok": done["outcome"]["ok"], "status": done["status"]})
    return {
        "route": found.key,
        "alert_id": delivery["alert_id"],
        "delivery_id": delivery["id"],
        "status": done["status"],
        **{k: done["outcome"][k] for k in ("ok", "status_code", "latency_ms", "error")},
    }


def alert_secret(route, name, value=None, value_file=None):
    """
    Store a secret of an alert route in the vault (encrypted): ``hmac`` (webhook), ``url``
    (Slack's incoming-webhook URL), ``routing_key`` (PagerDuty), ``password`` (email). The
    value is never shown again. Audited (``alert.secret``).

    CLI Example:

    .. code-block:: bash

        salt-run fleet.alert_secret config:oncall routing_key value_file=/root/pd.key
        salt-run fleet.alert_secret ui:builds hmac value=...
    """
    engine = _engine()
    found = _route(engine, route)
    allowed = alertworker.secret_names(found.destination)
    if name not in allowed:
        raise SaltRunnerError(
            f"fleet.alert_secret: a {found.destination} route's secrets are "
            f"{', '.join(allowed)}, not {name!r}"
        )
    if (value is None) == (value_file is None):
        raise SaltRunnerError("fleet.alert_secret: give value or value_file")
    if value_file is not None:
        value = _read_secret_file(value_file, "value_file").strip()
    if not str(value):
        raise SaltRunnerError("fleet.alert_secret: the value is empty")
    with engine.begin() as conn:
        _alerts_call(
            "alert_secret",
            store_alerts.put_route_secret,
            conn,
            _vault(),
            found.key,
            name,
            str(value),
        )
    _audit("alert.secret", found.key, {"name": name})
    return {"route": found.key, "name": name, "stored": True}


def _mapping_arg(value, what):
    if value is None or value == "":
        return {}
    if isinstance(value, str):
        try:
            value = salt.utils.yaml.safe_load(value)
        except Exception as exc:
            raise SaltRunnerError(f"{what}: not YAML: {exc}") from exc
    if not isinstance(value, dict):
        raise SaltRunnerError(f"{what}: expected a mapping, got {value!r:.80}")
    return value


def alert_route_set(name, destination, match=None, target=None, secrets=None, enabled=True):
    """
    Create or replace a route of the web UI's (``ui:<name>``; the master config's own are
    edited in the config). ``match``: ``{kinds, min_severity, group, node}``; ``target``: the
    destination's settings, never a secret; ``secrets``: ``{name: value}`` stored in the
    vault. Audited (``alert.route_set``).

    CLI Example:

    .. code-block:: bash

        salt-run fleet.alert_route_set builds webhook \\
            match='{kinds: [drift], min_severity: warning, node: "mac-*"}' \\
            target='{url: "https://hooks.example.com/fleet"}' secrets='{hmac: s3cret}'
    """
    match = _mapping_arg(match, "match")
    target = _mapping_arg(target, "target")
    secrets = _mapping_arg(secrets, "secrets")
    enabled = _bool(enabled, "enabled")
    allowed = alertworker.secret_names(str(destination))
    for secret in secrets:
        if secret not in allowed:
            raise SaltRunnerError(
                f"fleet.alert_route_set: secrets: a {destination} route's secrets are "
                f"{', '.join(allowed)}, not {secret!r}"
            )
    if isinstance(destination, str) and destination in alertsend.DESTINATIONS:
        _alerts_call("alert_route_set", alertsend.check_target, destination, target)
    engine = _engine()
    vault = _vault() if secrets else None
    with engine.begin() as conn:
        route = _alerts_call(
            "alert_route_set",
            store_alerts.set_route,
            conn,
            vault,
            name,
            destination,
            match,
            target,
            {k: str(v) for k, v in secrets.items()},
            enabled,
            actor=_actor(),
        )
    _audit(
        "alert.route_set",
        route.key,
        {"destination": route.destination, "match": route.match_dict(), "secrets": sorted(secrets)},
    )
    return {**route.as_dict(), "secrets": sorted(secrets)}


def alert_route_delete(name):
    """
    Delete a route of the web UI's and its secrets; its pending deliveries fail. Audited
    (``alert.route_delete``).

    CLI Example:

    .. code-block:: bash

        salt-run fleet.alert_route_delete builds
    """
    name = str(name)
    if name.startswith("ui:"):
        name = name[3:]
    with _engine().begin() as conn:
        gone = store_alerts.delete_route(conn, name)
    _audit("alert.route_delete", f"ui:{name}", {"deleted": gone})
    return {"route": f"ui:{name}", "deleted": gone}
