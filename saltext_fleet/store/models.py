"""The store's tables, as SQLAlchemy 2 typed models.

Every schema change is an Alembic revision under ``store/migrations/versions``; the app never
calls ``create_all`` outside tests. JSON columns are JSONB on PostgreSQL and JSON (text) on
SQLite. Timestamps are timezone-aware UTC.

Tables:

``nodes``                 one row per minion: first/last seen, facts, current inventory digest
``inventory_snapshots``   content-addressed inventories (the digest is the key): an unchanged
                          inventory writes nothing new
``node_inventory``        when each node's inventory digest changed (history)
``jobs``                  one row per jid: the publish load (insert-if-absent), minions, endtime
``returns``               one row per return; ``rid`` makes replays idempotent
``events``                one row per event (``event_return``); ``rid`` likewise
``quarantine``            records the database rejected, with the error, never lost silently
``baselines``             named desired states (normal form of :mod:`saltext_fleet.core.baseline`)
``baseline_assignments``  which baseline applies to which Salt target (highest priority wins)
``snapshot_keys``         each snapshot's packages as 64-bit keys (for fleet-wide drift)
``package_keys``          the dictionary of 64-bit package keys: key -> ecosystem, name, version
``drift_current``         each node's latest drift result
``drift_history``         every drift result over time; on PostgreSQL range-partitioned by month
``minion_keys``           every key the gate has seen: id, fingerprint, first/last seen, decision
``enrolments``            one-time enrolment tokens (hashed) for expected minion ids
``node_groups``           groups of nodes: SSH user/port, encrypted credential, onboarding states
``secrets``               encrypted group and node secrets (Fernet tokens, never plaintext)
``bootstraps``            SSH bootstraps: one row per attempt, its steps and outcome
``audit_events``          the audit chain: each event's SHA-256 covers the previous event's
``audit_head``            the chain's last hash (one row), so appends are serialised
``advisories``            imported OSV advisories: id, modified, withdrawn, summary, severity, the
                          parsed record
``advisory_packages``     which (OSV ecosystem, package name) each advisory names
``vuln_imports``          each advisory import: source, counts per ecosystem, rejected files
``vuln_findings``         one row per (node, package, advisory) exposure: first seen, resolved
``vuln_history``          each node's open findings over time, by severity (the node's chart)
``vuln_triage``           operators' decisions on findings: scope, state, justification, expiry
``vuln_keys``             (schema 0009) the dictionary of match keys: inventory ecosystem, package,
                          version -> the OSV ecosystem, name and version they are matched as
``vuln_snapshot_index``   each inventory snapshot's match keys (packed) and uncovered ecosystems
``vuln_key_hits``         the cached verdict (advisory ids, fixed versions) of every match key
                          whose name some advisory names
``vuln_node_state``       each node's last findings recompute: fingerprint, not-covered ecosystems
``vuln_match_state``      one row: up to when the advisories' changes are reflected in the verdicts
``kvm_devices``           (schema 0010) PiKVM devices: address and client options (credentials in
                          ``secrets``, scope ``kvm``), the node each controls, poll status
``kvm_polls``             every poll of every device: online, power LED, HID, MSD, temperature,
                          uptime (the device's history chart)
``kvm_isos``              (schema 0011) the master's ISO library: name, SHA-256, size, source
``kvm_action_slots``      per device, the power rate limit (next allowed time) and the ISO action
                          running (who, image, progress, when its hold lapses)
``alerts``                (schema 0012) every accepted ``fleet/alert/*`` event, stored before it is
                          sent: kind, node, subject, state, condition, severity, summary, data
``alert_conditions``      per (kind, node, subject): current condition, recent changes (flapping),
                          last sends per route (duplicate window), acknowledgement
``alert_routes``          routes made by admins in the UI (the config's routes are in the config)
``alert_deliveries``      one row per (alert, route): status, attempts, next retry, the claim
``alert_attempts``        every delivery attempt: ok, HTTP status, latency, error, master
``cert_alerts``           which expiry thresholds of which node's signing certificate fired
``claims``                (schema 0013) reactor work one master took for the fleet: a node's
                          onboarding for one start, the presence check of a period, an alert's
                          crossing, an inventory hint, a certificate check, a KVM poll cycle
``presence_views``        (schema 0016) per (node, master): whether that master sees the node
                          connected, since when it said so
``presence_masters``      (schema 0016) when each master last reported its presence view
``job_carriers``          (schema 0017) which syndic announced which of its minions for a job
                          (the syndic's authenticated id): who carried a return to a master of
                          masters, and which syndic serves each node
``ui_users``              the web UI's users: bcrypt hash, role, TOTP on/off (its secret is in
                          ``secrets``), recovery code and API token hashes, session version
``ui_ended_sessions``     (schema 0014) web UI sessions ended by a logout, until their cookies
                          expire
``ui_login_limits``       (schema 0015) failed logins per user and client address, lockouts of
                          client addresses, the login rate per address: for every master
                          (0015 also adds ``nodes.meta_at``: when operators last edited a node)
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Computed,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
    UniqueConstraint,
    false,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.sql.expression import ColumnElement

#: JSON column type: JSONB on PostgreSQL (indexable, compact), JSON text elsewhere.
JSONType = JSON().with_variant(JSONB(), "postgresql")

#: Integer primary keys: BIGINT on PostgreSQL (returns and events outgrow 2^31), INTEGER on
#: SQLite (only INTEGER PRIMARY KEY is SQLite's auto-incrementing rowid).
BigIntPK = BigInteger().with_variant(Integer(), "sqlite")

MINION_ID_LEN = 255
JID_LEN = 64
RID_LEN = 64
DIGEST_LEN = 64
GROUP_NAME_LEN = 64
FINGERPRINT_LEN = 128


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


def iso(at: dt.datetime | None) -> str | None:
    """A stored time as ISO 8601 text, in UTC (SQLite gives naive datetimes back)."""
    if at is None:
        return None
    if at.tzinfo is None:
        at = at.replace(tzinfo=dt.timezone.utc)
    return at.isoformat()


class Base(DeclarativeBase):
    type_annotation_map = {dict[str, Any]: JSONType, Any: JSONType}


#: ``nodes.os_name`` (schema 0018): the ``os`` fact as text, at most this long. A generated
#: column, so every writer of ``facts`` keeps it right; indexed, so the overview filters, sorts
#: and lists operating systems without decoding 100,000 JSON documents.
OS_NAME_LEN = 128
OS_NAME_SQL = {
    "postgresql": f"left(facts ->> 'os', {OS_NAME_LEN})",
    "sqlite": f"substr(json_extract(facts, '$.os'), 1, {OS_NAME_LEN})",
}


class _OsNameOfFacts(ColumnElement):
    """The expression of the generated ``nodes.os_name``, in each dialect's JSON syntax."""

    inherit_cache = True
    type = String()


