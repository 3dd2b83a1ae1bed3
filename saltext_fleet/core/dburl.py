"""The hosts of a PostgreSQL URL, libpq's multi-host forms included (pure: no database).

A replicated PostgreSQL is reached through libpq's own failover: several hosts in one URL, and
``target_session_attrs`` saying which kind of server to settle on. Three spellings are
accepted and brought to one (libpq's ``host=h1,h2&port=p1,p2``, which SQLAlchemy hands to
psycopg as it is):

.. code-block:: text

    postgresql+psycopg://fleet@/fleet?host=db1:5432,db2:5432&target_session_attrs=read-write
    postgresql+psycopg://fleet@/fleet?host=db1:5432&host=db2:5432&target_session_attrs=read-write
    postgresql+psycopg://fleet@/fleet?host=db1,db2&port=5432,5433&target_session_attrs=read-write

(``port=5432`` alone is every host's port). A host is a name, an IPv4 address, an IPv6
address (``[::1]:5432`` when it has a port) or a Unix socket folder (``/run/postgresql``).
"""

from __future__ import annotations

import dataclasses
import re
from urllib.parse import parse_qsl, urlsplit

from saltext_fleet.core.errors import FleetError

#: libpq's values of ``target_session_attrs``.
TARGET_SESSION_ATTRS = ("any", "read-write", "read-only", "primary", "standby", "prefer-standby")
#: The ones that only ever settle on a server that takes writes.
WRITABLE = ("read-write", "primary")

#: SQLSTATEs that mean "this server cannot take the work now", not "bad record": a standby
#: that is read-only (25006: a failover under way, or a URL that reached the wrong host), a
#: server shutting down or crashed (57P01-57P03).
AWAY_SQLSTATES = ("25006", "57P01", "57P02", "57P03")

_HOSTNAME = re.compile(r"^[A-Za-z0-9_]([A-Za-z0-9_.-]*[A-Za-z0-9_])?$")
_IPV6 = re.compile(r"^[0-9A-Fa-f:.]+(%[A-Za-z0-9_.-]+)?$")


class DbUrlError(FleetError, ValueError):
    """A database URL whose hosts, ports or ``target_session_attrs`` cannot be used."""


@dataclasses.dataclass(frozen=True)
class Endpoints:
    """Where a PostgreSQL URL connects: ``hosts`` as ``(host, port or None)`` pairs (an empty
    tuple: libpq's defaults), and ``target_session_attrs`` (None: not given, libpq's ``any``)."""

    hosts: tuple[tuple[str, int | None], ...]
    target_session_attrs: str | None
    #: True when the hosts came from the query (``?host=``), False from ``//user@host:port/``
    in_query: bool

    @property
    def multi(self) -> bool:
        return len(self.hosts) > 1


def _port(value: str, where: str) -> int:
    if not value.isdigit() or not 1 <= int(value) <= 65535:
        raise DbUrlError(f"{value!r} in {where} is not a TCP port (1-65535)")
    return int(value)


def _host(value: str, where: str) -> tuple[str, int | None]:
    """``(host, port)`` of one ``host=`` item: ``name``, ``name:port``, ``[v6]:port``, ``v6``,
    ``/socket/dir``."""
    item = value.strip()
    if not item:
        raise DbUrlError(f"an empty host in {where}")
    if item.startswith("/"):
        return item, None
    if item.startswith("["):
        addr, sep, rest = item[1:].partition("]")
        if not sep or not _IPV6.match(addr) or (rest and not rest.startswith(":")):
            raise DbUrlError(f"{item!r} in {where} is not [IPv6 address] or [IPv6 address]:port")
        return addr, (_port(rest[1:], where) if rest else None)
    if item.count(":") > 1:  # a bare IPv6 address (no port: brackets are needed for one)
        if not _IPV6.match(item):
            raise DbUrlError(f"{item!r} in {where} is not a host name or address")
        return item, None
    name, sep, port = item.partition(":")
    if not _HOSTNAME.match(name):
        raise DbUrlError(f"{name!r} in {where} is not a host name or address")
    return name, (_port(port, where) if sep else None)


