"""Open a TLS connection to a kvmd device: verified, or pinned by fingerprint.

Every connection of the client (HTTP requests, the MJPEG stream, the ``/api/ws`` websocket)
starts here, so the same rule holds for all of them: the certificate is checked right after the
TLS handshake and before the caller writes anything. With ``fingerprint`` set the chain is not
verified (a PiKVM's certificate is self-signed) but the SHA-256 of the leaf certificate (DER)
must equal the pin, compared in constant time; a mismatch closes the socket and raises
:class:`~saltext_fleet.kvm.errors.KvmFingerprintError`, so no credential ever reaches a device
that is not the pinned one.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import socket
import ssl

from saltext_fleet.kvm.errors import (
    KvmConnectionError,
    KvmFingerprintError,
    KvmTimeoutError,
    KvmTlsError,
)
from saltext_fleet.kvm.options import KvmOptions, format_fingerprint

log = logging.getLogger(__name__)


def make_context(options: KvmOptions) -> ssl.SSLContext:
    """The client's SSL context: verifying (default), pinned, or (``verify: false``) neither."""
    if options.fingerprint or options.verify is False:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    elif isinstance(options.verify, str):
        try:
            context = ssl.create_default_context(cafile=options.verify)
        except (OSError, ssl.SSLError) as exc:
            raise KvmTlsError(
                options.host, f"cannot load CA bundle {options.verify!r}: {exc}"
            ) from exc
    else:
        context = ssl.create_default_context()
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    return context


def certificate_fingerprint(sock: ssl.SSLSocket) -> str:
    """SHA-256 of the peer's certificate (DER), 64 lowercase hex digits."""
    der = sock.getpeercert(binary_form=True)
    return hashlib.sha256(der or b"").hexdigest()


def open_tls(options: KvmOptions, context: ssl.SSLContext) -> ssl.SSLSocket:
    """A connected, checked TLS socket to the device, its timeout set to ``options.timeout``.

    Raises :class:`KvmConnectionError`, :class:`KvmTimeoutError`, :class:`KvmTlsError` or
    :class:`KvmFingerprintError`, each naming the device.
    """
    host = options.host
    try:
        raw = socket.create_connection(
            (options.server_hostname, options.port), timeout=options.connect_timeout
        )
    except TimeoutError as exc:
        raise KvmTimeoutError(
            host, f"connect to port {options.port} timed out after {options.connect_timeout:g} s"
        ) from exc
    except OSError as exc:
        raise KvmConnectionError(host, f"cannot connect to port {options.port}: {exc}") from exc
    try:
        sock = context.wrap_socket(raw, server_hostname=options.server_hostname)
    except ssl.SSLCertVerificationError as exc:
        raw.close()
        raise KvmTlsError(
            host,
            f"certificate verification failed ({exc.verify_message}); a PiKVM's certificate "
            "is self-signed: pin it with 'fingerprint' or give 'verify' its CA bundle",
        ) from exc
    except TimeoutError as exc:
        raw.close()
        raise KvmTimeoutError(
            host, f"TLS handshake timed out after {options.connect_timeout:g} s"
        ) from exc
    except (ssl.SSLError, OSError) as exc:
        raw.close()
        raise KvmTlsError(host, f"TLS handshake failed: {exc}") from exc

    if options.fingerprint:
        actual = certificate_fingerprint(sock)
        if not hmac.compare_digest(actual, options.fingerprint):
            sock.close()
            raise KvmFingerprintError(
                host, format_fingerprint(options.fingerprint), format_fingerprint(actual)
            )
    elif options.verify is False:
        log.warning("kvm %s: TLS certificate not verified (verify: false, no fingerprint)", host)
    sock.settimeout(options.timeout)
    return sock
