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
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

#: JSON column type: JSONB on PostgreSQL (indexable, compact), JSON text elsewhere.
JSONType = JSON().with_variant(JSONB(), "postgresql")

#: Integer primary keys: BIGINT on PostgreSQL (returns and events outgrow 2^31), INTEGER on
#: SQLite (only INTEGER PRIMARY KEY is SQLite's auto-incrementing rowid).
BigIntPK = BigInteger().with_variant(Integer(), "sqlite")

MINION_ID_LEN = 255
JID_LEN = 64
RID_LEN = 64
DIGEST_LEN = 64


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


class Base(DeclarativeBase):
    type_annotation_map = {dict[str, Any]: JSONType, Any: JSONType}


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

    __table_args__ = (Index("ix_nodes_last_seen", "last_seen"),)


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
    rid: Mapped[str | None] = mapped_column(String(RID_LEN))
    kind: Mapped[str] = mapped_column(String(32))
    error: Mapped[str] = mapped_column(Text)
    #: The record as escaped JSON text (NUL and invalid characters escaped), cut at a limit.
    payload: Mapped[str] = mapped_column(Text)
    payload_bytes: Mapped[int] = mapped_column(BigInteger)
    stored_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=utcnow)

    __table_args__ = (Index("ix_quarantine_stored", "stored_at"),)
