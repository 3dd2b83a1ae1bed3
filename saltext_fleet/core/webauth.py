"""Who may sign in to the web UI, and what each signed-in user may do.

The web UI can accept keys, bootstrap machines and run commands across the fleet, so its
login is the fleet's front door. This module holds every decision about it that needs no
request, no session store and no database, so that each can be tested on its own:

* **Roles and permissions.** Four roles ordered by power (``viewer`` < ``auditor`` <
  ``operator`` < ``admin``) and a table of named permissions. A route asks
  :func:`allowed` for a permission by name; a misspelt name raises instead of quietly
  refusing (or granting) everything.
* **Passwords.** bcrypt, after an HMAC-SHA256 pre-hash (``bcrypt-sha256``): bcrypt reads
  only the first 72 bytes of its input, and a long passphrase must not be accepted because
  its first 72 bytes match. :func:`verify_dummy` makes a login for an unknown user cost
  what a known user's costs, so timing does not tell which usernames exist.
* **Second factor.** TOTP (RFC 6238) with replay refusal: a code is good once, so the
  caller stores the time step :func:`verify_totp` returns and passes it back next time.
  Single-use recovery codes for a lost authenticator.
* **API tokens, CSRF tokens** and **throttling** of failed logins and of request rates:
  in memory (:class:`Throttle`, :class:`RateLimit`), or as pure steps over counters the
  caller keeps (:func:`count_failure`, :func:`take_token`: the store keeps them for every
  master, :mod:`saltext_fleet.store.ui_limits`).

Only hashes of secrets are stored: password hashes (slow on purpose), and SHA-256 of API
tokens and recovery codes (random values with nothing to guess from a dictionary).

Pure module: no Flask, no Salt, no database. The web UI's auth blueprint and the CLI's
``users`` commands call it.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import hashlib
import hmac
import ipaddress
import re
import secrets
import threading
import time
import unicodedata
from collections import OrderedDict, deque
from typing import Any

import bcrypt
import pyotp

from saltext_fleet.core.errors import FleetError


class WebAuthError(FleetError, ValueError):
    """Bad input to the web UI's auth rules; the message says what was wrong.

    ``field`` names the form field at fault when there is one, so a form can mark it.
    """

    def __init__(self, message: str, field: str | None = None):
        super().__init__(message)
        self.field = field


def _shown(value: Any, limit: int = 40) -> str:
    """``value`` for an error message: repr, cut short (a hostile value may be huge)."""
    if isinstance(value, str) and len(value) > limit:
        return f"{value[:limit]!r}..."
    return repr(value)


# -- roles and permissions ---------------------------------------------------------------------

#: The roles, least powerful first.
ROLES: tuple[str, ...] = ("viewer", "auditor", "operator", "admin")

_ALL = frozenset(ROLES)
_OPERATORS = frozenset({"operator", "admin"})

#: Permission name -> the roles that hold it. Routes name a permission, never a role.
PERMISSIONS: dict[str, frozenset[str]] = {
    "view": _ALL,  # fleet, nodes, drift, SBOM/CVE pages
    "jobs.view": _ALL,  # the list of jobs: function, target, user, time
    # a job's load and returns: arguments, pillar.items and cmd.run output land there
    "jobs.returns": frozenset({"auditor", "operator", "admin"}),
    "tokens.own": _ALL,  # create and revoke one's own API token
    "audit.view": frozenset({"auditor", "operator", "admin"}),
    "keys.decide": _OPERATORS,  # accept, reject, delete minion keys
    "enrol": _OPERATORS,
    "bootstrap": _OPERATORS,
    "actions.run": _OPERATORS,  # refresh inventory, apply states, named commands
    "nodes.edit": _OPERATORS,  # criticality, audited flag, comment
    "baselines.edit": _OPERATORS,
    "vulns.triage": _OPERATORS,  # decide and revoke triage of vulnerability findings
    "kvm.power": _OPERATORS,  # a PiKVM's power buttons (on, off, reset)
    "kvm.media": _OPERATORS,  # mount an ISO library image on a PiKVM, eject
    "users.manage": frozenset({"admin"}),
    "kvm.watch": frozenset({"viewer", "auditor", "operator", "admin"}),  # console video
    "kvm.console": _OPERATORS,  # console keyboard and mouse
    "alerts.ack": _OPERATORS,  # acknowledge an alert's condition (stops repeats until it changes)
    "alerts.test": _OPERATORS,  # send a test alert through a route
    "alerts.routes": frozenset({"admin"}),  # the UI's alert routes and route secrets
}


def check_role(role: Any) -> str:
    """``role`` if it is a role name; :class:`WebAuthError` naming it and the valid ones."""
    if not isinstance(role, str) or role not in ROLES:
        raise WebAuthError(
            f"{_shown(role)} is not a role; the roles are {', '.join(ROLES)}", field="role"
        )
    return role


def allowed(role: Any, permission: str) -> bool:
    """Whether ``role`` holds ``permission``.

    An unknown permission is a programming error (a typo in a route) and raises
    :class:`WebAuthError`; an unknown role (a stale or tampered session) holds nothing.
    """
    try:
        holders = PERMISSIONS[permission]
    except (KeyError, TypeError) as exc:
        raise WebAuthError(
            f"{_shown(permission)} is not a permission; known: {', '.join(sorted(PERMISSIONS))}"
        ) from exc
    return isinstance(role, str) and role in holders


def permissions_of(role: Any) -> frozenset[str]:
    """Every permission ``role`` holds (empty for an unknown role): for templates and the API."""
    if not isinstance(role, str):
        return frozenset()
    return frozenset(name for name, holders in PERMISSIONS.items() if role in holders)


# -- usernames and the password policy ---------------------------------------------------------

USERNAME_MAX = 64
_USERNAME_CHARS = re.compile(r"[A-Za-z0-9._@-]")
USERNAME_RE = re.compile(r"[A-Za-z0-9_@][A-Za-z0-9._@-]{0,63}")

PASSWORD_MIN = 12
PASSWORD_MAX = 1024


def check_username(name: Any) -> str:
    """``name`` if it is an acceptable username; :class:`WebAuthError` saying what is wrong.

    1 to 64 characters of ``A-Z a-z 0-9 . _ @ -``, not starting with ``.`` or ``-``: safe
    in a URL, a log line, a TOTP label and a shell argument of ``saltext-fleet users``.
    """
    if not isinstance(name, str):
        raise WebAuthError(
            f"a username must be a string, not {type(name).__name__}", field="username"
        )
    if not name:
        raise WebAuthError("a username must not be empty", field="username")
    if len(name) > USERNAME_MAX:
        raise WebAuthError(
            f"{_shown(name)} is {len(name)} characters; a username is at most {USERNAME_MAX}",
            field="username",
        )
    if not USERNAME_RE.fullmatch(name):
        bad = sorted({c for c in name if not _USERNAME_CHARS.fullmatch(c)})
        if bad:
            shown = ", ".join(repr(c) for c in bad[:5])
            raise WebAuthError(
                f"{_shown(name)} has characters other than A-Z a-z 0-9 . _ @ - ({shown})",
                field="username",
            )
        raise WebAuthError(f"{_shown(name)} must not start with '.' or '-'", field="username")
    return name


def check_password_policy(password: Any, username: str) -> str:
    """``password`` if it may be set for ``username``; :class:`WebAuthError` saying why not.

    Length is what makes a password strong (NIST SP 800-63B): at least 12 characters, any
    characters, spaces welcome; at most 1024 so nobody can make every login hash megabytes.
    The username itself (in any case) is refused.
    """
    if not isinstance(password, str):
        raise WebAuthError(
            f"a password must be a string, not {type(password).__name__}", field="password"
        )
    if len(password) < PASSWORD_MIN:
        raise WebAuthError(
            f"the password is {len(password)} characters; use at least {PASSWORD_MIN} "
            "(a few unrelated words make a good one)",
            field="password",
        )
    if len(password) > PASSWORD_MAX:
        raise WebAuthError(
            f"the password is {len(password)} characters; at most {PASSWORD_MAX} are allowed",
            field="password",
        )
    if isinstance(username, str) and password.casefold() == username.casefold():
        raise WebAuthError("the password must not be the username", field="password")
    return password


# -- password hashing --------------------------------------------------------------------------

#: bcrypt's cost (log2 of its rounds): about a quarter of a second per hash on a 2020s core.
BCRYPT_ROUNDS = 12
#: What bcrypt itself accepts as a cost.
BCRYPT_MIN_ROUNDS = 4
BCRYPT_MAX_ROUNDS = 31

#: The stored form is this marker followed by a bcrypt hash minus its leading ``$``
#: (``bcrypt-sha256$2b$12$<22 salt chars><31 hash chars>``): another scheme can come later
#: under another marker, and :func:`needs_rehash` moves users onto it at their next login.
SCHEME = "bcrypt-sha256$"
_BCRYPT_RE = re.compile(r"\$2b\$(\d\d)\$[./A-Za-z0-9]{53}")


def _password_bytes(password: str) -> bytes:
    # NFKC (as NIST SP 800-63B suggests): the same password typed on another keyboard or OS
    # that composes characters differently still matches. Lone surrogates must not raise.
    return unicodedata.normalize("NFKC", password).encode("utf-8", "surrogatepass")


def _prehash(password: str, salt: bytes) -> bytes:
    """What bcrypt is given: base64 of HMAC-SHA256(bcrypt salt, password), 44 bytes.

    SHA-256 first so that every byte of a long password counts (bcrypt reads 72) and no
    NUL byte reaches bcrypt; base64 because bcrypt stops at a NUL. Keyed with the hash's
    own salt so that an unsalted SHA-256 of the password leaked elsewhere cannot be tried
    against the bcrypt hash directly ("password shucking").
    """
    mac = hmac.new(salt, _password_bytes(password), hashlib.sha256).digest()
    return base64.b64encode(mac)


def _check_rounds(rounds: Any) -> int:
    if isinstance(rounds, bool) or not isinstance(rounds, int):
        raise WebAuthError(f"bcrypt rounds must be an integer, not {type(rounds).__name__}")
    if not BCRYPT_MIN_ROUNDS <= rounds <= BCRYPT_MAX_ROUNDS:
        raise WebAuthError(
            f"bcrypt rounds must be between {BCRYPT_MIN_ROUNDS} and {BCRYPT_MAX_ROUNDS}, "
            f"not {rounds}"
        )
    return rounds


def hash_password(password: str, rounds: int = BCRYPT_ROUNDS) -> str:
    """The stored form of ``password``: ``bcrypt-sha256$2b$<cost>$...`` (ASCII, 73 characters).

    Check the policy first (:func:`check_password_policy`); this refuses only what cannot
    be a password at all (not a string, empty, longer than ``PASSWORD_MAX``).
    """
    if not isinstance(password, str):
        raise WebAuthError(
            f"a password must be a string, not {type(password).__name__}", field="password"
        )
    if not password:
        raise WebAuthError("a password must not be empty", field="password")
    if len(password) > PASSWORD_MAX:
        raise WebAuthError(
            f"the password is {len(password)} characters; at most {PASSWORD_MAX} are allowed",
            field="password",
        )
    salt = bcrypt.gensalt(rounds=_check_rounds(rounds), prefix=b"2b")
    hashed = bcrypt.hashpw(_prehash(password, salt), salt).decode("ascii")
    return SCHEME + hashed[1:]


def _parse_stored(stored: Any) -> tuple[bytes, int] | None:
    """(bcrypt hash, cost) of a stored password hash, or None when it is not one of ours."""
    if not isinstance(stored, str) or not stored.startswith(SCHEME):
        return None
    hashed = "$" + stored[len(SCHEME) :]
    match = _BCRYPT_RE.fullmatch(hashed)
    if not match:
        return None
    cost = int(match.group(1))
    if not BCRYPT_MIN_ROUNDS <= cost <= BCRYPT_MAX_ROUNDS:
        return None
    return hashed.encode("ascii"), cost


def verify_password(password: Any, stored: Any) -> bool:
    """Whether ``password`` matches the ``stored`` hash.

    Never raises: a password that is not a string or too long, a stored value that is not
    a hash made by :func:`hash_password` (empty, NULL, truncated, another scheme) all give
    False. bcrypt compares in constant time.
    """
    if not isinstance(password, str) or not password or len(password) > PASSWORD_MAX:
        return False
    parsed = _parse_stored(stored)
    if parsed is None:
        return False
    hashed, _cost = parsed
    try:
        return bcrypt.checkpw(_prehash(password, hashed[:29]), hashed)
    except ValueError:  # a hash that passed the shape check but not bcrypt's own
        return False


def needs_rehash(stored: Any, rounds: int = BCRYPT_ROUNDS) -> bool:
    """Whether ``stored`` should be replaced by a fresh hash at the user's next good login:
    it is not in the current scheme, or its cost is not ``rounds`` (raised or lowered)."""
    parsed = _parse_stored(stored)
    return parsed is None or parsed[1] != _check_rounds(rounds)


_dummy_hashes: dict[int, str] = {}
_dummy_lock = threading.Lock()


def dummy_hash(rounds: int = BCRYPT_ROUNDS) -> str:
    """A hash of a random password nobody knows, made once per cost and kept."""
    rounds = _check_rounds(rounds)
    with _dummy_lock:
        if rounds not in _dummy_hashes:
            _dummy_hashes[rounds] = hash_password(secrets.token_urlsafe(32), rounds=rounds)
        return _dummy_hashes[rounds]


def verify_dummy(password: Any, rounds: int = BCRYPT_ROUNDS) -> bool:
    """Spend the time of a password check for a user that does not exist; always False.

    Call it where :func:`verify_password` would have run, with the cost real hashes have,
    so that a login's duration does not reveal whether the username exists.
    """
    verify_password(password, dummy_hash(rounds))
    return False


def __getattr__(name: str) -> Any:
    # DUMMY_HASH is computed on first use: hashing at import would slow every Salt process
    # that imports the core for nothing.
    if name == "DUMMY_HASH":
        return dummy_hash()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


# -- TOTP --------------------------------------------------------------------------------------

TOTP_INTERVAL = 30
TOTP_DIGITS = 6
TOTP_MAX_WINDOW = 10
_TOTP_CODE_RE = re.compile(r"[0-9]{6}")
_WHITESPACE_RE = re.compile(r"\s+")


def new_totp_secret() -> str:
    """A fresh TOTP secret: 32 base32 characters (160 bits, what RFC 4226 recommends)."""
    return pyotp.random_base32(length=32)


def _totp(secret: Any) -> pyotp.TOTP:
    """A TOTP for a stored secret; :class:`WebAuthError` when the secret is not usable."""
    if not isinstance(secret, str) or not secret:
        raise WebAuthError("the TOTP secret is missing or not a string", field="totp_secret")
    padded = secret + "=" * (-len(secret) % 8)
    try:
        raw = base64.b32decode(padded, casefold=True)
    except (binascii.Error, ValueError) as exc:
        raise WebAuthError("the stored TOTP secret is not base32", field="totp_secret") from exc
    if len(raw) < 16:  # 128 bits, RFC 4226's minimum
        raise WebAuthError(
            f"the stored TOTP secret is {len(raw) * 8} bits; at least 128 are needed",
            field="totp_secret",
        )
    return pyotp.TOTP(secret, digits=TOTP_DIGITS, interval=TOTP_INTERVAL)


def totp_uri(secret: str, username: str, issuer: str = "saltext-fleet") -> str:
    """The ``otpauth://totp/...`` URI an authenticator app reads (as a QR code)."""
    return _totp(secret).provisioning_uri(name=check_username(username), issuer_name=issuer)


