"""
Fleet runners: ``salt-run fleet.*`` on the master.

Reads the master's ``fleet:`` options (see the configuration docs):

.. code-block:: yaml

    fleet:
      db_url: postgresql+psycopg://fleet@127.0.0.1/fleet   # default: SQLite under the cachedir

:depends: saltext-fleet's store (SQLAlchemy 2, psycopg 3), installed with the package.
"""

from __future__ import annotations

import logging
import os

from salt.exceptions import SaltRunnerError

from saltext_fleet import config
from saltext_fleet.core import baseline as core_baseline
from saltext_fleet.core import drift as core_drift
from saltext_fleet.store import drift as store_drift
from saltext_fleet.store import engine as store_engine
from saltext_fleet.store import queries
from saltext_fleet.store.spool import spool_status

log = logging.getLogger(__name__)

__virtualname__ = "fleet"


def __virtual__():
    try:
        config.load(__opts__)
    except config.FleetConfigError as exc:
        return False, f"the fleet runners cannot load: {exc}"
    return __virtualname__


def _cfg() -> config.FleetConfig:
    return config.load(__opts__)


def store_status():
    """
    Show the store: backend, schema revision (current and newest), spool depth and age,
    quarantined records, and row counts.

    CLI Example:

    .. code-block:: bash

        salt-run fleet.store_status
    """
    cfg = _cfg()
    engine = store_engine.get_engine(cfg.db_url)
    spool = spool_status(os.path.join(__opts__["cachedir"], "fleet", "spool"))
    status = {
        "backend": engine.dialect.name,
        "url": engine.url.render_as_string(hide_password=True),
        "schema_revision": None,
        "schema_head": store_engine.head_revision(),
        "spool_depth": spool["depth"],
        "spool_oldest_age_seconds": spool["oldest_age"],
        "spool_bytes": spool["bytes"],
        "reachable": True,
    }
    try:
        store_engine.ensure_schema(engine)
        status["schema_revision"] = store_engine.current_revision(engine)
        rows = queries.counts(engine)
        status["quarantine"] = rows.pop("quarantine")
        status["rows"] = rows
    except Exception as exc:  # noqa: BLE001 - an unreachable database is a status, not a crash
        if not _is_unreachable(exc):
            raise SaltRunnerError(f"fleet.store_status: {exc}") from exc
        status["reachable"] = False
        status["error"] = f"{type(exc).__name__}: {str(exc).splitlines()[0][:300]}"
    return status


def _is_unreachable(exc: BaseException) -> bool:
    from saltext_fleet.store.batch import is_connection_error

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
    engine = store_engine.get_engine(_cfg().db_url)
    store_engine.ensure_schema(engine)
    return engine


def _progress(message: str, done: int | None = None, total: int | None = None) -> None:
    """A runner progress event (``salt/run/<jid>/progress``), shown by ``salt-run`` as it runs."""
    log.info("fleet: %s", message)
    jid_event = globals().get("__jid_event__")
    if jid_event is None:
        return
    data = {"message": message}
    if total:
        data.update(done=done, total=total)
    try:
        jid_event.fire_event(data, "progress")
    except Exception:  # noqa: BLE001 - progress is a courtesy, never a failure
        log.debug("fleet: could not fire a progress event", exc_info=True)


def _fire(tag: str, data: dict) -> bool:
    """Fire an event on the master bus; a bus that is down is logged, not raised (what fired
    it is already recorded in the store)."""
    import salt.utils.event

    try:
        with salt.utils.event.get_master_event(
            __opts__, __opts__["sock_dir"], listen=False
        ) as event:
            if event.fire_event(data, tag):
                return True
    except Exception:  # noqa: BLE001
        log.debug("fleet: firing %s failed", tag, exc_info=True)
    log.warning("fleet: could not fire %s for %s (is the master running?)", tag, data.get("id"))
    return False


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
        import fnmatch

        return [n for n in nodes if fnmatch.fnmatchcase(n, str(tgt))]
    if tgt_type == "list":
        wanted = set(_as_list(tgt, "tgt") or [])
        return [n for n in nodes if n in wanted]
    if tgt_type == "pcre":
        import re

        try:
            pattern = re.compile(str(tgt))
        except re.error as exc:
            raise SaltRunnerError(f"tgt: {tgt!r} is not a regular expression: {exc}") from None
        return [n for n in nodes if pattern.match(n)]
    import salt.utils.minions

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
    fired = 0
    for minion, result in results.items():
        state = core_drift.crossing(result.get("previous_score"), result["score"], threshold)
        if state is None:
            continue
        _fire(
            ALERT_TAG,
            {
                "id": minion,
                "state": state,
                "score": result["score"],
                "previous_score": result.get("previous_score"),
                "alert_score": threshold,
                "baseline": result["baseline"],
            },
        )
        fired += 1
    return fired


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
        raise SaltRunnerError(f"fleet.drift: {exc}") from None
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


