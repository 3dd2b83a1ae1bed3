"""How to reach one kvmd device: one typed, validated set of options.

The Salt adapters (proxy, execution module, engine poller) read a device's options from wherever
they keep them (pillar, proxy config, the store) and call :func:`load_options` once; everything
below works on the resulting :class:`KvmOptions` and never digs into raw dicts.

.. code-block:: yaml

    host: pikvm-1.lab.example        # name or address; [v6] in brackets
    port: 443
    user: admin
    password: s3cret
    totp_secret: JBSWY3DPEHPK3PXP    # only when the device has 2FA on (/etc/kvmd/totp.secret)
    auth: session                    # session (POST /api/auth/login, cookie) | headers
    verify: true                     # true | false | path to a CA bundle
    fingerprint: "AB:CD:..."         # SHA-256 of the device's certificate; replaces verify
    connect_timeout: 5               # seconds for TCP connect + TLS handshake
    timeout: 15                      # seconds any single read or write may take

A PiKVM ships a self-signed certificate, so either give ``verify`` the CA that signed a real
certificate, or pin the self-signed one by ``fingerprint`` (``openssl x509 -in
/etc/kvmd/nginx/ssl/server.crt -noout -fingerprint -sha256`` on the device). ``verify: false``
without a pin accepts any certificate and is logged as a warning on every connection.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import re
from collections.abc import Mapping
from typing import Any

from saltext_fleet.kvm.errors import KvmConfigError

AUTH_MODES = ("session", "headers")

_HOST_RE = re.compile(r"^(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9]([A-Za-z0-9.-]{0,252}))$")
_USER_RE = re.compile(r"^[a-z_]([a-z0-9@._-]*[a-z0-9_-])?$")  # kvmd/validators/auth.py
_PASSWD_RE = re.compile(r"^[\x20-\x7e]*\Z")  # kvmd/validators/auth.py: printable ASCII


@dataclasses.dataclass(frozen=True)
class KvmOptions:
    """Everything the client needs to talk to one device. Build it with :func:`load_options`."""

    host: str
    password: str = dataclasses.field(repr=False)
    user: str = "admin"
    port: int = 443
    totp_secret: str | None = dataclasses.field(default=None, repr=False)
    auth: str = "session"
    verify: bool | str = True
    fingerprint: str | None = None
    connect_timeout: float = 5.0
    timeout: float = 15.0

    @property
    def netloc(self) -> str:
        """``host`` or ``host:port`` as it goes into a URL and the ``Host`` header."""
        return self.host if self.port == 443 else f"{self.host}:{self.port}"

    @property
    def server_hostname(self) -> str:
        """The name TLS checks the certificate against (brackets of an IPv6 address removed)."""
        return self.host.strip("[]")


def normalize_fingerprint(value: str) -> str:
    """A SHA-256 fingerprint as 64 lowercase hex digits.

    Accepts ``ab12...``, ``AB:12:...`` and openssl's whole line ``sha256 Fingerprint=AB:12:...``;
    raises ``ValueError`` for anything that is not 32 bytes of hex.
    """
    text = value.strip()
    if "=" in text:
        label, text = text.split("=", 1)
        if "256" not in label:
            raise ValueError(f"not a SHA-256 fingerprint: {value!r}")
    text = text.replace(":", "").replace(" ", "").lower()
    if not re.fullmatch(r"[0-9a-f]{64}", text):
        raise ValueError(f"a SHA-256 fingerprint is 64 hex digits (colons allowed), got {value!r}")
    return text


def format_fingerprint(hex_digest: str) -> str:
    """``AB:12:...``: the way openssl and browsers print a fingerprint."""
    return ":".join(hex_digest[i : i + 2] for i in range(0, len(hex_digest), 2)).upper()


def _timeout(host: str, name: str, value: Any, default: float) -> float:
    if value is None:
        return default
    if isinstance(value, bool):
        raise KvmConfigError(host, f"option {name!r}: seconds expected, got {value!r}")
    try:
        seconds = float(value)
    except (TypeError, ValueError):
        raise KvmConfigError(host, f"option {name!r}: seconds expected, got {value!r}") from None
    if not 0 < seconds <= 3600:
        raise KvmConfigError(host, f"option {name!r}: must be > 0 and <= 3600 s, got {value!r}")
    return seconds


def _check_totp_secret(host: str, secret: str) -> str:
    cleaned = secret.replace(" ", "").upper()
    try:
        base64.b32decode(cleaned + "=" * (-len(cleaned) % 8))
    except (binascii.Error, ValueError):
        raise KvmConfigError(host, "option 'totp_secret': not a base32 secret") from None
    return cleaned


def load_options(raw: Mapping[str, Any]) -> KvmOptions:
    """Validate one device's options into :class:`KvmOptions`.

    Raises :class:`~saltext_fleet.kvm.errors.KvmConfigError` naming the first bad option.
    """
    known = {f.name for f in dataclasses.fields(KvmOptions)}
    host = str(raw.get("host") or "").strip()
    label = host or "?"
    unknown = sorted(set(raw) - known)
    if unknown:
        raise KvmConfigError(label, f"unknown option(s): {', '.join(map(str, unknown))}")
    if not host or not _HOST_RE.match(host):
        raise KvmConfigError(label, f"option 'host': a host name or address, got {host!r}")

    port = raw.get("port", 443)
    if isinstance(port, bool) or not isinstance(port, (int, str)) or not str(port).isdigit():
        raise KvmConfigError(host, f"option 'port': a TCP port number, got {port!r}")
    port = int(port)
    if not 0 < port < 65536:
        raise KvmConfigError(host, f"option 'port': a TCP port number, got {port!r}")

    user = raw.get("user", "admin")
    if not isinstance(user, str) or len(user) > 128 or not _USER_RE.match(user):
        raise KvmConfigError(host, f"option 'user': not a kvmd user name: {user!r}")
    password = raw.get("password")
    if not isinstance(password, str) or not password:
        raise KvmConfigError(host, "option 'password': required")
    if not _PASSWD_RE.match(password):
        # kvmd refuses anything else with a ValidatorError: say so before asking it.
        raise KvmConfigError(host, "option 'password': kvmd accepts printable ASCII only")

    totp_secret = raw.get("totp_secret") or None
    if totp_secret is not None:
        if not isinstance(totp_secret, str):
            raise KvmConfigError(host, "option 'totp_secret': not a base32 secret")
        totp_secret = _check_totp_secret(host, totp_secret)

    auth = raw.get("auth", "session")
    if auth not in AUTH_MODES:
        raise KvmConfigError(host, f"option 'auth': one of {', '.join(AUTH_MODES)}, got {auth!r}")

    verify = raw.get("verify", True)
    if not isinstance(verify, (bool, str)) or verify == "":
        raise KvmConfigError(host, f"option 'verify': true, false or a CA bundle path: {verify!r}")

    fingerprint = raw.get("fingerprint") or None
    if fingerprint is not None:
        try:
            fingerprint = normalize_fingerprint(str(fingerprint))
        except ValueError as exc:
            raise KvmConfigError(host, f"option 'fingerprint': {exc}") from None

    return KvmOptions(
        host=host,
        port=port,
        user=user,
        password=password,
        totp_secret=totp_secret,
        auth=auth,
        verify=verify,
        fingerprint=fingerprint,
        connect_timeout=_timeout(host, "connect_timeout", raw.get("connect_timeout"), 5.0),
        timeout=_timeout(host, "timeout", raw.get("timeout"), 15.0),
    )