def totp_counter(now: float | None = None) -> int:
    """The TOTP time step of ``now`` (seconds since the epoch; default: the clock)."""
    return int((time.time() if now is None else now) // TOTP_INTERVAL)


def verify_totp(
    secret: str,
    code: Any,
    last_counter: int | None,
    now: float | None = None,
    window: int = 1,
) -> int | None:
    """The time step ``code`` is valid for, or None when it is not a good code.

    A good code is 6 digits (spaces ignored) valid within ``window`` steps of 30 s either
    side of ``now`` (clock drift, a code typed as it changes) and for a step after
    ``last_counter``: a code, once used, is never taken again, nor is an older one. Store
    the returned step as the user's new ``last_counter``. A code that is not a string or not
    6 digits gives None; a stored secret that is unusable raises :class:`WebAuthError`.
    """
    totp = _totp(secret)
    if (
        isinstance(window, bool)
        or not isinstance(window, int)
        or not 0 <= window <= TOTP_MAX_WINDOW
    ):
        raise WebAuthError(f"the TOTP window must be 0 to {TOTP_MAX_WINDOW} steps, not {window!r}")
    if last_counter is not None and (
        isinstance(last_counter, bool) or not isinstance(last_counter, int)
    ):
        raise WebAuthError(
            f"last_counter must be an integer or None, not {type(last_counter).__name__}"
        )
    if not isinstance(code, str) or len(code) > 64:
        return None
    code = _WHITESPACE_RE.sub("", code)
    if not _TOTP_CODE_RE.fullmatch(code):
        return None
    current = totp_counter(now)
    matched = None
    # Every step in the window is computed and compared, matched or not: no early exit.
    for counter in range(current - window, current + window + 1):
        if counter < 0 or (last_counter is not None and counter <= last_counter):
            continue
        if hmac.compare_digest(totp.generate_otp(counter), code) and matched is None:
            matched = counter
    return matched


# -- recovery codes ----------------------------------------------------------------------------

#: Lowercase letters and digits without the ones read or typed as another (0 o, 1 l i).
RECOVERY_ALPHABET = "abcdefghjkmnpqrstuvwxyz23456789"
RECOVERY_GROUPS = 3
RECOVERY_GROUP_LEN = 4
_RECOVERY_LEN = RECOVERY_GROUPS * RECOVERY_GROUP_LEN
_RECOVERY_RE = re.compile(f"[{RECOVERY_ALPHABET}]{{{_RECOVERY_LEN}}}")
_RECOVERY_STRIP_RE = re.compile(r"[\s-]+")


def new_recovery_codes(n: int = 10) -> list[str]:
    """``n`` fresh recovery codes like ``k7dm-xq3p-v2na``: 12 random characters from a
    31-character alphabet, about 59.5 bits each. Show them once; store their hashes."""
    if isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= 100:
        raise WebAuthError(f"the number of recovery codes must be 1 to 100, not {n!r}")
    codes: list[str] = []
    while len(codes) < n:
        raw = "".join(secrets.choice(RECOVERY_ALPHABET) for _ in range(_RECOVERY_LEN))
        code = "-".join(
            raw[i : i + RECOVERY_GROUP_LEN] for i in range(0, _RECOVERY_LEN, RECOVERY_GROUP_LEN)
        )
        if code not in codes:
            codes.append(code)
    return codes


def _normalise_recovery_code(code: str) -> str:
    return _RECOVERY_STRIP_RE.sub("", code).lower()


def hash_recovery_code(code: str) -> str:
    """What the store keeps of a recovery code: SHA-256 (hex) of it in lowercase, without
    dashes and spaces, so ``K7DM XQ3P V2NA`` is the same code as ``k7dm-xq3p-v2na``."""
    if not isinstance(code, str):
        raise WebAuthError(f"a recovery code must be a string, not {type(code).__name__}")
    return hashlib.sha256(
        _normalise_recovery_code(code).encode("utf-8", "surrogatepass")
    ).hexdigest()


def use_recovery_code(code: Any, hashes: list[str]) -> list[str] | None:
    """The hashes left once ``code`` is used, or None when it matches none of ``hashes``.

    The answer for the last code is ``[]``, so test the result with ``is None``. Store the
    remaining list before letting the user in: that is what makes a code single-use.
    """
    if not isinstance(code, str) or len(code) > 64:
        return None
    normalised = _normalise_recovery_code(code)
    if not _RECOVERY_RE.fullmatch(normalised):
        return None
    wanted = hash_recovery_code(normalised).encode("ascii")
    found = None
    for index, stored in enumerate(hashes):
        if not isinstance(stored, str):
            continue
        # every stored hash is compared, so the time taken does not tell which one matched
        same = hmac.compare_digest(stored.lower().encode("ascii", "replace"), wanted)
        if same and found is None:
            found = index
    if found is None:
        return None
    return [h for i, h in enumerate(hashes) if i != found]


# -- API tokens --------------------------------------------------------------------------------

API_TOKEN_PREFIX = "fleet_"
_API_TOKEN_RE = re.compile(r"fleet_[A-Za-z0-9_-]{43}")


def new_api_token() -> str:
    """A fresh API token: ``fleet_`` and 256 random bits as 43 URL-safe characters.

    The prefix lets secret scanners and log redaction recognise a leaked token.
    """
    return API_TOKEN_PREFIX + secrets.token_urlsafe(32)


def api_token_hash(token: str) -> str:
    """What the store keeps of an API token: its SHA-256 in hex (256 random bits need no
    slow hash), so a database dump holds no usable token."""
    if not isinstance(token, str):
        raise WebAuthError(f"an API token must be a string, not {type(token).__name__}")
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).hexdigest()


