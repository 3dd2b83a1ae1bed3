"""
Store every job, return and event of Salt in the saltext-fleet database.

Usable three ways:

.. code-block:: yaml

    # master config: the job cache and the event store
    master_job_cache: fleet
    event_return: fleet
    fleet:
      db_url: postgresql+psycopg://fleet@127.0.0.1/fleet   # default: SQLite under the cachedir

and as a minion returner (``salt '*' test.ping --return fleet``), in which case the minion's
own ``fleet:db_url`` must point at the master's PostgreSQL database with a *minion role*, one
that may only append returns and events (``saltext-fleet db minion-role NAME`` on the master
creates it and prints the minion config). The minion returner refuses SQLite and any role that
may do more (a superuser, the master's own role, a role that may read or change any other
table), with an error naming what is wrong. What a minion writes this way is stored as a
return and nothing else: it never feeds a node's inventory, facts, drift, pending states or
``last_seen`` (only the master's job cache, whose minion id Salt authenticated, does), and the
minion never runs schema migrations.

:depends: SQLAlchemy 2, psycopg 3 (PostgreSQL) and msgpack, installed with saltext-fleet.

How it writes: the secrets of every record are masked first
(:mod:`saltext_fleet.core.redact`), then it is appended to a durable spool under
``<cachedir>/fleet/spool`` and then written in batches, one transaction per batch, by a
flusher thread of the same process. When the database is down or slow, records wait in the
spool and are replayed in order, exactly once, when it is back. A record the database
rejects (NUL bytes in JSON on PostgreSQL, over-sized values, odd shapes) is stored as a
``quarantine`` row with the error, and the rest of its batch is stored.
``salt-run fleet.store_status`` shows the backend, schema revision, spool depth and age,
and the quarantine count.

Schema (see ``saltext_fleet/store/models.py``; Alembic migrations, upgraded on first use):
``jobs`` (jid, fun, tgt, user, the publish load, minions, endtime), ``returns`` (one row
per return, JSONB on PostgreSQL), ``events``, ``nodes``, ``inventory_snapshots`` (content
addressed by digest), ``node_inventory`` (when each node's inventory changed) and
``quarantine``.

Returns of ``fleet.inventory`` update the node and its inventory snapshot and fire
``fleet/inventory/changed`` (``{"id", "digest", "previous"}``) on the master's event bus
when the digest changed. Returns of ``state.apply``/``state.highstate``/``state.sls``
record what the node still has to do (highstate compliance, a drift signal): a ``test=True``
run the changes it would make, a real run the states that failed. They fire
``fleet/states/ran`` (``{"id", "pending_states", "test"}``).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import threading
import time
import uuid

import salt.utils.event
import salt.utils.jid
import salt.utils.job

from saltext_fleet import config
from saltext_fleet.core import carriers
from saltext_fleet.master import eventsig
from saltext_fleet.master import keys as master_keys
from saltext_fleet.store import engine as store_engine
from saltext_fleet.store import minion as minion_store
from saltext_fleet.store import queries
from saltext_fleet.store import writer as store_writer
from saltext_fleet.store.batch import is_connection_error, jsonable, redact_record, write_batch

log = logging.getLogger(__name__)

__virtualname__ = "fleet"

INVENTORY_CHANGED_TAG = store_writer.INVENTORY_CHANGED_TAG
#: How long a minion-side returner waits for its record to reach the database.
MINION_FLUSH_SECONDS = 5.0


def __virtual__():
    try:
        _cfg()
    except config.FleetConfigError as exc:
        return False, f"the fleet returner cannot load: {exc}"
    return __virtualname__


# -- plumbing -------------------------------------------------------------------------------


def _cfg() -> config.FleetConfig:
    """The ``fleet:`` options, parsed once per loader (:func:`saltext_fleet.config.cached`)."""
    return config.cached(__opts__, __context__)


def _engine():
    engine = store_engine.get_engine(_cfg().db_url)
    store_engine.ensure_schema(engine)
    return engine


def _spool_dir() -> str:
    return os.path.join(__opts__["cachedir"], "fleet", "spool")


def _on_master() -> bool:
    return __opts__.get("__role") == "master"


def _writer() -> store_writer.Writer:
    if not _on_master():
        return _minion_writer()
    return store_writer.get_writer(_cfg().db_url, _spool_dir(), _announce)


def _minion_writer() -> store_writer.Writer:
    """The minion side: a URL whose role may only append returns and events, else refused.

    The check (:func:`saltext_fleet.store.minion.verify_role`) runs here, before anything is
    spooled, so that Salt logs the refusal with the job; if the database cannot be reached
    now, the record is spooled and the writer checks before it writes.
    """
    db_url = _cfg().db_url
    refusal = minion_store.sqlite_refusal(db_url)
    if refusal:
        raise minion_store.MinionRoleError(refusal)  # before a SQLite file is ever made
    try:
        minion_store.verify_role(store_engine.get_engine(db_url))
    except minion_store.MinionRoleError:
        raise
    except Exception as exc:  # re-raised unless a connection error
        if not is_connection_error(exc):
            raise
        log.warning(
            "saltext-fleet: cannot check the minion role now (%s); the return is spooled",
            str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__,
        )
    return store_writer.get_writer(db_url, _spool_dir(), None, minion=True)


#: The event bus connection of each thread (the writer announces from one thread of its own):
#: connecting costs about ten times as much as firing an event.
_bus = threading.local()


class _BusConnection:
    """One thread's master event connection, closed when the thread (its owner) ends."""

    def __init__(self, event):
        self.event = event
        self.pid = os.getpid()

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.event.destroy()

    def __del__(self):
        self.close()