@compiles(_OsNameOfFacts)
def _os_name_sqlite(element, compiler, **kw):
    return OS_NAME_SQL["sqlite"]


@compiles(_OsNameOfFacts, "postgresql")
def _os_name_postgresql(element, compiler, **kw):
    return OS_NAME_SQL["postgresql"]


class Node(Base):
    __tablename__ = "nodes"

    minion_id: Mapped[str] = mapped_column(String(MINION_ID_LEN), primary_key=True)
    first_seen: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    last_seen: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    facts: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)
    grains: Mapped[dict[str, Any] | None] = mapped_column(JSONType, nullable=True)
    inventory_digest: Mapped[str | None] = mapped_column(
        String(DIGEST_LEN), ForeignKey("inventory_snapshots.digest"), nullable=True
    )
    inventory_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))
    #: Changes the node's latest ``state.apply test=True`` would make (None: no run known).
    pending_states: Mapped[int | None] = mapped_column(Integer, nullable=True)
    pending_states_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))
    #: online, offline (from presence and onboarding); None until known
    status: Mapped[str | None] = mapped_column(String(16))
    status_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))
    #: when ``status`` last changed, and why (e.g. "missed 2 presence checks")
    status_since: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))
    status_reason: Mapped[str | None] = mapped_column(String(255))
    #: presence checks missed in a row (a node goes offline after more than one)
    presence_misses: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    #: the ``fleet_pkgset`` beacon as onboarding last found it in ``beacons.list``: its
    #: interval in seconds, 0 when it is not running, None when never checked
    beacon_interval: Mapped[int | None] = mapped_column(Integer, nullable=True)
    beacon_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))
    node_group: Mapped[str | None] = mapped_column(String(GROUP_NAME_LEN))
    onboarded_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))
    #: what operators say about the node in the UI: how much it matters (low, normal, high,
    #: critical), whether it was audited, a free comment
    criticality: Mapped[str] = mapped_column(String(16), default="normal", server_default="normal")
    audited: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    comment: Mapped[str] = mapped_column(Text, default="", server_default="")
    #: (schema 0015) when an operator last changed criticality, audited or comment: every
    #: master's live hub finds the change by it
    meta_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))
    #: (schema 0017) the id of the master whose job cache stored the node's latest return
    #: (the master's own ``id``, never a field of the return)
    heard_by: Mapped[str | None] = mapped_column(String(MINION_ID_LEN))
    #: (schema 0018) the ``os`` fact, generated from ``facts`` (never written)
    os_name: Mapped[str | None] = mapped_column(
        String(OS_NAME_LEN), Computed(_OsNameOfFacts(), persisted=True)
    )

    __table_args__ = (
        Index("ix_nodes_last_seen", "last_seen"),
        Index("ix_nodes_status", "status", "minion_id"),
        Index("ix_nodes_os_name", "os_name", "minion_id"),
    )


class InventorySnapshot(Base):
    __tablename__ = "inventory_snapshots"

    digest: Mapped[str] = mapped_column(String(DIGEST_LEN), primary_key=True)
    packages: Mapped[dict[str, Any]] = mapped_column(JSONType)
    sources: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)
    facts: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)
    package_count: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class NodeInventory(Base):
    __tablename__ = "node_inventory"

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True, autoincrement=True)
    minion_id: Mapped[str] = mapped_column(String(MINION_ID_LEN))
    digest: Mapped[str] = mapped_column(
        String(DIGEST_LEN), ForeignKey("inventory_snapshots.digest")
    )
    previous_digest: Mapped[str | None] = mapped_column(String(DIGEST_LEN))
    seen_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=utcnow)

    __table_args__ = (Index("ix_node_inventory_minion_seen", "minion_id", "seen_at"),)


class Job(Base):
    __tablename__ = "jobs"

    jid: Mapped[str] = mapped_column(String(JID_LEN), primary_key=True)
    fun: Mapped[str | None] = mapped_column(String(255))
    tgt: Mapped[str | None] = mapped_column(Text)
    tgt_type: Mapped[str | None] = mapped_column(String(32))
    user: Mapped[str | None] = mapped_column(String(255))
    load: Mapped[dict[str, Any] | None] = mapped_column(JSONType, nullable=True)
    #: True when ``load`` is the publish load. Salt calls ``save_load`` with each return's
    #: load too; those only fill a job nobody published through this master, and a later
    #: publish load replaces them (never the other way round).
    publish: Mapped[bool] = mapped_column(Boolean, default=False)
    minions: Mapped[list[str] | None] = mapped_column(JSONType, nullable=True)
    started_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    endtime: Mapped[str | None] = mapped_column(String(64))

    __table_args__ = (
        Index("ix_jobs_started_at", "started_at"),
        Index("ix_jobs_fun", "fun"),
    )