def is_api_token(value: Any) -> bool:
    """Whether ``value`` has the shape of a token from :func:`new_api_token` (look it up
    only then: anything else in an Authorization header is refused without a query)."""
    return isinstance(value, str) and _API_TOKEN_RE.fullmatch(value) is not None


# -- CSRF --------------------------------------------------------------------------------------

_CSRF_CONTEXT = b"saltext-fleet csrf v1\x00"
_CSRF_RE = re.compile(r"([A-Za-z0-9_-]{22})\.([A-Za-z0-9_-]{43})")


def _csrf_mac(secret_key: bytes, session_id: str, nonce: str) -> str:
    # The context label keeps these MACs apart from anything else signed with the app's key
    # (Flask signs its session cookie with the same secret).
    message = _CSRF_CONTEXT + nonce.encode("ascii") + b"\x00" + session_id.encode("utf-8")
    mac = hmac.new(secret_key, message, hashlib.sha256).digest()
    return base64.urlsafe_b64encode(mac).rstrip(b"=").decode("ascii")


def csrf_token(secret_key: bytes, session_id: str) -> str:
    """A CSRF token bound to ``session_id``: ``<nonce>.<HMAC-SHA256>``, URL-safe, 66 chars.

    A fresh nonce each call, so a page may hold many tokens; all stay good for the session.
    """
    if not isinstance(secret_key, (bytes, bytearray)) or not secret_key:
        raise WebAuthError("the CSRF secret key must be non-empty bytes")
    if not isinstance(session_id, str) or not session_id:
        raise WebAuthError("the session id must be a non-empty string")
    nonce = secrets.token_urlsafe(16)
    return f"{nonce}.{_csrf_mac(bytes(secret_key), session_id, nonce)}"