def _announce(tag: str, data: dict) -> None:
    """Fire ``tag`` (``fleet/inventory/changed``, ``fleet/states/ran``) on the master bus,
    signed by this master (the reactors act only on signed ones: minions can fire these tags
    too)."""
    data = _signed(tag, data)

    conn = getattr(_bus, "conn", None)
    if conn is not None and conn.pid == os.getpid():
        try:
            if conn.event.fire_event(data, tag):
                return
        except Exception:  # noqa: BLE001 - a stale connection: try a fresh one below
            pass
        conn.close()
    _bus.conn = None
    conn = _BusConnection(
        salt.utils.event.get_master_event(__opts__, __opts__["sock_dir"], listen=False)
    )
    if conn.event.fire_event(data, tag):
        _bus.conn = conn
        if getattr(_bus, "failing", False):
            _bus.failing = False
            log.warning("saltext-fleet: changes are announced on the event bus again")
        return
    conn.close()
    if not getattr(_bus, "failing", False):
        _bus.failing = True  # one warning per outage, not one per node
        log.warning(
            "saltext-fleet: could not announce %s of %r on the event bus "
            "(is the master's event publisher running?); further failures are not logged",
            tag,
            data.get("id"),
        )


def _signed(tag: str, data: dict) -> dict:
    try:
        return eventsig.sign(__opts__, tag, data)
    except (OSError, ValueError) as exc:
        log.error("saltext-fleet: cannot sign %s (%s); the reactors will ignore it", tag, exc)
        return data


# -- returner and event_return ----------------------------------------------------------------


def returner(ret):
    """
    Store one job return (spooled at once, written in the next batch).

    CLI Example:

    .. code-block:: bash

        salt '*' test.ping --return fleet
    """
    writer = _writer()
    record = {"kind": "return", "ret": ret}
    if _on_master():
        # which master's job cache stored it: this master's own id, not ret["master_id"]
        record["master_id"] = __opts__.get("id")
    writer.submit(record)
    if not _on_master():
        # A minion runs each job's returner in a short-lived process: write now (the record
        # stays spooled for the next job to replay if the database does not answer in time).
        writer.drain(MINION_FLUSH_SECONDS)


def event_return(events):
    """
    Store a batch of events from the master's event bus (``event_return: fleet``).
    """
    records = []
    master_id = __opts__.get("id")
    for event in events or []:
        if not isinstance(event, dict):
            records.append({"kind": "event", "tag": None, "data": event})
            continue
        records.append(
            {
                "kind": "event",
                "tag": event.get("tag"),
                "data": event.get("data"),
                "master_id": master_id,
            }
        )
    _writer().submit_many(records)


