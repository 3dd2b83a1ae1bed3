"""A real SMTP server on loopback (aiosmtpd), owned by the test, for the email alerts.

``SmtpServer`` runs aiosmtpd's ``Controller`` in its thread on ``127.0.0.1``. With
``tls=True`` it offers STARTTLS with a self-signed certificate made here (``cert_file`` is the
file a client trusts as its ``ca_file``) and requires it before AUTH and mail; with
``users`` it requires AUTH (PLAIN/LOGIN) against that ``{username: password}`` table. Every
accepted message is kept in ``messages`` (envelope and parsed ``email.message``); every login
attempt in ``logins``.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import email
import email.policy
import ipaddress
import pathlib
import socket
import ssl
import threading
from email.message import EmailMessage

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID


def make_self_signed(folder: pathlib.Path) -> tuple[pathlib.Path, pathlib.Path]:
    """``(cert_file, key_file)``: a self-signed P-256 certificate for 127.0.0.1 and localhost."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "fleet test smtp")])
    now = dt.datetime.now(dt.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_file = folder / "smtp-cert.pem"
    key_file = folder / "smtp-key.pem"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_file, key_file


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclasses.dataclass
class Received:
    mail_from: str
    rcpt_tos: list[str]
    message: EmailMessage
    raw: bytes
    tls: bool
    login: str | None


class _Handler:
    def __init__(self, server: SmtpServer):
        self.server = server

    async def handle_DATA(self, smtp, session, envelope):
        raw = envelope.original_content or envelope.content
        message = email.message_from_bytes(raw, policy=email.policy.default)
        login = session.auth_data.login.decode() if session.auth_data else None
        with self.server.lock:
            self.server.messages.append(
                Received(
                    envelope.mail_from,
                    list(envelope.rcpt_tos),
                    message,
                    raw,
                    session.ssl is not None,
                    login,
                )
            )
        return "250 Message accepted for delivery"


class SmtpServer:
    def __init__(
        self,
        folder: pathlib.Path,
        *,
        tls: bool = True,
        users: dict[str, str] | None = None,
    ):
        self.messages: list[Received] = []
        self.logins: list[tuple[str, bool]] = []
        self.lock = threading.Lock()
        self.users = dict(users or {})
        self.cert_file = None
        kwargs = {}
        if tls:
            self.cert_file, key_file = make_self_signed(folder)
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            context.load_cert_chain(self.cert_file, key_file)
            kwargs.update(tls_context=context, require_starttls=True)
        if users is not None:
            kwargs.update(
                authenticator=self._authenticate, auth_required=True, auth_require_tls=tls
            )
        self.port = free_port()
        self.controller = Controller(
            _Handler(self), hostname="127.0.0.1", port=self.port, ready_timeout=10, **kwargs
        )

    def _authenticate(self, server, session, envelope, mechanism, auth_data):
        if not isinstance(auth_data, LoginPassword):
            return AuthResult(success=False, handled=False)
        login, password = auth_data.login.decode(), auth_data.password.decode()
        ok = self.users.get(login) == password
        with self.lock:
            self.logins.append((login, ok))
        return AuthResult(success=ok, handled=False, auth_data=auth_data if ok else None)

    def __enter__(self) -> SmtpServer:
        self.controller.start()
        return self

    def __exit__(self, *exc) -> None:
        self.controller.stop()