def check_csrf(secret_key: Any, session_id: Any, token: Any) -> bool:
    """Whether ``token`` was made by :func:`csrf_token` for this key and session.

    Never raises: a missing, malformed or altered token, another session's token, or an
    empty key or session all give False. The MAC is compared in constant time.
    """
    if not isinstance(secret_key, (bytes, bytearray)) or not secret_key:
        return False
    if not isinstance(session_id, str) or not session_id:
        return False
    if not isinstance(token, str) or len(token) > 128:
        return False
    match = _CSRF_RE.fullmatch(token)
    if not match:
        return False
    nonce, mac = match.groups()
    expected = _csrf_mac(bytes(secret_key), session_id, nonce)
    return hmac.compare_digest(expected.encode("ascii"), mac.encode("ascii"))


# -- throttling --------------------------------------------------------------------------------


def _positive(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
        raise WebAuthError(f"{name} must be a positive number, not {value!r}")
    return float(value)


def _positive_int(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise WebAuthError(f"{name} must be a positive integer, not {value!r}")
    return value


class _Failures:
    __slots__ = ("times", "locked_until")

    def __init__(self, max_failures: int):
        self.times: deque[float] = deque(maxlen=max_failures)
        self.locked_until = 0.0


class Throttle:
    """Failed logins per key (``"user:alice"``, ``"ip:10.0.0.1"``), and lockouts.

    ``max_failures`` failures of a key within ``window`` seconds lock it for ``lockout``
    seconds. Lock both the username (guessing one account's password from many places) and
    the client address (one place trying many accounts). While a key is locked the caller
    refuses the login without checking the password, and its failures are not counted.

    In memory, per process, thread-safe; at most ``max_keys`` keys (the least recently
    touched are forgotten first), so a flood of made-up usernames cannot exhaust memory.
    Times are :func:`time.monotonic` unless ``now`` is given (tests inject a clock).
    """

    def __init__(
        self,
        max_failures: int = 5,
        window: float = 900,
        lockout: float = 900,
        max_keys: int = 100_000,
    ):
        self.max_failures = _positive_int("max_failures", max_failures)
        self.window = _positive("window", window)
        self.lockout = _positive("lockout", lockout)
        self.max_keys = _positive_int("max_keys", max_keys)
        self._keys: OrderedDict[str, _Failures] = OrderedDict()
        self._lock = threading.Lock()

    def failure(self, key: str, now: float | None = None) -> float:
        """Count a failure of ``key``; returns the seconds it is now locked for (0.0 if not)."""
        now = time.monotonic() if now is None else now
        with self._lock:
            entry = self._keys.get(key)
            if entry is None:
                entry = self._keys[key] = _Failures(self.max_failures)
            self._keys.move_to_end(key)
            if entry.locked_until > now:
                return entry.locked_until - now
            while entry.times and entry.times[0] <= now - self.window:
                entry.times.popleft()
            entry.times.append(now)
            if len(entry.times) >= self.max_failures:
                entry.times.clear()
                entry.locked_until = now + self.lockout
            while len(self._keys) > self.max_keys:
                self._keys.popitem(last=False)
            return max(0.0, entry.locked_until - now)

    def success(self, key: str, now: float | None = None) -> None:
        """Forget the failures of ``key`` after a good login.

        A running lockout stays (use :meth:`reset` to lift one): a login is refused while
        its key is locked, so a success then can only come from another key's login, such
        as another user behind the same address.
        """
        now = time.monotonic() if now is None else now
        with self._lock:
            entry = self._keys.get(key)
            if entry is None:
                return
            if entry.locked_until > now:
                entry.times.clear()
            else:
                del self._keys[key]

    def reset(self, key: str) -> None:
        """Forget ``key`` entirely, lockout included (an admin unlocking an account)."""
        with self._lock:
            self._keys.pop(key, None)

    def locked(self, key: str, now: float | None = None) -> float:
        """Seconds ``key`` stays locked; 0.0 when it is not locked."""
        now = time.monotonic() if now is None else now
        with self._lock:
            entry = self._keys.get(key)
            if entry is None:
                return 0.0
            left = entry.locked_until - now
            if left > 0:
                return left
            if entry.locked_until and not entry.times:
                del self._keys[key]  # the lockout is over and nothing else is remembered
            return 0.0

    def __len__(self) -> int:
        return len(self._keys)


class RateLimit:
    """A token bucket per key: ``burst`` requests at once, then ``per_second`` on average.

    For endpoints that cost something to answer (login, API token checks, TOTP). In memory,
    thread-safe, at most ``max_keys`` keys (a forgotten key starts again with a full bucket).
    Times are :func:`time.monotonic` unless ``now`` is given.
    """

    def __init__(self, per_second: float, burst: int, max_keys: int = 100_000):
        self.per_second = _positive("per_second", per_second)
        self.burst = _positive_int("burst", burst)
        self.max_keys = _positive_int("max_keys", max_keys)
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()
        self._lock = threading.Lock()

    def allow(self, key: str, now: float | None = None) -> bool:
        """Whether a request for ``key`` may go ahead now (and take a token if so)."""
        return self.wait(key, now) == 0.0

    def wait(self, key: str, now: float | None = None) -> float:
        """0.0 when a request for ``key`` may go ahead now (a token is taken); otherwise the
        seconds until it may (nothing is taken): what a ``Retry-After`` header says."""
        now = time.monotonic() if now is None else now
        with self._lock:
            tokens, last = self._buckets.get(key, (float(self.burst), now))
            tokens, last, wait = take_token(tokens, last, now, self.per_second, self.burst)
            self._buckets[key] = (tokens, last)
            self._buckets.move_to_end(key)
            while len(self._buckets) > self.max_keys:
                self._buckets.popitem(last=False)
            return wait

    def __len__(self) -> int:
        return len(self._buckets)


# -- the same rules over counters kept elsewhere (the store, for every master) ----------------


@dataclasses.dataclass(frozen=True)
class Strikes:
    """A key's failed logins as a store keeps them: ``count`` failures since ``since`` (the
    first failure of the window), and the end of its lockout (``locked_until``, 0.0: none).
    Times are seconds on the callers' common clock (UTC epoch for the store)."""

    count: int = 0
    since: float = 0.0
    locked_until: float = 0.0

    def locked(self, now: float) -> float:
        """Seconds the key stays locked at ``now``; 0.0 when it is not."""
        return max(0.0, self.locked_until - now)

    def expires(self, window: float) -> float:
        """When nothing of this is worth keeping: the lockout's end or the window's."""
        return max(self.locked_until, self.since + window)


def count_failure(
    strikes: Strikes | None, now: float, max_failures: int, window: float, lockout: float
) -> Strikes:
    """``strikes`` after one more failed login at ``now``.

    ``max_failures`` failures within ``window`` seconds of the first lock the key for
    ``lockout`` seconds (and start the count again). While the key is locked a failure is not
    counted and does not extend the lockout: the caller refuses such logins unchecked."""
    s = strikes or Strikes()
    if s.locked(now):
        return s
    if s.count <= 0 or s.since <= now - window:
        count, since = 1, now
    else:
        count, since = s.count + 1, s.since
    if count >= max_failures:
        return Strikes(0, now, now + lockout)
    return Strikes(count, since, 0.0)


def forget_failures(strikes: Strikes, now: float) -> Strikes | None:
    """What is left of ``strikes`` after a good login: a running lockout (see
    :meth:`Throttle.success`), or nothing (None)."""
    return Strikes(0, now, strikes.locked_until) if strikes.locked(now) else None


def take_token(
    tokens: float, last: float, now: float, per_second: float, burst: int
) -> tuple[float, float, float]:
    """A token bucket's step: ``(tokens, last, wait)`` after a request at ``now`` to a bucket
    that held ``tokens`` at ``last``. ``wait`` is 0.0 when the request may go ahead (a token
    was taken), else the seconds until it may (nothing taken)."""
    # max(): a clock that steps back must not drain the bucket
    tokens = min(float(burst), tokens + max(0.0, now - last) * per_second)
    if tokens >= 1.0:
        return tokens - 1.0, max(now, last), 0.0
    return tokens, max(now, last), (1.0 - tokens) / per_second


def bucket_full_at(tokens: float, last: float, per_second: float, burst: int) -> float:
    """When a bucket left with ``tokens`` at ``last`` is full again: from then on a bucket
    nobody kept is the same as this one."""
    return last + max(0.0, burst - tokens) / per_second


#: The longest key :func:`user_key` and :func:`address_key` make.
LIMIT_KEY_MAX = 72


def _bounded(kind: str, value: str, limit: int) -> str:
    if len(value) <= limit and value.isascii() and value.isprintable():
        return f"{kind}:{value}"
    digest = hashlib.sha256(value.encode("utf-8", "surrogatepass")).hexdigest()[:40]
    return f"{kind}#{digest}"


def user_key(username: Any) -> str:
    """The throttling key of a username as typed (``user:alice``): a name no user could have
    (too long, odd characters) is counted under a hash of it, so keys stay short."""
    return _bounded("user", str(username), USERNAME_MAX)


def address_key(address: Any) -> str:
    """The throttling key of a client address: ``ip:10.0.0.1``; an IPv6 address counts with
    its whole /64 (one host owns a /64, and could otherwise make up addresses without end);
    anything that is no address is kept bounded like :func:`user_key`."""
    text = str(address)
    try:
        ip = ipaddress.ip_address(text)
    except ValueError:
        return _bounded("ip", text, 45)
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return f"ip:{ip.ipv4_mapped}"
        return f"ip:{ipaddress.ip_network((ip, 64), strict=False)}"
    return f"ip:{ip}"


class Expiring:
    """Values kept for a while in memory: ``put(key, value)``, ``get(key)`` until ``ttl``
    seconds have passed, then gone. At most ``max_keys`` (the oldest are forgotten first), so
    that nobody can fill memory with it. Thread-safe; times are :func:`time.monotonic`
    unless ``now`` is given.

    The web UI keeps in one the sessions ended by a logout that this engine already knows
    of (their ids, until the session cookie would have expired anyway; the store has them
    all).
    """

    def __init__(self, ttl: float, max_keys: int = 100_000):
        self.ttl = _positive("ttl", ttl)
        self.max_keys = _positive_int("max_keys", max_keys)
        self._items: OrderedDict[Any, tuple[float, Any]] = OrderedDict()
        self._lock = threading.Lock()

    def _expire(self, now: float) -> None:
        while self._items:
            key, (until, _value) = next(iter(self._items.items()))
            if until > now and len(self._items) <= self.max_keys:
                break
            del self._items[key]

    def put(self, key: Any, value: Any = True, now: float | None = None) -> None:
        now = time.monotonic() if now is None else now
        with self._lock:
            self._items.pop(key, None)
            self._items[key] = (now + self.ttl, value)
            self._expire(now)

    def get(self, key: Any, now: float | None = None) -> Any:
        """The value kept for ``key``; None when there is none or it expired."""
        now = time.monotonic() if now is None else now
        with self._lock:
            self._expire(now)
            found = self._items.get(key)
            return None if found is None else found[1]

    def pop(self, key: Any) -> Any:
        with self._lock:
            found = self._items.pop(key, None)
            return None if found is None else found[1]

    def __contains__(self, key: Any) -> bool:
        return self.get(key) is not None

    def __len__(self) -> int:
        return len(self._items)


# -- roles from Salt's eauth -------------------------------------------------------------------


def eauth_role(
    username: str, groups: list[str] | tuple[str, ...] | None, roles: dict[str, str]
) -> str | None:
    """The role of a user that Salt's eauth (PAM, LDAP, ...) let in, from ``fleet:ui:eauth:roles``:
    ``{"alice": "admin", "ops%": "operator", "*": "viewer"}``. The user's own entry wins;
    otherwise the most powerful role among the groups (``<group>%``, as in Salt's
    ``external_auth``) the user is in; otherwise ``*``; otherwise None (not let in)."""
    if username in roles:
        return check_role(roles[username])
    found = [roles[f"{group}%"] for group in (groups or ()) if f"{group}%" in roles]
    if found:
        return max((check_role(role) for role in found), key=ROLES.index)
    if "*" in roles:
        return check_role(roles["*"])
    return None
