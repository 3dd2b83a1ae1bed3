"""Check a saltext-fleet alert webhook: standard library only, copy it into your receiver.

``verify(secret, headers, body)`` returns the alert (a dict) when the request was signed with
``secret`` less than ``tolerance`` seconds ago, and raises ``ValueError`` otherwise. Pass the
body exactly as received (bytes), before any JSON parsing.
"""

import hashlib
import hmac
import json
import time


def verify(secret: bytes, headers: dict, body: bytes, tolerance: int = 300) -> dict:
    headers = {name.lower(): value for name, value in headers.items()}
    timestamp = headers.get("x-fleet-timestamp", "")
    signature = headers.get("x-fleet-signature", "")
    if not timestamp.isdigit() or not signature:
        raise ValueError("not a signed fleet webhook")
    if abs(time.time() - int(timestamp)) > tolerance:
        raise ValueError("stale timestamp: a replay, or a clock far off")
    mac = hmac.new(secret, timestamp.encode() + b"." + body, hashlib.sha256)
    if not hmac.compare_digest("sha256=" + mac.hexdigest(), signature):
        raise ValueError("bad signature")
    return json.loads(body)
