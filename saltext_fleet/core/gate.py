"""The key gate's rules: which minion ids are acceptable, enrolment tokens, and decisions.

No key is ever accepted because it showed up. A pending key is accepted only by an operator,
or because it presents a live enrolment: a one-time token that an operator created for that
exact minion id (``salt-run fleet.enrol``), delivered to the minion as a grain that Salt sends
with its authentication request (``autosign_grains``), and/or an expected key fingerprint.

Only the SHA-256 of a token is stored: tokens are 256-bit random strings, so a fast hash is
enough (there is nothing to guess), and the database never holds a usable token.

Pure module: no Salt, no database. The runners and the reactor helper call it.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import hmac
import re
import secrets
import threading
import time
from collections import OrderedDict
from collections.abc import Mapping
from typing import Any

from saltext_fleet.core.errors import FleetError

#: A minion id the gate handles: letters, digits, dot, underscore, hyphen; at most 253
#: characters (a DNS name's limit); not starting with a dot or a hyphen (no hidden files,
#: nothing a command line could take for an option). Anything else never reaches a path.
MINION_ID_RE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._-]{0,252}")
MINION_ID_MAX = 253

#: The grain that carries an enrolment token (listed in the minion's ``autosign_grains``).
TOKEN_GRAIN = "fleet_enrolment"

#: Default lifetime of an enrolment, and the longest allowed.
DEFAULT_TTL = dt.timedelta(hours=24)
MAX_TTL = dt.timedelta(days=30)

#: Node group names: like minion ids, shorter.
GROUP_RE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._-]{0,63}")


class GateError(FleetError, ValueError):
    """Bad input to the gate: the message names the field and what was wrong."""

    def __init__(self, field: str, message: str):
        super().__init__(f"{field}: {message}")
        self.field = field


def check_minion_id(value: Any, field: str = "id") -> str:
    """``value`` if it is an acceptable minion id; :class:`GateError` naming it otherwise."""
    if not isinstance(value, str):
        raise GateError(field, f"a minion id must be a string, not {type(value).__name__}")
    if not value:
        raise GateError(field, "a minion id must not be empty")
    if len(value) > MINION_ID_MAX:
        raise GateError(field, f"a minion id is at most {MINION_ID_MAX} characters ({len(value)})")
    if not MINION_ID_RE.fullmatch(value):
        bad = sorted({c for c in value if not re.fullmatch(r"[A-Za-z0-9._-]", c)})
        if bad:
            shown = ", ".join(repr(c) for c in bad[:5])
            raise GateError(
                field, f"{value[:40]!r} has characters other than A-Z a-z 0-9 . _ - ({shown})"
            )
        raise GateError(field, f"{value[:40]!r} must not start with '.' or '-'")
    return value


def is_minion_id(value: Any) -> bool:
    try:
        check_minion_id(value)
    except GateError:
        return False
    return True


def check_group(value: Any, field: str = "group") -> str:
    if not isinstance(value, str) or not GROUP_RE.fullmatch(value):
        raise GateError(
            field, f"{str(value)[:40]!r} is not a group name (A-Z a-z 0-9 . _ -, at most 64)"
        )
    return value


def parse_ttl(value: Any, field: str = "ttl") -> dt.timedelta:
    """A lifetime: seconds (int/float) or ``<n>s|m|h|d`` (``"30m"``, ``"2h"``, ``"7d"``)."""
    if isinstance(value, dt.timedelta):
        ttl = value
    elif isinstance(value, bool):
        raise GateError(field, "expected seconds or <n>s/m/h/d, not a boolean")
    elif isinstance(value, (int, float)):
        ttl = dt.timedelta(seconds=value)
    elif isinstance(value, str):
        match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smhd]?)\s*", value)
        if not match:
            raise GateError(field, f"{value!r} is not a duration (seconds, or like 30m, 2h, 7d)")
        unit = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}[match.group(2)]
        ttl = dt.timedelta(seconds=float(match.group(1)) * unit)
    else:
        raise GateError(field, f"expected seconds or <n>s/m/h/d, not {type(value).__name__}")
    if ttl <= dt.timedelta(0):
        raise GateError(field, "must be positive")
    if ttl > MAX_TTL:
        raise GateError(field, f"at most {MAX_TTL.days} days")
    return ttl


# -- tokens and fingerprints -------------------------------------------------------------------


def new_token() -> str:
    """A fresh enrolment token: 256 random bits, URL-safe text (43 characters)."""
    return secrets.token_urlsafe(32)


def token_hash(token: str) -> str:
    """What the store keeps of a token: its SHA-256 in hex."""
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).hexdigest()


def fingerprint(pub: str, hash_type: str = "sha256") -> str:
    """The fingerprint ``salt-key -f`` prints for a public key, as colon-separated hex pairs.

    Salt 3008 keeps keys in its key cache and fingerprints the PEM text as the minion sent
    it (armour lines included). A minion sends its ``minion.pub`` without the final newline,
    so the text is stripped first: the fingerprint of a key file written here is the one the
    master will see."""
    if not isinstance(pub, str) or "-----BEGIN" not in pub or "-----END" not in pub:
        raise GateError("pub", "not a PEM public key")
    try:
        digest = hashlib.new(hash_type, pub.strip().encode("utf-8")).hexdigest()
    except ValueError as exc:
        raise GateError("hash_type", f"unknown hash {hash_type!r}") from exc
    return ":".join(digest[i : i + 2] for i in range(0, len(digest), 2))


def same_fingerprint(a: str | None, b: str | None) -> bool:
    if not a or not b:
        return False
    norm = lambda f: f.replace(":", "").lower().encode()  # noqa: E731
    return hmac.compare_digest(norm(a), norm(b))


# -- enrolment decisions -----------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Enrolment:
    """What the gate needs of a stored enrolment."""

    id: int
    minion_id: str
    token_hash: str
    state: str  # live, used, expired, revoked
    expires_at: dt.datetime
    fingerprint: str | None = None
    node_group: str | None = None


@dataclasses.dataclass(frozen=True)
class Decision:
    """``accept`` True: accept the key under ``enrolment``; otherwise ``reason`` says why not
    (``no-token`` is no refusal: the key simply stays pending for an operator)."""

    accept: bool
    reason: str
    enrolment: Enrolment | None = None

    @property
    def refused(self) -> bool:
        return not self.accept and self.reason != "no-token"


def presented_token(autosign_grains: Any) -> str | None:
    """The token a minion sent (``autosign_grains`` of its ``salt/auth`` event), if any."""
    if not isinstance(autosign_grains, Mapping):
        return None
    token = autosign_grains.get(TOKEN_GRAIN)
    if isinstance(token, str) and 16 <= len(token) <= 256:
        return token
    return None


def decide(
    minion_id: str,
    key_fingerprint: str,
    token: str | None,
    found: Enrolment | None,
    now: dt.datetime,
) -> Decision:
    """Whether a pending key may be accepted.

    ``found`` is the enrolment whose ``token_hash`` equals the presented token's (looked up
    by the caller), or, when no token was presented, the live enrolment of ``minion_id`` that
    names an expected fingerprint (if any). Refusals: ``unknown-token``, ``wrong-id`` (the
    token was made for another minion), ``used``, ``revoked``, ``expired``,
    ``wrong-fingerprint`` (the enrolment expects another key).
    """
    if token is None:
        if found is not None and found.fingerprint and found.minion_id == minion_id:
            return _check_live(found, key_fingerprint, now)
        return Decision(False, "no-token")
    if found is None or not hmac.compare_digest(found.token_hash, token_hash(token)):
        return Decision(False, "unknown-token")
    if found.minion_id != minion_id:
        return Decision(False, "wrong-id", found)
    return _check_live(found, key_fingerprint, now)


def _check_live(found: Enrolment, key_fingerprint: str, now: dt.datetime) -> Decision:
    if found.state == "used":
        return Decision(False, "used", found)
    if found.state == "revoked":
        return Decision(False, "revoked", found)
    if found.state == "expired" or _aware(found.expires_at) <= _aware(now):
        return Decision(False, "expired", found)
    if found.fingerprint and not same_fingerprint(found.fingerprint, key_fingerprint):
        return Decision(False, "wrong-fingerprint", found)
    return Decision(True, "enrolled", found)


def _aware(at: dt.datetime) -> dt.datetime:
    return at if at.tzinfo else at.replace(tzinfo=dt.timezone.utc)


def minion_config(
    minion_id: str,
    master: str | list[str],
    token: str | None,
    master_port: int | None = None,
) -> dict[str, Any]:
    """The minion configuration that carries an enrolment (to be written as YAML to
    ``/etc/salt/minion.d/fleet.conf``): the id, the master, and the token as a grain that
    Salt sends with every authentication attempt (``autosign_grains``)."""
    conf: dict[str, Any] = {"id": minion_id, "master": master}
    if master_port:
        conf["master_port"] = int(master_port)
    if token:
        conf["autosign_grains"] = [TOKEN_GRAIN]
        conf["grains"] = {TOKEN_GRAIN: token}
    # a new minion tries again quickly, so that it is in within seconds of acceptance
    conf["acceptance_wait_time"] = 2
    conf["acceptance_wait_time_max"] = 10
    return conf


# -- the reactor's filter ----------------------------------------------------------------------


class SeenFilter:
    """Which ``salt/auth`` events deserve a runner call.

    A pending minion retries authentication every few seconds, and each attempt is an event;
    a thousand of them would keep Salt's reactor threads busy with nothing new (each runner
    call is a job of its own). The reactor asks this filter first, in its own process: a key
    passes the first time it is seen, then at most once per ``window`` seconds (to move its
    ``last_seen`` on), or once per ``token_window`` seconds when it presents a token. At most
    ``size`` keys are remembered (least recently seen forgotten first).
    """

    def __init__(self, window: float = 60.0, token_window: float = 3.0, size: int = 100_000):
        self.window = window
        self.token_window = token_window
        self.size = size
        self._seen: OrderedDict[tuple[str, str, bool], float] = OrderedDict()
        self._lock = threading.Lock()

    def wanted(self, minion_id: str, pub: str, has_token: bool, now: float | None = None) -> bool:
        now = time.monotonic() if now is None else now
        key = (minion_id, hashlib.sha256(pub.encode()).hexdigest()[:32], has_token)
        window = self.token_window if has_token else self.window
        with self._lock:
            last = self._seen.get(key)
            if last is not None and now - last < window:
                self._seen.move_to_end(key)
                return False
            self._seen[key] = now
            self._seen.move_to_end(key)
            while len(self._seen) > self.size:
                self._seen.popitem(last=False)
            return True

    def forget(self, minion_id: str) -> None:
        with self._lock:
            for key in [k for k in self._seen if k[0] == minion_id]:
                del self._seen[key]


class HintLimiter:
    """How often an event that is only a hint may trigger work, per key (a node, say).

    A minion may fire almost any tag, for any node, as often as it likes, so a hint must not
    cost a job each time. The first hint for a key is acted on at once; later ones within
    ``window`` seconds are not, but remembered: when the window ends, :meth:`due` names the
    key once (the trailing edge), so a genuine hint that came in right after a forged one is
    still acted on, only later. At most ``size`` keys are remembered (oldest first out).
    """

    def __init__(self, window: float, size: int = 100_000, trailing: bool = True):
        self.window = window
        self.size = size
        self.trailing = trailing
        #: key -> (time the last work started, a hint is waiting)
        self._last: OrderedDict[Any, tuple[float, bool]] = OrderedDict()
        self._lock = threading.Lock()

    def offer(self, key: Any, now: float | None = None) -> bool:
        """True: act on this hint now. False: too soon (remembered for :meth:`due`)."""
        now = time.monotonic() if now is None else now
        with self._lock:
            found = self._last.get(key)
            if found is not None and now - found[0] < self.window:
                self._last[key] = (found[0], self.trailing)
                return False
            self._last[key] = (now, False)
            self._last.move_to_end(key)
            while len(self._last) > self.size:
                self._last.popitem(last=False)
            return True

    def due(self, now: float | None = None) -> list:
        """Keys with a waiting hint whose window is over; each counts as acted on now."""
        now = time.monotonic() if now is None else now
        out = []
        with self._lock:
            for key, (at, waiting) in list(self._last.items()):
                if waiting and now - at >= self.window:
                    self._last[key] = (now, False)
                    self._last.move_to_end(key)
                    out.append(key)
        return out

    def waiting(self) -> int:
        with self._lock:
            return sum(1 for _at, w in self._last.values() if w)
