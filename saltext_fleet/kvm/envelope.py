"""kvmd's JSON envelope, read one way for every answer (HTTP and the websocket upgrade).

kvmd wraps every JSON answer as ``{"ok": <status == 200>, "result": {...}}`` and every error as
``{"ok": false, "result": {"error": "<ExceptionClass>", "error_msg": "<message>"}}``
(``make_json_response`` / ``make_json_exception`` in ``kvmd/htserver.py``). Errors that never
reach kvmd (nginx's ``auth_request`` in front of ``/streamer``, a 502 while kvmd restarts) come
as nginx's HTML page: the status is kept and the page's title becomes the message.
"""

from __future__ import annotations

import json
import re

from saltext_fleet.kvm.errors import KvmProtocolError, http_error

_TITLE = re.compile(rb"<title>(.*?)</title>", re.IGNORECASE | re.DOTALL)


def _error_fields(status: int, body: bytes) -> tuple[str, str]:
    try:
        doc = json.loads(body)
    except ValueError:
        title = _TITLE.search(body)
        text = (title.group(1) if title else body[:120]).decode("utf-8", "replace").strip()
        return "", " ".join(text.split())
    result = doc.get("result") if isinstance(doc, dict) else None
    if isinstance(result, dict):
        return str(result.get("error", "")), str(result.get("error_msg", ""))
    return "", ""


def decode(host: str, request: str, status: int, body: bytes) -> dict:
    """The ``result`` of a 200 answer, or the fitting :class:`KvmHttpError` raised.

    ``request`` is ``"METHOD /path"`` for the message. A 200 whose body is not kvmd's envelope
    raises :class:`KvmProtocolError`.
    """
    if status != 200:
        error, error_msg = _error_fields(status, body)
        raise http_error(host, request, status, error, error_msg)
    try:
        doc = json.loads(body)
    except ValueError as exc:
        raise KvmProtocolError(host, f"{request}: answer is not JSON: {body[:80]!r}") from exc
    if not isinstance(doc, dict) or "ok" not in doc or not isinstance(doc.get("result"), dict):
        raise KvmProtocolError(host, f"{request}: answer is not kvmd's envelope: {body[:80]!r}")
    if doc["ok"] is not True:
        result = doc["result"]
        raise http_error(
            host, request, status, str(result.get("error", "")), str(result.get("error_msg", ""))
        )
    return doc["result"]


def raise_for_status(host: str, request: str, status: int, body: bytes) -> None:
    """Raise the fitting :class:`KvmHttpError` for a non-200 answer of a non-JSON endpoint
    (a snapshot, the MJPEG stream); nothing for 200."""
    if status != 200:
        error, error_msg = _error_fields(status, body)
        raise http_error(host, request, status, error, error_msg)