class Return(Base):
    __tablename__ = "returns"

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True, autoincrement=True)
    rid: Mapped[str] = mapped_column(String(RID_LEN), unique=True)
    jid: Mapped[str] = mapped_column(String(JID_LEN))
    minion_id: Mapped[str] = mapped_column(String(MINION_ID_LEN))
    fun: Mapped[str | None] = mapped_column(String(255))
    success: Mapped[bool | None] = mapped_column(Boolean)
    retcode: Mapped[int | None] = mapped_column(Integer)
    ret: Mapped[Any] = mapped_column("return", JSONType, nullable=True)
    full_ret: Mapped[dict[str, Any] | None] = mapped_column(JSONType, nullable=True)
    stored_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    #: True when the master stored it from its job cache, where Salt authenticated the minion
    #: id; False for a return a minion wrote itself (``--return fleet`` with a minion role,
    #: which may not write this column): a claim, shown as one and never trusted.
    #: (no Python-side default: an INSERT that does not name it must not either)
    authenticated: Mapped[bool] = mapped_column(Boolean, nullable=False, server_default=false())
    #: (schema 0017) the id of the master whose job cache stored it (the first one, when the
    #: masters of a fleet share the store): the master's own ``id``, never the return's
    #: ``master_id`` field (a minion writes that). Which syndic carried it is in
    #: ``job_carriers``.
    master_id: Mapped[str | None] = mapped_column(String(MINION_ID_LEN))

    __table_args__ = (
        Index("ix_returns_jid_minion", "jid", "minion_id"),
        Index("ix_returns_minion_stored", "minion_id", "stored_at"),
        Index("ix_returns_fun_stored", "fun", "stored_at"),
    )


class Event(Base):
    __tablename__ = "events"

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True, autoincrement=True)
    rid: Mapped[str] = mapped_column(String(RID_LEN), unique=True)
    tag: Mapped[str] = mapped_column(Text)
    data: Mapped[Any] = mapped_column(JSONType, nullable=True)
    master_id: Mapped[str | None] = mapped_column(String(MINION_ID_LEN))
    stored_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=utcnow)

    __table_args__ = (
        Index("ix_events_stored", "stored_at"),
        Index("ix_events_tag", "tag"),
    )


class Quarantine(Base):
    __tablename__ = "quarantine"

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True, autoincrement=True)
    #: The record's id; for a record without a usable one, ``sha224:<hex>`` of its kind and
    #: payload (a corrupt spool frame's payload holds where it was in the spool). Unique: a
    #: record replayed after a crash is not quarantined twice.
    rid: Mapped[str | None] = mapped_column(String(RID_LEN))
    kind: Mapped[str] = mapped_column(String(32))
    error: Mapped[str] = mapped_column(Text)
    #: The record as escaped JSON text (NUL and invalid characters escaped), cut at a limit.
    payload: Mapped[str] = mapped_column(Text)
    payload_bytes: Mapped[int] = mapped_column(BigInteger)
    stored_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=utcnow)

    __table_args__ = (
        Index("ix_quarantine_stored", "stored_at"),
        Index("uq_quarantine_rid", "rid", unique=True),
    )


BASELINE_NAME_LEN = 128


class Baseline(Base):
    __tablename__ = "baselines"

    name: Mapped[str] = mapped_column(String(BASELINE_NAME_LEN), primary_key=True)
    description: Mapped[str] = mapped_column(Text, default="")
    spec: Mapped[dict[str, Any]] = mapped_column(JSONType)
    revision: Mapped[str] = mapped_column(String(DIGEST_LEN))
    #: Where it came from: ``pin:<minion>``, ``yaml:<file>``, ``config``, ``pillar:<minion>``,
    #: ``runner`` (edited with ``fleet.baseline_set``).
    source: Mapped[str] = mapped_column(Text, default="")
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    updated_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class BaselineAssignment(Base):
    __tablename__ = "baseline_assignments"

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True, autoincrement=True)
    baseline: Mapped[str] = mapped_column(
        String(BASELINE_NAME_LEN), ForeignKey("baselines.name", ondelete="CASCADE")
    )
    target: Mapped[str] = mapped_column(Text)
    tgt_type: Mapped[str] = mapped_column(String(32), default="glob")
    priority: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=utcnow)

    __table_args__ = (UniqueConstraint("baseline", "target", "tgt_type"),)


class SnapshotKeys(Base):
    """A snapshot's packages as 64-bit keys per ecosystem (:func:`~saltext_fleet.core.drift.
    pack_keys`), written the first time drift needs them. A table of its own, so reading
    every snapshot's keys never touches the big ``packages`` documents."""

    __tablename__ = "snapshot_keys"

    digest: Mapped[str] = mapped_column(
        String(DIGEST_LEN), ForeignKey("inventory_snapshots.digest"), primary_key=True
    )
    keys: Mapped[bytes] = mapped_column(LargeBinary)


class PackageKey(Base):
    __tablename__ = "package_keys"

    key: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    ecosystem: Mapped[str] = mapped_column(Text)
    name: Mapped[str] = mapped_column(Text)
    version: Mapped[str] = mapped_column(Text)

    __table_args__ = (Index("ix_package_keys_name", "ecosystem", "name"),)


class DriftCurrent(Base):
    __tablename__ = "drift_current"

    minion_id: Mapped[str] = mapped_column(String(MINION_ID_LEN), primary_key=True)
    baseline: Mapped[str | None] = mapped_column(String(BASELINE_NAME_LEN))
    score: Mapped[float] = mapped_column(Float)
    missing: Mapped[int] = mapped_column(Integer, default=0)
    extra: Mapped[int] = mapped_column(Integer, default=0)
    changed: Mapped[int] = mapped_column(Integer, default=0)
    facts: Mapped[int] = mapped_column(Integer, default=0)
    pending_states: Mapped[int | None] = mapped_column(Integer, nullable=True)
    inventory_digest: Mapped[str | None] = mapped_column(String(DIGEST_LEN))
    baseline_revision: Mapped[str | None] = mapped_column(String(DIGEST_LEN))
    #: digest of the weights the score was computed with
    weights: Mapped[str | None] = mapped_column(String(DIGEST_LEN))
    #: the part of the score that comes from packages (facts and pending states excluded):
    #: a node whose inventory, baseline and weights are unchanged keeps it
    package_score: Mapped[float | None] = mapped_column(Float)
    computed_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=utcnow)

    __table_args__ = (Index("ix_drift_current_score", "score"),)