def drift_node(minion, trigger="inventory"):
    """
    Recompute one node's drift from its stored inventory, append it to the node's history and
    fire ``fleet/alert/drift`` if its score crossed ``fleet:drift:alert_score``. This is what
    the shipped reactor runs on ``fleet/inventory/changed`` and ``fleet/states/ran``.

    CLI Example:

    .. code-block:: bash

        salt-run fleet.drift_node web-01
    """
    minion = _check_minion_id(minion)
    cfg = _cfg()
    engine = _engine()
    assignment = _assignment([minion], None, engine)
    trigger = str(trigger)[:32]
    try:
        result = store_drift.recompute_node(
            engine, minion, assignment.get(minion), cfg.drift.weight_map(), trigger=trigger
        )
    except store_drift.DriftError as exc:
        raise SaltRunnerError(f"fleet.drift_node: {exc}") from None
    if result is None:
        return {}
    _alerts({minion: result}, cfg.drift.alert_score)
    return {minion: {k: result.get(k) for k in _PUBLIC}}


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
        except (TypeError, ValueError):
            raise SaltRunnerError(f"fleet.drift_history: days={days!r} is not a number") from None
        if days <= 0:
            raise SaltRunnerError("fleet.drift_history: days must be > 0")
    return store_drift.history(_engine(), minion, days)


def _bool(value, what: str) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in ("true", "false", "yes", "no", "1", "0"):
        return value.lower() in ("true", "yes", "1")
    raise SaltRunnerError(f"{what}={value!r} is not true or false")


def _check_minion_id(minion) -> str:
    import re

    if not isinstance(minion, str) or not re.match(r"^[A-Za-z0-9._-]{1,255}$", minion):
        raise SaltRunnerError(
            f"{minion!r} is not a minion id ([A-Za-z0-9._-], 1 to 255 characters)"
        )
    return minion


def _check_baseline_name(name) -> str:
    try:
        return core_baseline.check_name(name)
    except core_baseline.BaselineError as exc:
        raise SaltRunnerError(str(exc)) from None


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
        raise SaltRunnerError(f"fleet.baseline_pin: {exc}") from None
    store_drift.save_baseline(engine, spec, f"pin:{minion}")
    return _summary_of(spec, f"pin:{minion}")


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
    return store_drift.list_baselines(_engine())


def baseline_show(name, yaml=False):
    """
    Show a baseline (its normal form; ``yaml=True`` prints the short YAML people write, ready
    for ``fleet.baseline_import``).

    CLI Example:

    .. code-block:: bash

        salt-run fleet.baseline_show macos-build
        salt-run fleet.baseline_show macos-build yaml=True --out=txt > macos-build.yaml
    """
    found = _need_baseline(_engine(), name)
    if yaml:
        import salt.utils.yaml

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
        raise SaltRunnerError(f"fleet.baseline_set: {exc}") from None
    store_drift.save_baseline(engine, spec, "runner")
    return core_baseline.diff(current, spec) | {
        "name": name,
        "revision": core_baseline.revision(spec),
    }


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
            raise SaltRunnerError(f"fleet.baseline_import: {source}: {key}: {exc}") from None
    engine = _engine()
    out = {}
    for spec in specs:
        created = store_drift.save_baseline(engine, spec, source)
        out[spec["name"]] = "created" if created else "replaced"
    return out


def _yaml_file(path):
    import salt.utils.yaml

    if not isinstance(path, str) or not os.path.isabs(path):
        raise SaltRunnerError(f"fleet.baseline_import: {path!r} is not an absolute path")
    try:
        with open(path, encoding="utf-8") as handle:
            return salt.utils.yaml.safe_load(handle)
    except OSError as exc:
        raise SaltRunnerError(
            f"fleet.baseline_import: cannot read {path}: {exc.strerror}"
        ) from None
    except Exception as exc:  # noqa: BLE001 - YAML errors come in many classes
        raise SaltRunnerError(f"fleet.baseline_import: {path} is not valid YAML: {exc}") from None


def _pillar_baselines(minion):
    import salt.pillar

    grains = {}
    try:
        import salt.cache

        grains = salt.cache.factory(__opts__).fetch(f"minions/{minion}", "data").get("grains", {})
    except Exception:  # noqa: BLE001 - no cached grains: compile with none
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
    except (TypeError, ValueError):
        raise SaltRunnerError(
            f"fleet.baseline_assign: priority={priority!r} is not a whole number"
        ) from None
    try:
        return store_drift.assign(_engine(), name, target, tgt_type, priority)
    except store_drift.DriftError as exc:
        raise SaltRunnerError(f"fleet.baseline_assign: {exc}") from None


def baseline_unassign(name, target=None):
    """
    Remove a baseline's assignment to ``target`` (all its assignments without ``target``).

    CLI Example:

    .. code-block:: bash

        salt-run fleet.baseline_unassign macos-build 'mini-*'
    """
    _check_baseline_name(name)
    return {"removed": store_drift.unassign(_engine(), name, target)}


def nodes(tgt="*", tgt_type="glob"):
    """
    The nodes in the store: id, first and last seen, inventory digest and time, pending
    states, and the latest drift score.

    CLI Example:

    .. code-block:: bash

        salt-run fleet.nodes
        salt-run fleet.nodes 'mini-*'
    """
    engine = _engine()
    rows = store_drift.node_rows(engine)
    wanted = set(_match([r["minion_id"] for r in rows], tgt, tgt_type))
    return [r for r in rows if r["minion_id"] in wanted]
