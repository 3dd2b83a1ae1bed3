"""The web UI's login counters, kept in the store for every master's engine.

Failed logins per user and per client address (and their lockouts) and the login rate per
client address must hold for the fleet: failures spread over two masters add up, and an
address locked or slowed down through one master is so on all of them. The rules are
:mod:`saltext_fleet.core.webauth`'s pure steps (:func:`~saltext_fleet.core.webauth.count_failure`,
:func:`~saltext_fleet.core.webauth.take_token`); this module keeps their state in
``ui_login_limits``, one row per (kind, key), and changes it safely under concurrency:

1. ``INSERT ... ON CONFLICT DO NOTHING`` makes sure the row exists (on SQLite this first
   write also takes the database's write lock, so the transactions of two engines run one
   after the other);
2. ``SELECT ... FOR UPDATE`` reads it under a row lock (PostgreSQL: a second master's
   transaction waits here until the first commits, then reads what the first wrote);
3. the core computes the new state, one ``UPDATE`` stores it, the transaction commits.

Nothing is read in one transaction and written in another, so no failure is lost and no
token is spent twice, whichever master asks.

Bounded growth: a row is deleted once ``expires_at`` has passed (the window or lockout is
over, the bucket is full again: a missing row means the same). Each engine deletes expired
rows at most every :data:`CLEANUP_SECONDS`; if more than :data:`MAX_ROWS` rows are left
(a flood of made-up usernames or addresses), the rows closest to expiring go first, as the
in-memory counters forgot their least recently used keys. Keys are bounded
(:func:`~saltext_fleet.core.webauth.user_key`, :func:`~saltext_fleet.core.webauth.address_key`:
at most 72 characters; an IPv6 client counts with its /64).

Times are the masters' wall clocks (UTC): keep them in sync (NTP).
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
import time
from collections.abc import Callable

from sqlalchemy import delete, func, select, tuple_, update
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import SQLAlchemyError

from saltext_fleet.core import webauth
from saltext_fleet.store.drift.common import aware, dialect_insert
from saltext_fleet.store.models import UiLoginLimit, utcnow

log = logging.getLogger(__name__)

FAIL = "fail"
RATE = "rate"
#: Rows kept at most (about 100 bytes each), as the in-memory counters' ``max_keys``.
MAX_ROWS = 100_000
#: Each engine deletes expired rows at most this often.
CLEANUP_SECONDS = 10.0

_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.timezone.utc)


def _ts(value: dt.datetime | None) -> float:
    return 0.0 if value is None else aware(value).timestamp()


def _dt(seconds: float) -> dt.datetime:
    return _EPOCH + dt.timedelta(seconds=seconds)


def _key(kind: str, key: str):
    return (UiLoginLimit.kind == kind) & (UiLoginLimit.key == key[: webauth.LIMIT_KEY_MAX])


def _locked_row(conn: Connection, kind: str, key: str, now: dt.datetime, fresh: dict):
    """The row of (kind, key) under a row lock, made from ``fresh`` when there is none."""
    conn.execute(
        dialect_insert(conn)(UiLoginLimit.__table__)
        .values(kind=kind, key=key[: webauth.LIMIT_KEY_MAX], expires_at=now, **fresh)
        .on_conflict_do_nothing(index_elements=["kind", "key"])
    )
    return conn.execute(
        select(UiLoginLimit.__table__).where(_key(kind, key)).with_for_update()
    ).one()


def _strikes(row) -> webauth.Strikes:
    return webauth.Strikes(int(row.count), _ts(row.since), _ts(row.locked_until))


def _store_strikes(conn: Connection, key: str, strikes: webauth.Strikes, window: float) -> None:
    conn.execute(
        update(UiLoginLimit)
        .where(_key(FAIL, key))
        .values(
            count=strikes.count,
            since=_dt(strikes.since),
            locked_until=_dt(strikes.locked_until) if strikes.locked_until else None,
            expires_at=_dt(strikes.expires(window)),
        )
    )


class _Cleaner:
    """Deletes expired rows (and the excess over ``max_rows``) at most every ``every`` s."""

    def __init__(self, max_rows: int, every: float):
        self.max_rows, self.every = max_rows, every
        self._next = 0.0
        self._lock = threading.Lock()

    def maybe(self, engine: Engine, now: dt.datetime) -> None:
        with self._lock:
            if time.monotonic() < self._next:
                return
            self._next = time.monotonic() + self.every
        try:
            with engine.begin() as conn:
                cleanup(conn, now, self.max_rows)
        except SQLAlchemyError as exc:
            # opportunistic: two masters' cleanups may deadlock (PostgreSQL aborts one), and
            # a store that is away fails the caller's own transaction next, saying so
            log.info("fleet ui: cleaning up the login counters failed: %s", exc)


def cleanup(conn: Connection, now: dt.datetime | None = None, max_rows: int = MAX_ROWS) -> int:
    """Delete the rows past ``expires_at``, then the excess over ``max_rows`` (the rows
    closest to expiring first); how many were deleted."""
    now = now or utcnow()
    table = UiLoginLimit.__table__
    gone = conn.execute(delete(table).where(table.c.expires_at <= now)).rowcount or 0
    excess = conn.execute(select(func.count()).select_from(table)).scalar_one() - max_rows
    if excess > 0:
        oldest = select(table.c.kind, table.c.key).order_by(table.c.expires_at).limit(excess)
        doomed = tuple_(table.c.kind, table.c.key).in_(oldest)
        gone += conn.execute(delete(table).where(doomed)).rowcount or 0
    return gone


class SharedThrottle:
    """:class:`~saltext_fleet.core.webauth.Throttle`'s methods (``failure``, ``success``,
    ``locked``, ``reset``) over the store: one count per key for every master. ``now`` is a
    UTC datetime (default: the clock)."""

    def __init__(
        self,
        engine: Engine,
        max_failures: int = 5,
        window: float = 900,
        lockout: float = 900,
        max_rows: int = MAX_ROWS,
        cleanup_seconds: float = CLEANUP_SECONDS,
    ):
        self.engine = engine
        self.max_failures = max_failures
        self.window = float(window)
        self.lockout = float(lockout)
        self._cleaner = _Cleaner(max_rows, cleanup_seconds)

    def _change(self, key: str, step: Callable, now: dt.datetime | None):
        now = now or utcnow()
        self._cleaner.maybe(self.engine, now)
        with self.engine.begin() as conn:
            row = _locked_row(conn, FAIL, key, now, {"count": 0, "since": now})
            return step(conn, _strikes(row), now.timestamp())

    def failure(self, key: str, now: dt.datetime | None = None) -> float:
        """Count a failure of ``key``; the seconds it is now locked for (0.0 if not)."""

        def step(conn, strikes, at):
            after = webauth.count_failure(strikes, at, self.max_failures, self.window, self.lockout)
            _store_strikes(conn, key, after, self.window)
            return after.locked(at)

        return self._change(key, step, now)

    def success(self, key: str, now: dt.datetime | None = None) -> None:
        """Forget ``key``'s failures after a good login (a running lockout stays)."""

        def step(conn, strikes, at):
            left = webauth.forget_failures(strikes, at)
            if left is None:
                conn.execute(delete(UiLoginLimit).where(_key(FAIL, key)))
            else:
                _store_strikes(conn, key, left, self.window)

        self._change(key, step, now)

    def reset(self, key: str) -> None:
        """Forget ``key`` entirely, lockout included (an admin unlocking an account)."""
        with self.engine.begin() as conn:
            conn.execute(delete(UiLoginLimit).where(_key(FAIL, key)))

    def locked(self, key: str, now: dt.datetime | None = None) -> float:
        """Seconds ``key`` stays locked; 0.0 when it is not (one read, no lock)."""
        now = now or utcnow()
        with self.engine.connect() as conn:
            until = conn.execute(select(UiLoginLimit.locked_until).where(_key(FAIL, key))).scalar()
        return max(0.0, _ts(until) - now.timestamp())