class DriftHistory(Base):
    """One point of a node's drift over time.

    On PostgreSQL the table is range-partitioned by ``computed_at`` (one partition a month,
    created on demand; ``fleet:drift:history_days`` drops whole partitions). The primary key
    holds the partition key, as PostgreSQL requires, and serves per-node time-range queries.
    """

    __tablename__ = "drift_history"

    minion_id: Mapped[str] = mapped_column(String(MINION_ID_LEN), primary_key=True)
    computed_at: Mapped[dt.datetime] = mapped_column(
        DateTime(timezone=True), primary_key=True, default=utcnow
    )
    baseline: Mapped[str | None] = mapped_column(String(BASELINE_NAME_LEN))
    score: Mapped[float] = mapped_column(Float)
    missing: Mapped[int] = mapped_column(Integer, default=0)
    extra: Mapped[int] = mapped_column(Integer, default=0)
    changed: Mapped[int] = mapped_column(Integer, default=0)
    facts: Mapped[int] = mapped_column(Integer, default=0)
    pending_states: Mapped[int | None] = mapped_column(Integer, nullable=True)
    #: What caused the point: ``inventory`` (the reactor), ``runner``, ``state``.
    trigger: Mapped[str] = mapped_column(String(32), default="runner")

    __table_args__ = (Index("ix_drift_history_at", "computed_at"),)


class MinionKey(Base):
    """A minion key the gate has seen (``salt/auth``), one row per id and key fingerprint.

    ``state`` follows Salt's: pending, accepted, rejected, denied, deleted. The key itself
    stays in Salt's pki directories; ``pub`` is kept so an operator can compare it.
    """

    __tablename__ = "minion_keys"

    minion_id: Mapped[str] = mapped_column(String(MINION_ID_LEN), primary_key=True)
    fingerprint: Mapped[str] = mapped_column(String(FINGERPRINT_LEN), primary_key=True)
    pub: Mapped[str] = mapped_column(Text, default="")
    state: Mapped[str] = mapped_column(String(16), default="pending")
    first_seen: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    last_seen: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    attempts: Mapped[int] = mapped_column(Integer, default=1)
    #: who decided (``operator:<name>``, ``enrolment:<id>``, ``reactor``) and when
    decided_by: Mapped[str | None] = mapped_column(String(128))
    decided_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))
    #: why the gate did not accept it on its own (no enrolment, token expired, ...)
    note: Mapped[str | None] = mapped_column(Text)

    __table_args__ = (Index("ix_minion_keys_state", "state", "last_seen"),)


class Enrolment(Base):
    """A one-time enrolment of an expected minion id: only the token's SHA-256 is kept."""

    __tablename__ = "enrolments"

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True, autoincrement=True)
    minion_id: Mapped[str] = mapped_column(String(MINION_ID_LEN))
    token_hash: Mapped[str] = mapped_column(String(DIGEST_LEN), unique=True)
    #: an expected key fingerprint instead of (or as well as) the token
    fingerprint: Mapped[str | None] = mapped_column(String(FINGERPRINT_LEN))
    node_group: Mapped[str | None] = mapped_column(String(GROUP_NAME_LEN))
    #: live, used, expired, revoked
    state: Mapped[str] = mapped_column(String(16), default="live")
    created_by: Mapped[str] = mapped_column(String(128), default="")
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    expires_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True))
    used_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))
    used_fingerprint: Mapped[str | None] = mapped_column(String(FINGERPRINT_LEN))

    __table_args__ = (Index("ix_enrolments_minion", "minion_id", "state"),)


class NodeGroup(Base):
    """A group of nodes: how to reach them over SSH and what to apply when they start."""

    __tablename__ = "node_groups"

    name: Mapped[str] = mapped_column(String(GROUP_NAME_LEN), primary_key=True)
    description: Mapped[str] = mapped_column(Text, default="")
    ssh_user: Mapped[str] = mapped_column(String(64), default="root")
    ssh_port: Mapped[int] = mapped_column(Integer, default=22)
    #: password or private_key (the credential itself is a Fernet token in ``secrets``)
    credential_kind: Mapped[str | None] = mapped_column(String(16))
    #: SLS names applied to a node of this group when it starts
    states: Mapped[list[str]] = mapped_column(JSONType, default=list)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    updated_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class Secret(Base):
    """An encrypted secret of a group or a node (``scope`` group/node, ``owner`` its name)."""

    __tablename__ = "secrets"

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True, autoincrement=True)
    scope: Mapped[str] = mapped_column(String(16))
    owner: Mapped[str] = mapped_column(String(MINION_ID_LEN))
    name: Mapped[str] = mapped_column(String(128))
    #: a Fernet token; never plaintext
    value: Mapped[str] = mapped_column(Text)
    #: fingerprint of the vault key that encrypted it (not the key)
    key_id: Mapped[str] = mapped_column(String(32))
    updated_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=utcnow)

    __table_args__ = (UniqueConstraint("scope", "owner", "name"),)


class Bootstrap(Base):
    """One SSH bootstrap of a node: its steps as they happen, and how it ended."""

    __tablename__ = "bootstraps"

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True, autoincrement=True)
    minion_id: Mapped[str] = mapped_column(String(MINION_ID_LEN))
    host: Mapped[str] = mapped_column(String(255))
    port: Mapped[int] = mapped_column(Integer, default=22)
    ssh_user: Mapped[str] = mapped_column(String(64))
    node_group: Mapped[str | None] = mapped_column(String(GROUP_NAME_LEN))
    #: running, done, failed
    state: Mapped[str] = mapped_column(String(16), default="running")
    step: Mapped[str] = mapped_column(String(64), default="start")
    steps: Mapped[list[Any]] = mapped_column(JSONType, default=list)
    error: Mapped[str | None] = mapped_column(Text)
    #: set while running: one running bootstrap per minion id (a unique index)
    running_id: Mapped[str | None] = mapped_column(String(MINION_ID_LEN), unique=True)
    started_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    finished_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))

    __table_args__ = (Index("ix_bootstraps_minion", "minion_id", "started_at"),)


