"""The errors of the kvmd client: one family under :class:`KvmError`.

Every message starts with the device (``kvm <host>:``) and says what failed: the request
(``POST /api/atx/power``), then the HTTP status with kvmd's own error class and message
(``HTTP 409 AtxIsBusyError: Performing another ATX operation, please try again later``), a
timeout with its limit, a certificate that failed verification or did not match its pin. A
Salt adapter turns any of them into ``CommandExecutionError`` with ``raise ... from exc`` and
the operator reads which box and why.

kvmd answers an error as ``{"ok": false, "result": {"error": "<ExceptionClass>", "error_msg":
"..."}}`` (``kvmd/htserver.py``, ``make_json_exception``) with the status its server wrapper
picks: 400 for ``ValidatorError`` and ``OperationError`` subclasses, 409 for ``IsBusyError``
subclasses, 401/403/503 for its ``HttpError`` subclasses. :func:`http_error` maps a status to
the class here, so a caller can catch "busy, try later" apart from "bad argument".
"""

from __future__ import annotations

from saltext_fleet.core.errors import FleetError


class KvmError(FleetError):
    """A kvmd device could not do what was asked; the message names the device."""

    def __init__(self, host: str, what: str) -> None:
        self.host = host
        self.what = what
        super().__init__(f"kvm {host}: {what}")


class KvmConfigError(KvmError, ValueError):
    """A client option is missing or malformed; the message names the option."""


class KvmArgumentError(KvmError, ValueError):
    """An action was asked with a bad argument (an unknown power action, a malformed image
    name or sha256, a source that cannot be read); nothing was sent to the device."""


class KvmImageMismatchError(KvmError):
    """An image's SHA-256 is not the one the caller expected: it was refused before any byte
    of it reached the device (``expected`` and ``actual`` are 64 lowercase hex digits)."""

    def __init__(self, host: str, name: str, expected: str, actual: str) -> None:
        self.name = name
        self.expected = expected
        self.actual = actual
        super().__init__(
            host,
            f"image {name!r}: sha256 mismatch: expected {expected}, got {actual}; "
            "refused, nothing was uploaded",
        )


class KvmRateLimitError(KvmError):
    """A device's rate limit refused an action before anything was sent to it: a power action
    within ``fleet:kvm:power_interval`` of the last one, or an ISO action while another runs.
    ``kind`` is ``power`` or ``media``; ``retry_at`` (an aware datetime, or None while another
    ISO action runs) says when to try again, and the message says it too."""

    def __init__(self, host: str, what: str, kind: str, retry_at=None) -> None:
        self.kind = kind
        self.retry_at = retry_at
        super().__init__(host, what)


class KvmConnectionError(KvmError, ConnectionError):
    """The device could not be reached (refused, unreachable, closed the connection)."""


class KvmWsClosedError(KvmConnectionError):
    """The device closed the ``/api/ws`` websocket (``code`` and ``reason`` from its close frame,
    ``None`` when the connection just ended)."""

    def __init__(self, host: str, code: int | None, reason: str = "") -> None:
        self.code = code
        self.reason = reason
        detail = f"code {code}" if code is not None else "no close frame"
        super().__init__(host, f"websocket closed ({detail}{': ' + reason if reason else ''})")


class KvmTimeoutError(KvmError, TimeoutError):
    """The device did not answer within the configured time."""


class KvmTlsError(KvmError):
    """The device's TLS certificate failed verification."""


class KvmFingerprintError(KvmTlsError):
    """The device's certificate does not match the pinned SHA-256 fingerprint.

    Raised right after the TLS handshake, before a single byte of HTTP (so before any
    credential) is sent.
    """

    def __init__(self, host: str, expected: str, actual: str) -> None:
        self.expected = expected
        self.actual = actual
        super().__init__(
            host,
            f"certificate fingerprint mismatch: pinned sha256 {expected}, "
            f"device presented {actual}; nothing was sent",
        )


class KvmProtocolError(KvmError):
    """The device answered something that is not kvmd's API (bad JSON, bad websocket)."""


class KvmHttpError(KvmError):
    """kvmd answered with an error status.

    ``status`` is the HTTP status, ``error`` kvmd's exception class name (``""`` when the body
    was not kvmd's JSON envelope, e.g. nginx's own error page) and ``error_msg`` its message.
    """

    def __init__(
        self, host: str, request: str, status: int, error: str = "", error_msg: str = ""
    ) -> None:
        self.request = request
        self.status = status
        self.error = error
        self.error_msg = error_msg
        detail = f"HTTP {status}"
        if error:
            detail += f" {error}"
        if error_msg:
            detail += f": {error_msg}"
        super().__init__(host, f"{request}: {detail}")


class KvmBadRequestError(KvmHttpError, ValueError):
    """400: kvmd refused an argument (``ValidatorError``) or an operation in this state
    (``OperationError`` subclasses such as ``MsdUnknownImageError``)."""


class KvmAuthError(KvmHttpError):
    """401 (no credentials) or 403 (wrong credentials, expired session)."""


class KvmBusyError(KvmHttpError):
    """409: another ATX or MSD operation is in progress; try again later."""


class KvmUnavailableError(KvmHttpError):
    """503: e.g. a snapshot while the video has no signal (without ``allow_offline``)."""


_BY_STATUS: dict[int, type[KvmHttpError]] = {
    400: KvmBadRequestError,
    401: KvmAuthError,
    403: KvmAuthError,
    409: KvmBusyError,
    503: KvmUnavailableError,
}


def http_error(
    host: str, request: str, status: int, error: str = "", error_msg: str = ""
) -> KvmHttpError:
    """The :class:`KvmHttpError` subclass for ``status`` (the base class for others)."""
    cls = _BY_STATUS.get(status, KvmHttpError)
    return cls(host, request, status, error, error_msg)