class SharedRateLimit:
    """:class:`~saltext_fleet.core.webauth.RateLimit`'s ``wait`` and ``allow`` over the store:
    one token bucket per key for every master."""

    def __init__(
        self,
        engine: Engine,
        per_second: float,
        burst: int,
        max_rows: int = MAX_ROWS,
        cleanup_seconds: float = CLEANUP_SECONDS,
    ):
        self.engine = engine
        self.per_second = float(per_second)
        self.burst = burst
        self._cleaner = _Cleaner(max_rows, cleanup_seconds)

    def wait(self, key: str, now: dt.datetime | None = None) -> float:
        """0.0 when a request for ``key`` may go ahead (a token is taken), else the seconds
        until it may."""
        now = now or utcnow()
        self._cleaner.maybe(self.engine, now)
        with self.engine.begin() as conn:
            row = _locked_row(conn, RATE, key, now, {"count": float(self.burst), "since": now})
            tokens, last, wait = webauth.take_token(
                float(row.count), _ts(row.since), now.timestamp(), self.per_second, self.burst
            )
            full = webauth.bucket_full_at(tokens, last, self.per_second, self.burst)
            conn.execute(
                update(UiLoginLimit)
                .where(_key(RATE, key))
                .values(count=tokens, since=_dt(last), expires_at=_dt(full))
            )
        return wait

    def allow(self, key: str, now: dt.datetime | None = None) -> bool:
        return self.wait(key, now) == 0.0