class AuditEvent(Base):
    """One event of the audit chain (see :mod:`saltext_fleet.core.audit`)."""

    __tablename__ = "audit_events"

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True, autoincrement=False)
    at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True))
    actor: Mapped[str] = mapped_column(String(128))
    action: Mapped[str] = mapped_column(String(64))
    target: Mapped[str] = mapped_column(String(255))
    details: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)
    prev_hash: Mapped[str] = mapped_column(String(DIGEST_LEN))
    hash: Mapped[str] = mapped_column(String(DIGEST_LEN))

    __table_args__ = (Index("ix_audit_events_target", "target", "id"),)


class AuditHead(Base):
    """The audit chain's head: one row, updated by every append, so that two appends (from
    two master processes) never build on the same previous event."""

    __tablename__ = "audit_head"

    one: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    last_id: Mapped[int] = mapped_column(BigInteger, default=0)
    last_hash: Mapped[str] = mapped_column(String(DIGEST_LEN))


class UiUser(Base):
    """A user of the web UI (see :mod:`saltext_fleet.store.users`): only hashes are kept."""

    __tablename__ = "ui_users"

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True, autoincrement=True)
    username: Mapped[str] = mapped_column(String(64), unique=True)
    #: bcrypt-sha256 hash; None for a user whose password Salt's eauth checks
    password_hash: Mapped[str | None] = mapped_column(String(255))
    role: Mapped[str] = mapped_column(String(16))
    #: local or eauth
    source: Mapped[str] = mapped_column(String(16), default="local")
    totp_enabled: Mapped[bool] = mapped_column(Boolean, default=False)
    #: the time step of the last accepted code: a code is never accepted twice
    totp_last_counter: Mapped[int | None] = mapped_column(BigInteger)
    #: SHA-256 hashes of the unused recovery codes
    recovery_codes: Mapped[list[str]] = mapped_column(JSONType, default=list)
    api_token_hash: Mapped[str | None] = mapped_column(String(64), unique=True)
    #: part of every session: bumping it ends all of the user's sessions
    session_version: Mapped[int] = mapped_column(Integer, default=1)
    disabled: Mapped[bool] = mapped_column(Boolean, default=False)
    locked_until: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    last_login_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))


# -- vulnerabilities (schema 0008) -------------------------------------------------------------

ADVISORY_ID_LEN = 128
ECOSYSTEM_LEN = 64


class Advisory(Base):
    """One OSV advisory as imported. ``record`` is the parsed record in OSV's own JSON shape
    (what :func:`saltext_fleet.core.vulns.osv.parse` reads back); the other columns are what
    pages and filters need without parsing it. A withdrawn advisory is kept and never
    matches."""

    __tablename__ = "advisories"

    id: Mapped[str] = mapped_column(String(ADVISORY_ID_LEN), primary_key=True)
    modified: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True))
    published: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))
    withdrawn: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))
    summary: Mapped[str] = mapped_column(Text, default="", server_default="")
    aliases: Mapped[list[Any]] = mapped_column(JSONType, default=list)
    #: the highest CVSS base score of the record's vectors (None: no CVSS vector)
    cvss_score: Mapped[float | None] = mapped_column(Float)
    #: critical, high, medium, low, none (from ``cvss_score``) or unknown
    severity: Mapped[str] = mapped_column(String(16), default="unknown", server_default="unknown")
    record: Mapped[dict[str, Any]] = mapped_column(JSONType)
    #: the file (or archive member) it was last imported from
    source: Mapped[str | None] = mapped_column(Text)
    imported_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=utcnow)

    __table_args__ = (
        Index("ix_advisories_severity", "severity"),
        Index("ix_advisories_imported_at", "imported_at"),
    )


class AdvisoryPackage(Base):
    """(OSV ecosystem, package name) pairs an advisory names, for matching by name. Names
    are as :func:`saltext_fleet.core.vulns.osv.package_name` normalises them (PEP 503 for
    PyPI)."""

    __tablename__ = "advisory_packages"

    advisory_id: Mapped[str] = mapped_column(
        String(ADVISORY_ID_LEN), ForeignKey("advisories.id", ondelete="CASCADE"), primary_key=True
    )
    ecosystem: Mapped[str] = mapped_column(String(ECOSYSTEM_LEN), primary_key=True)
    name: Mapped[str] = mapped_column(Text, primary_key=True)

    __table_args__ = (Index("ix_advisory_packages_name", "ecosystem", "name"),)


class VulnImport(Base):
    """One ``fleet.cve_import`` run: what it read, counts per ecosystem (added, replaced,
    unchanged, withdrawn), and the files it rejected with their errors."""

    __tablename__ = "vuln_imports"

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True, autoincrement=True)
    source: Mapped[str] = mapped_column(Text)
    started_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    finished_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))
    counts: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)
    rejected: Mapped[list[Any]] = mapped_column(JSONType, default=list)
    actor: Mapped[str | None] = mapped_column(String(255))


class VulnFinding(Base):
    """A node's exposure to one advisory through one package. Open while ``resolved_at`` is
    None (one open row per node, ecosystem, package and advisory); when the package is
    upgraded past the fix, removed, or the advisory is withdrawn, ``resolved_at`` says when,
    and a later exposure opens a new row: each node's exposure has a history."""

    __tablename__ = "vuln_findings"

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True, autoincrement=True)
    minion_id: Mapped[str] = mapped_column(String(MINION_ID_LEN))
    #: the inventory's ecosystem and package name (a binary package for deb/rpm)
    ecosystem: Mapped[str] = mapped_column(String(ECOSYSTEM_LEN))
    package: Mapped[str] = mapped_column(Text)
    version: Mapped[str] = mapped_column(Text)
    advisory_id: Mapped[str] = mapped_column(String(ADVISORY_ID_LEN))
    #: the first fixed version after the installed one, when the advisory names one
    fixed: Mapped[str | None] = mapped_column(Text)
    severity: Mapped[str] = mapped_column(String(16), default="unknown", server_default="unknown")
    cvss_score: Mapped[float | None] = mapped_column(Float)
    first_seen: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    last_seen: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    resolved_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))

    __table_args__ = (
        Index(
            "ux_vuln_findings_open",
            "minion_id",
            "ecosystem",
            "package",
            "advisory_id",
            unique=True,
            postgresql_where=text("resolved_at IS NULL"),
            sqlite_where=text("resolved_at IS NULL"),
        ),
        Index("ix_vuln_findings_advisory", "advisory_id", "resolved_at"),
        Index("ix_vuln_findings_node", "minion_id", "resolved_at"),
    )