def endpoints(url: str) -> Endpoints | None:
    """The hosts of a PostgreSQL ``url`` (None for any other database). Raises
    :class:`DbUrlError`, whose message never holds the URL's password, when they cannot be
    used."""
    scheme = url.split("://", 1)[0] if "://" in url else ""
    if not scheme.startswith("postgres"):
        return None
    parts = urlsplit(url)
    query = parse_qsl(parts.query, keep_blank_values=True)
    hosts = [v for k, v in query if k == "host"]
    ports = [v for k, v in query if k == "port"]
    attrs = [v for k, v in query if k == "target_session_attrs"]
    if len(attrs) > 1:
        raise DbUrlError("target_session_attrs is given more than once")
    target = attrs[0] if attrs else None
    if target is not None and target not in TARGET_SESSION_ATTRS:
        raise DbUrlError(
            f"target_session_attrs={target!r} is not one of {', '.join(TARGET_SESSION_ATTRS)}"
        )
    try:
        net_host, net_port = parts.hostname, parts.port
    except ValueError as exc:  # a port that is not a number
        raise DbUrlError(f"the port after the host is not a TCP port: {exc}") from None
    if not hosts:
        if ports:
            raise DbUrlError("port= without host= (put the port after the host instead)")
        found = ((net_host, net_port),) if net_host else ()
        return Endpoints(found, target, in_query=False)
    if net_host or net_port:
        raise DbUrlError(
            "the hosts are given twice: after '@' and as ?host=; give them one way "
            "(for several hosts: ...@/dbname?host=h1:5432,h2:5432)"
        )
    if len(hosts) > 1:  # SQLAlchemy's form: host=h1:p1&host=h2:p2
        if ports:
            raise DbUrlError("use host=h1:p1&host=h2:p2 or host=h1,h2&port=p1,p2, not both forms")
        if any("," in h for h in hosts):
            raise DbUrlError("use host=h1,h2 or host=h1&host=h2, not both forms")
        items = [_host(h, "host=") for h in hosts]
    else:
        items = [_host(h, "host=") for h in hosts[0].split(",")]
    if ports:
        if len(ports) > 1:
            raise DbUrlError("port= is given more than once (list the ports as port=p1,p2)")
        if any(port is not None for _, port in items):
            raise DbUrlError("the ports are given twice: as host=h:port and as port=")
        listed = ports[0].split(",")
        if len(listed) == 1:
            listed = listed * len(items)  # libpq: one port for every host
        if len(listed) != len(items):
            raise DbUrlError(f"{len(items)} hosts but {len(listed)} ports in host= and port=")
        items = [
            (host, _port(port, "port=") if port else None)
            for (host, _), port in zip(items, listed, strict=True)
        ]
    return Endpoints(tuple(items), target, in_query=True)


def check_writable(found: Endpoints | None) -> None:
    """Several hosts for a writer need a ``target_session_attrs`` that settles on the primary:
    with libpq's default (``any``) the writer could settle on a standby."""
    if found is None or not found.multi or found.target_session_attrs in WRITABLE:
        return
    raise DbUrlError(
        f"{len(found.hosts)} hosts need target_session_attrs=read-write (or primary), so that "
        f"writes go to the primary; got {found.target_session_attrs or 'none (libpq: any)'}"
    )


def canonical_query(found: Endpoints) -> dict[str, str]:
    """``{"host": "h1,h2", "port": "p1,p2"}``: libpq's own form of the hosts in the query."""
    out = {"host": ",".join(host for host, _ in found.hosts)}
    if any(port is not None for _, port in found.hosts):
        out["port"] = ",".join("" if port is None else str(port) for _, port in found.hosts)
    return out


def redact(url: str) -> str:
    """``url`` with its password (after the user, or ``?password=``) shown as ``***``."""
    if "://" not in url:
        return url
    scheme, rest = url.split("://", 1)
    head, sep, query = rest.partition("?")
    if "@" in head:
        creds, host = head.rsplit("@", 1)
        if ":" in creds:
            head = f"{creds.split(':', 1)[0]}:***@{host}"
    if sep:
        pairs = []
        for pair in query.split("&"):
            key, eq, _ = pair.partition("=")
            pairs.append(f"{key}=***" if eq and key.lower() == "password" else pair)
        query = "&".join(pairs)
    return f"{scheme}://{head}{sep}{query}"
