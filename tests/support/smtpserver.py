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
import email
import email.policy
import pathlib
import ssl
import threading
from email.message import EmailMessage

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword

from tests.support.sshd import free_port
from tests.support.tlscert import self_signed


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
            self.cert_file, key_file = self_signed(folder, "smtp")
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