class VulnHistory(Base):
    """A node's open findings at one time, by severity, untriaged only (the node's chart)."""

    __tablename__ = "vuln_history"

    minion_id: Mapped[str] = mapped_column(String(MINION_ID_LEN), primary_key=True)
    computed_at: Mapped[dt.datetime] = mapped_column(
        DateTime(timezone=True), primary_key=True, default=utcnow
    )
    open: Mapped[int] = mapped_column(Integer, default=0)
    critical: Mapped[int] = mapped_column(Integer, default=0)
    high: Mapped[int] = mapped_column(Integer, default=0)
    medium: Mapped[int] = mapped_column(Integer, default=0)
    low: Mapped[int] = mapped_column(Integer, default=0)
    unknown: Mapped[int] = mapped_column(Integer, default=0)
    triaged: Mapped[int] = mapped_column(Integer, default=0)


class VulnTriage(Base):
    """An operator's decision on an advisory for one node, a node group or the whole fleet
    (``scope`` node | group | fleet, ``target`` the minion id or group name, None for the
    fleet), optionally for one package only. ``state``: ``not_affected`` (with a CycloneDX
    ``justification``), ``accepted`` (with ``expires_at``) or ``will_fix``. A decision ends
    when it expires or is revoked; the rows stay (the audit chain has each change too)."""

    __tablename__ = "vuln_triage"

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True, autoincrement=True)
    advisory_id: Mapped[str] = mapped_column(String(ADVISORY_ID_LEN))
    scope: Mapped[str] = mapped_column(String(16))
    target: Mapped[str | None] = mapped_column(String(MINION_ID_LEN))
    package: Mapped[str | None] = mapped_column(Text)
    state: Mapped[str] = mapped_column(String(32))
    justification: Mapped[str | None] = mapped_column(String(64))
    detail: Mapped[str] = mapped_column(Text, default="", server_default="")
    expires_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))
    decided_by: Mapped[str] = mapped_column(String(255))
    decided_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    revoked_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))
    revoked_by: Mapped[str | None] = mapped_column(String(255))

    __table_args__ = (Index("ix_vuln_triage_advisory", "advisory_id", "scope", "target"),)


# -- vulnerability matching state (schema 0009) -------------------------------------------------


class VulnKey(Base):
    """A match key: one installed package version (inventory ``ecosystem``, ``package``,
    ``version``) as it is matched (``osv_ecosystem``, ``name``, ``osv_version``: for deb and
    apk the source package, from the inventory's ``sources``). See
    :mod:`saltext_fleet.store.vulns.findings`."""

    __tablename__ = "vuln_keys"

    key: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    ecosystem: Mapped[str] = mapped_column(String(ECOSYSTEM_LEN))
    package: Mapped[str] = mapped_column(Text)
    version: Mapped[str] = mapped_column(Text)
    osv_ecosystem: Mapped[str] = mapped_column(String(ECOSYSTEM_LEN))
    name: Mapped[str] = mapped_column(Text)
    osv_version: Mapped[str] = mapped_column(Text)

    __table_args__ = (Index("ix_vuln_keys_name", "osv_ecosystem", "name"),)


class VulnSnapshotIndex(Base):
    """A snapshot's match keys (sorted signed 64-bit, little endian) and the inventory
    ecosystems of it OSV does not cover (``{ecosystem: packages}``)."""

    __tablename__ = "vuln_snapshot_index"

    digest: Mapped[str] = mapped_column(
        String(DIGEST_LEN),
        ForeignKey("inventory_snapshots.digest", ondelete="CASCADE"),
        primary_key=True,
    )
    keys: Mapped[bytes] = mapped_column(LargeBinary)
    not_covered: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)


class VulnKeyHits(Base):
    """The verdict for one match key whose name an advisory names: ``hits`` is
    ``[[advisory_id, fixed or None], ...]`` (empty: not affected)."""

    __tablename__ = "vuln_key_hits"

    key: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    hits: Mapped[list[Any]] = mapped_column(JSONType, default=list)
    matched_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class VulnNodeState(Base):
    """A node's last findings recompute: the snapshot, a fingerprint of its verdicts (a node
    whose fingerprint is unchanged is not rewritten), its not-covered ecosystems and counts."""

    __tablename__ = "vuln_node_state"

    minion_id: Mapped[str] = mapped_column(String(MINION_ID_LEN), primary_key=True)
    inventory_digest: Mapped[str | None] = mapped_column(String(DIGEST_LEN))
    fingerprint: Mapped[int | None] = mapped_column(BigInteger)
    computed_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    not_covered: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)
    counts: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)


class VulnMatchState(Base):
    """One row (id 1): the ``imported_at`` up to which advisory changes are in the verdicts."""

    __tablename__ = "vuln_match_state"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    advisories_seen_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))


# -- KVM devices (schema 0010) ------------------------------------------------------------------


class KvmDevice(Base):
    """A PiKVM device: how to reach it (``options``: what
    :func:`saltext_fleet.kvm.options.load_options` takes, without the password and TOTP
    secret, which are in ``secrets`` under scope ``kvm``), the node it controls, and its
    status after the last poll (:class:`saltext_fleet.kvm.health.Status` and poll)."""

    __tablename__ = "kvm_devices"

    name: Mapped[str] = mapped_column(String(MINION_ID_LEN), primary_key=True)
    options: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)
    node: Mapped[str | None] = mapped_column(String(MINION_ID_LEN), index=True)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    updated_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    status: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)
    last_poll: Mapped[dict[str, Any] | None] = mapped_column(JSONType)
    polled_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))