# -- job cache interface ----------------------------------------------------------------------


def prep_jid(nocache=False, passed_jid=None, recurse_count=0):
    """
    Return a job id (the one passed, or a new one). The job row is written by ``save_load``.
    """
    return passed_jid if passed_jid is not None else salt.utils.jid.gen_jid(__opts__)


def save_load(jid, load, minions=None):
    """
    Save a job's load. The publish load is kept: Salt calls this again with every return's
    load on a non-local job cache, and those only fill in a job this master never published.

    The publish load is written through at once (Salt's clients call ``get_load`` right after
    publishing to check the job exists) and also kept in a small local file, so ``get_load``
    answers while the database is away; when the database cannot be reached it is spooled
    like everything else.
    """
    publish = isinstance(load, dict) and "return" not in load
    record = redact_record(
        {
            "kind": "load",
            "jid": str(jid),
            "load": load,
            "publish": publish,
            "minions": list(minions) if minions else None,
        }
    )
    writer = _writer()
    if publish:
        _remember_load(jid, record["load"], minions)
        if writer.database_up():
            try:
                record["rid"] = uuid.uuid4().hex
                with _engine().begin() as conn:
                    write_batch(conn, [record])
                return
            except Exception as exc:  # spooled, never lost
                if not is_connection_error(exc):
                    log.exception(
                        "saltext-fleet: the load of %s could not be written; spooled", jid
                    )
    writer.submit(record)


def _loads_dir() -> str:
    return os.path.join(__opts__["cachedir"], "fleet", "loads")


def _load_file(jid) -> str:
    # A jid can be anything a client passes: hash it rather than trust it as a file name.
    name = hashlib.sha256(str(jid).encode("utf-8", "replace")).hexdigest()
    return os.path.join(_loads_dir(), name + ".json")


def _remember_load(jid, load, minions) -> None:
    """Keep the publish load locally (get_load's answer while the database is away): the
    load as the database keeps it, its secrets masked."""
    try:
        os.makedirs(_loads_dir(), mode=0o700, exist_ok=True)
        path = _load_file(jid)
        data = {"jid": str(jid), "load": jsonable(load), "minions": sorted(minions or [])}
        tmp = f"{path}.{os.getpid()}.tmp"
        with open(tmp, "w", encoding="utf-8") as fh:
            json.dump(data, fh)
        os.replace(tmp, path)
    except (OSError, TypeError, ValueError) as exc:
        log.warning("saltext-fleet: could not keep the load of %s locally: %s", jid, exc)


def _recall_load(jid) -> dict:
    try:
        with open(_load_file(jid), encoding="utf-8") as fh:
            data = json.load(fh)
    except (OSError, ValueError):
        return {}
    if (
        not isinstance(data, dict)
        or data.get("jid") != str(jid)
        or not isinstance(data.get("load"), dict)
    ):
        return {}
    load = dict(data["load"])
    if data.get("minions"):
        load["Minions"] = sorted(data["minions"])
    return load


def _forget_old_loads(keep_seconds: int) -> None:
    cutoff = time.time() - (keep_seconds or 86400)
    try:
        entries = list(os.scandir(_loads_dir()))
    except OSError:
        return
    for entry in entries:
        with contextlib.suppress(OSError):
            if entry.stat().st_mtime < cutoff:
                os.unlink(entry.path)


def save_minions(jid, minions, syndic_id=None):
    """
    Add the minions a job was sent to. With ``syndic_id`` (a master of masters: the id of the
    connection that announced them, which Salt authenticated), also record that this sender
    carries them for the job (``job_carriers``), except itself and the minions whose keys
    this master holds (it hears those itself; see :mod:`saltext_fleet.core.carriers`).
    """
    minions = list(minions) if isinstance(minions, (list, tuple, set)) else []
    record = {"kind": "minions", "jid": str(jid), "minions": minions}
    if syndic_id is not None:
        try:
            own = _own_minions()
            claims = carriers.claimed_minions(syndic_id, minions, own)
        except (carriers.CarrierClaimError, OSError) as exc:
            log.warning("saltext-fleet: carrier claim for job %s not recorded: %s", jid, exc)
        else:
            record.update(
                {"syndic_id": syndic_id, "master_id": __opts__.get("id"), "claims": claims}
            )
    _writer().submit(record)


