#!/bin/sh
# Check a saltext-fleet webhook by hand: SECRET, TIMESTAMP (X-Fleet-Timestamp) and SIGNATURE
# (X-Fleet-Signature) in the environment, the body exactly as received in the file $1.
expected="sha256=$({ printf '%s.' "$TIMESTAMP"; cat "$1"; } | openssl dgst -sha256 -hmac "$SECRET" -r | cut -d' ' -f1)"
[ "$expected" = "$SIGNATURE" ] || { echo "bad signature" >&2; exit 1; }
[ $(( $(date +%s) - TIMESTAMP )) -le 300 ] || { echo "stale timestamp" >&2; exit 1; }
echo "signature ok"