class KvmPoll(Base):
    """One poll of one device (``online`` false: it did not answer, ``error`` says why)."""

    __tablename__ = "kvm_polls"

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True, autoincrement=True)
    device: Mapped[str] = mapped_column(
        String(MINION_ID_LEN), ForeignKey("kvm_devices.name", ondelete="CASCADE")
    )
    polled_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    online: Mapped[bool] = mapped_column(Boolean)
    power: Mapped[bool | None] = mapped_column(Boolean)
    hid_online: Mapped[bool | None] = mapped_column(Boolean)
    msd_connected: Mapped[bool | None] = mapped_column(Boolean)
    msd_image: Mapped[str | None] = mapped_column(Text)
    temperature: Mapped[float | None] = mapped_column(Float)
    uptime_s: Mapped[int | None] = mapped_column(BigInteger)
    throttled: Mapped[bool | None] = mapped_column(Boolean)
    error: Mapped[str | None] = mapped_column(Text)

    __table_args__ = (Index("ix_kvm_polls_device", "device", "polled_at"),)


class KvmIso(Base):
    """An image of the master's ISO library: the file ``<library dir>/<name>`` whose SHA-256
    was checked against ``sha256`` as it was copied in."""

    __tablename__ = "kvm_isos"

    name: Mapped[str] = mapped_column(String(255), primary_key=True)
    sha256: Mapped[str] = mapped_column(String(64))
    size: Mapped[int] = mapped_column(BigInteger)
    source: Mapped[str | None] = mapped_column(Text)
    added_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    added_by: Mapped[str | None] = mapped_column(String(255))


class KvmActionSlot(Base):
    """A device's slot for one kind of action (``power``, ``media``): taken by a conditional
    update (:mod:`saltext_fleet.store.kvm_actions`), free when ``until`` has passed (and, for
    ``media``, when no ``token`` holds it)."""

    __tablename__ = "kvm_action_slots"

    device: Mapped[str] = mapped_column(
        String(MINION_ID_LEN), ForeignKey("kvm_devices.name", ondelete="CASCADE"), primary_key=True
    )
    kind: Mapped[str] = mapped_column(String(16), primary_key=True)
    token: Mapped[str | None] = mapped_column(String(64))
    actor: Mapped[str | None] = mapped_column(String(255))
    action: Mapped[str | None] = mapped_column(String(64))
    image: Mapped[str | None] = mapped_column(String(255))
    started_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))
    until: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))
    done_bytes: Mapped[int | None] = mapped_column(BigInteger)
    total_bytes: Mapped[int | None] = mapped_column(BigInteger)


class Alert(Base):
    """An accepted ``fleet/alert/*`` event (signed by the master), stored before any delivery.
    ``(kind, node, subject)`` names the condition it is about (``subject``: what within the
    node, e.g. a certificate's SHA-1 or a KVM device; "" when the node is all); ``state`` is
    ``firing`` or ``resolved``; ``condition`` the finer state (``above``, ``offline``,
    ``30d``...). ``suppressed`` says why it was not sent (``duplicate``, ``flapping``,
    ``acknowledged``), None when it was routed."""

    __tablename__ = "alerts"

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True, autoincrement=True)
    event_key: Mapped[str] = mapped_column(String(64), unique=True)
    tag: Mapped[str] = mapped_column(String(255))
    kind: Mapped[str] = mapped_column(String(32))
    node: Mapped[str | None] = mapped_column(String(MINION_ID_LEN))
    subject: Mapped[str] = mapped_column(String(255), default="", server_default="")
    state: Mapped[str] = mapped_column(String(16))
    condition: Mapped[str] = mapped_column(String(64))
    severity: Mapped[str] = mapped_column(String(16))
    summary: Mapped[str] = mapped_column(Text)
    data: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)
    raised_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    received_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    master: Mapped[str | None] = mapped_column(String(255))
    suppressed: Mapped[str | None] = mapped_column(String(32))

    __table_args__ = (
        Index("ix_alerts_node", "node", "raised_at"),
        Index("ix_alerts_raised_at", "raised_at"),
        Index("ix_alerts_kind", "kind", "node", "subject", "raised_at"),
    )


class AlertCondition(Base):
    """The current condition of one (kind, node, subject): ``changes`` holds the times of its
    recent changes (for flapping), ``last_sent`` ``{route: ISO time}`` of the last send (the
    duplicate window), and an acknowledgement holds while ``condition`` is
    ``acked_condition``."""

    __tablename__ = "alert_conditions"

    kind: Mapped[str] = mapped_column(String(32), primary_key=True)
    node: Mapped[str] = mapped_column(String(MINION_ID_LEN), primary_key=True)
    subject: Mapped[str] = mapped_column(String(255), primary_key=True, default="")
    state: Mapped[str] = mapped_column(String(16))
    condition: Mapped[str] = mapped_column(String(64))
    severity: Mapped[str] = mapped_column(String(16))
    changed_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    changes: Mapped[list[str]] = mapped_column(JSONType, default=list)
    flapping_since: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))
    last_alert_id: Mapped[int | None] = mapped_column(BigInteger)
    last_sent: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)
    acked_by: Mapped[str | None] = mapped_column(String(255))
    acked_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))
    acked_condition: Mapped[str | None] = mapped_column(String(64))
    ack_comment: Mapped[str | None] = mapped_column(Text)