def _own_minions() -> set[str]:
    """The ids whose keys this master has accepted (Salt's own key store): it hears them
    itself, so no sender carries them to it."""
    states = master_keys.salt_states(master_keys.salt_key(__opts__))
    return {minion for minion, state in states.items() if state == "accepted"}


def _flush():
    # Reads in this process see this process's own writes (a reader starts no writer).
    writer = store_writer.existing_writer(_cfg().db_url, _spool_dir())
    if writer is not None and writer.pending():
        writer.drain(5)


def get_load(jid):
    """
    Return the publish load of a job (with ``Minions``), or ``{}``.

    While the database is unreachable (or a moment before the load is committed), the load
    this master kept locally at publish time answers instead.
    """
    _flush()
    try:
        load = queries.get_load(_engine(), jid)
    except Exception as exc:  # re-raised unless a connection error
        if not is_connection_error(exc):
            raise
        log.warning(
            "saltext-fleet: get_load(%s) from the local copy, the database is unreachable", jid
        )
        load = {}
    return load or _recall_load(jid)


def get_jid(jid):
    """
    Return ``{minion: {"return": ...}}`` for a job.
    """
    _flush()
    return queries.get_jid(_engine(), jid)


def get_jids():
    """
    Return ``{jid: job summary}`` for every job in the cache.
    """
    _flush()
    ret = {}
    store_endtime = __opts__.get("job_cache_store_endtime")
    for jid, load in queries.iter_jobs(_engine()):
        ret[jid] = salt.utils.jid.format_jid_instance(jid, load)
        if store_endtime:
            endtime = queries.get_endtime(_engine(), jid)
            if endtime:
                ret[jid]["EndTime"] = endtime
    return ret


def get_jids_filter(count, filter_find_job=True):
    """
    Return the ``count`` most recent jobs, oldest first, optionally without find_job jobs.
    """
    _flush()
    jobs = []
    for jid, load in queries.iter_jobs(_engine(), newest_first=True):
        job = salt.utils.jid.format_jid_instance_ext(jid, load)
        if filter_find_job and job.get("Function") == "saltutil.find_job":
            continue
        jobs.append(job)
        if len(jobs) >= count:
            break
    return list(reversed(jobs))


def get_fun(fun):
    """
    Return ``{minion: jid}`` of the last job of each minion that ran ``fun``.
    """
    _flush()
    return queries.get_fun(_engine(), fun)


def get_minions():
    """
    Return the minions that have returned a job.
    """
    _flush()
    return queries.get_minions(_engine())


def clean_old_jobs():
    """
    Delete jobs, returns and events older than ``keep_jobs_seconds``.
    """
    keep_seconds = salt.utils.job.get_keep_jobs_seconds(__opts__)
    _forget_old_loads(keep_seconds)
    try:
        removed = queries.clean_old_jobs(_engine(), keep_seconds)
    except Exception as exc:  # re-raised unless a connection error
        # The master's maintenance loop calls this every loop_interval: an unreachable
        # database is a warning here (the writer reports it too), not a crash.
        if not is_connection_error(exc):
            raise
        log.warning(
            "saltext-fleet: old jobs not cleaned, the database is unreachable: %s",
            type(exc).__name__,
        )
        return
    if removed:
        log.info("saltext-fleet: removed %d old jobs", removed)


def update_endtime(jid, time):
    """
    Record when a job ended.
    """
    _writer().submit({"kind": "endtime", "jid": str(jid), "endtime": str(time)})


def get_endtime(jid):
    """
    Return when a job ended, or ``False``.
    """
    _flush()
    return queries.get_endtime(_engine(), jid)