class AlertRoute(Base):
    """A route an admin made in the UI: ``match`` (kinds, min_severity, group, node glob),
    ``destination`` (webhook, slack, pagerduty, email) and ``target`` (its URL, addresses...,
    never a secret: those are in ``secrets``, scope ``alert``, owner the route's name)."""

    __tablename__ = "alert_routes"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    destination: Mapped[str] = mapped_column(String(16))
    match: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)
    target: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)
    enabled: Mapped[bool] = mapped_column(Boolean, default=True, server_default=text("true"))
    created_by: Mapped[str | None] = mapped_column(String(255))
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    updated_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class AlertDelivery(Base):
    """One alert to one route. ``status``: ``pending`` (due at ``next_at``), ``delivered``,
    ``failed`` (gave up), ``suppressed``. A worker claims it by a conditional update
    (``claimed_by`` until ``claimed_until``), so one master sends it."""

    __tablename__ = "alert_deliveries"

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True, autoincrement=True)
    alert_id: Mapped[int] = mapped_column(BigInteger, ForeignKey("alerts.id", ondelete="CASCADE"))
    #: the route's name: ``config:<name>`` for the master config's, ``ui:<name>`` for the UI's
    route: Mapped[str] = mapped_column(String(80))
    destination: Mapped[str] = mapped_column(String(16))
    status: Mapped[str] = mapped_column(String(16))
    attempts: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    next_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))
    claimed_by: Mapped[str | None] = mapped_column(String(255))
    claimed_until: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    delivered_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))
    last_error: Mapped[str | None] = mapped_column(Text)

    __table_args__ = (
        UniqueConstraint("alert_id", "route", name="uq_alert_deliveries_alert_route"),
        Index("ix_alert_deliveries_due", "status", "next_at"),
        Index("ix_alert_deliveries_route", "route", "created_at"),
    )


class AlertAttempt(Base):
    """One attempt to deliver: ``ok``, the HTTP status (None for email or no answer), the
    latency and the error."""

    __tablename__ = "alert_attempts"

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True, autoincrement=True)
    delivery_id: Mapped[int] = mapped_column(
        BigInteger, ForeignKey("alert_deliveries.id", ondelete="CASCADE")
    )
    at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    ok: Mapped[bool] = mapped_column(Boolean)
    status_code: Mapped[int | None] = mapped_column(Integer)
    latency_ms: Mapped[float | None] = mapped_column(Float)
    error: Mapped[str | None] = mapped_column(Text)
    master: Mapped[str | None] = mapped_column(String(255))

    __table_args__ = (Index("ix_alert_attempts_delivery", "delivery_id", "at"),)


class CertAlert(Base):
    """A certificate expiry threshold (``30d``, ``7d``, ``1d``, ``expired``) that fired for
    one node's signing identity (``sha1``): each fires once per certificate and node."""

    __tablename__ = "cert_alerts"

    node: Mapped[str] = mapped_column(String(MINION_ID_LEN), primary_key=True)
    sha1: Mapped[str] = mapped_column(String(64), primary_key=True)
    threshold: Mapped[str] = mapped_column(String(16), primary_key=True)
    not_after: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))
    fired_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class Claim(Base):
    """(schema 0013) Reactor work one master took for the whole fleet: onboarding a node for
    one of its starts (``token``: the start time it reported), the presence check of a period.
    See :mod:`saltext_fleet.store.claims`."""

    __tablename__ = "claims"

    kind: Mapped[str] = mapped_column(String(32), primary_key=True)
    subject: Mapped[str] = mapped_column(String(MINION_ID_LEN), primary_key=True)
    token: Mapped[str] = mapped_column(String(64), default="", server_default="")
    master: Mapped[str | None] = mapped_column(String(MINION_ID_LEN))
    claimed_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class PresenceView(Base):
    """(schema 0016) Whether one master sees one node connected (its ``presence_events`` and
    connected ids), as it last reported. See :mod:`saltext_fleet.store.presence`."""

    __tablename__ = "presence_views"

    minion_id: Mapped[str] = mapped_column(String(MINION_ID_LEN), primary_key=True)
    master: Mapped[str] = mapped_column(String(MINION_ID_LEN), primary_key=True)
    connected: Mapped[bool] = mapped_column(Boolean)
    seen_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class PresenceMaster(Base):
    """(schema 0016) When a master last reported its presence view: a master that stopped
    reporting (down, cut off) no longer keeps a node online for the fleet."""

    __tablename__ = "presence_masters"

    master: Mapped[str] = mapped_column(String(MINION_ID_LEN), primary_key=True)
    reported_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class UiEndedSession(Base):
    """(schema 0014) A web UI session ended by a logout through any master, kept until its
    cookie would have expired: every master's UI refuses it. See
    :func:`saltext_fleet.store.users.end_session`."""

    __tablename__ = "ui_ended_sessions"

    sid: Mapped[str] = mapped_column(String(64), primary_key=True)
    expires_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), index=True)


class UiLoginLimit(Base):
    """(schema 0015) A web UI login counter every master shares (see
    :mod:`saltext_fleet.store.ui_limits`): ``kind`` ``fail`` (failed logins of a user or a
    client address: ``count`` since ``since``, and its lockout) or ``rate`` (a client
    address's login token bucket: ``count`` tokens at ``since``). ``expires_at``: when the row
    says nothing a missing row would not (it is then deleted)."""

    __tablename__ = "ui_login_limits"

    kind: Mapped[str] = mapped_column(String(8), primary_key=True)
    key: Mapped[str] = mapped_column(String(80), primary_key=True)
    count: Mapped[float] = mapped_column(Float, default=0.0)
    since: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True))
    locked_until: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))
    expires_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), index=True)


class JobCarrier(Base):
    """(schema 0017) A syndic's announcement that ``minion_id`` was sent job ``jid`` on its
    master, as the master of masters ``master_id`` heard it: ``syndic_id`` is the id of the
    connection Salt authenticated (``save_minions(..., syndic_id=...)``). The carrier of a
    return is the one syndic that announced its (jid, minion); see
    :mod:`saltext_fleet.core.carriers` and :mod:`saltext_fleet.store.carriers`."""

    __tablename__ = "job_carriers"

    jid: Mapped[str] = mapped_column(String(JID_LEN), primary_key=True)
    minion_id: Mapped[str] = mapped_column(String(MINION_ID_LEN), primary_key=True)
    syndic_id: Mapped[str] = mapped_column(String(MINION_ID_LEN), primary_key=True)
    master_id: Mapped[str | None] = mapped_column(String(MINION_ID_LEN))
    announced_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=utcnow)

    __table_args__ = (Index("ix_job_carriers_minion_jid", "minion_id", "jid"),)
