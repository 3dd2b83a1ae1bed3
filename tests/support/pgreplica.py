"""Two real PostgreSQL clusters with streaming replication, owned by a test.

A primary (``wal_level=replica``, a physical replication slot, ``synchronous_standby_names``
naming the standby, so that a commit is acknowledged only once the standby has it) and a
standby made from it with ``pg_basebackup -R``, on free ports, in a temporary folder owned by
the ``postgres`` user; the servers run as that user (``runuser``). Needs root and PostgreSQL's
server binaries (:data:`PG_BIN`). :func:`replicated_pair` removes everything, even when the
test fails.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import pwd
import shutil
import subprocess
import tempfile
import time

import psycopg

from tests.support.sshd import free_port

PG_BIN = os.environ.get("FLEET_PG_BIN", "/usr/lib/postgresql/15/bin")
#: the standby's name (its application_name, by cluster_name) and its replication slot
STANDBY = "fleet_standby"


def available() -> str | None:
    """Why the clusters cannot be made here (None: they can)."""
    if os.geteuid() != 0:
        return "needs root (the clusters run as the postgres user)"
    if not os.path.exists(os.path.join(PG_BIN, "initdb")):
        return f"no PostgreSQL server binaries in {PG_BIN}"
    try:
        pwd.getpwnam("postgres")
    except KeyError:
        return "no postgres user"
    return None


def as_postgres(*argv: str, timeout: float = 60, check: bool = True) -> str:
    """Run a PostgreSQL program as the ``postgres`` user; its output."""
    done = subprocess.run(
        ["runuser", "-u", "postgres", "--", *argv],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        cwd="/",
    )
    if check and done.returncode != 0:
        raise RuntimeError(f"{argv[0]} failed ({done.returncode}): {done.stdout}{done.stderr}")
    return done.stdout


def _bin(name: str) -> str:
    return os.path.join(PG_BIN, name)


@dataclasses.dataclass
class Cluster:
    name: str
    datadir: str
    port: int

    def pg_ctl(self, *args: str, check: bool = True) -> str:
        return as_postgres(_bin("pg_ctl"), "-D", self.datadir, *args, check=check)

    def start(self) -> None:
        self.pg_ctl("-l", f"{self.datadir}.log", "-w", "-t", "60", "start")

    def crash(self) -> None:
        """``pg_ctl stop -m immediate``: the server dies without a checkpoint, like a crash."""
        self.pg_ctl("-w", "-m", "immediate", "stop")

    def stop(self) -> None:
        self.pg_ctl("-w", "-m", "immediate", "stop", check=False)

    def promote(self) -> None:
        self.pg_ctl("-w", "-t", "60", "promote")

    def admin_url(self, database: str = "postgres") -> str:
        return f"host=127.0.0.1 port={self.port} user=postgres dbname={database}"

    def query(self, sql: str, database: str = "postgres", params=None):
        with psycopg.connect(self.admin_url(database), autocommit=True, connect_timeout=5) as c:
            cur = c.execute(sql, params)
            return cur.fetchall() if cur.description else None

    def log(self) -> str:
        try:
            with open(f"{self.datadir}.log", encoding="utf-8", errors="replace") as fh:
                return fh.read()[-4000:]
        except OSError:
            return ""


@dataclasses.dataclass
class Pair:
    root: str
    primary: Cluster
    standby: Cluster

    def url(self, database: str, target_session_attrs: str | None = "read-write") -> str:
        """The store's multi-host URL: the primary, then the standby."""
        url = (
            f"postgresql+psycopg://postgres@/{database}"
            f"?host=127.0.0.1:{self.primary.port},127.0.0.1:{self.standby.port}"
        )
        if target_session_attrs:
            url += f"&target_session_attrs={target_session_attrs}"
        return url

    def sync_state(self) -> list:
        """``[(application_name, state, sync_state)]`` of the primary's standbys."""
        return self.primary.query(
            "SELECT application_name, state, sync_state FROM pg_stat_replication"
        )


def _conf(path: str, **settings) -> None:
    """Append settings to a postgresql.conf (the last line of a setting wins)."""
    with open(path, "a", encoding="utf-8") as fh:
        for key, value in settings.items():
            fh.write(f"{key} = '{value}'\n" if isinstance(value, str) else f"{key} = {value}\n")


def _wait(what: str, check, timeout: float = 30.0):
    deadline = time.monotonic() + timeout
    while True:
        try:
            value = check()
        except psycopg.Error:
            value = None
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out waiting for {what}")
        time.sleep(0.1)


@contextlib.contextmanager
def replicated_pair(database: str = "fleet"):
    """A running primary and synchronous standby with ``database`` made on the primary
    (and replicated); both stopped and their folder removed afterwards."""
    root = tempfile.mkdtemp(prefix="fleet-pgrep-", dir="/tmp")
    postgres = pwd.getpwnam("postgres")
    os.chown(root, postgres.pw_uid, postgres.pw_gid)
    os.chmod(root, 0o700)
    primary = Cluster("primary", os.path.join(root, "primary"), free_port())
    standby = Cluster("standby", os.path.join(root, "standby"), free_port())
    pair = Pair(root, primary, standby)
    try:
        as_postgres(
            _bin("initdb"),
            "-D",
            primary.datadir,
            "-U",
            "postgres",
            "--auth=trust",
            "-E",
            "UTF8",
            "--no-sync",
            "--no-instructions",
        )
        common = {
            "listen_addresses": "127.0.0.1",
            "unix_socket_directories": root,
            "shared_buffers": "16MB",
            "max_connections": 40,
            "fsync": "off",  # the test kills processes, not the machine
            "wal_level": "replica",
            "max_wal_senders": 4,
            "max_replication_slots": 4,
            "hot_standby": "on",
            "wal_receiver_status_interval": "1s",
        }
        _conf(
            os.path.join(primary.datadir, "postgresql.conf"),
            port=primary.port,
            synchronous_standby_names=STANDBY,
            **common,
        )
        primary.start()
        primary.query("SELECT pg_create_physical_replication_slot(%s)", params=(STANDBY,))
        as_postgres(
            _bin("pg_basebackup"),
            "-h",
            "127.0.0.1",
            "-p",
            str(primary.port),
            "-U",
            "postgres",
            "-D",
            standby.datadir,
            "-R",
            "-S",
            STANDBY,
            "-X",
            "stream",
            "--no-sync",
        )
        # The standby's own settings win (the last line of a setting counts). Once promoted
        # it has no standby of its own: it must not wait for one (a real deployment would
        # name its next standby here).
        _conf(
            os.path.join(standby.datadir, "postgresql.conf"),
            port=standby.port,
            cluster_name=STANDBY,
            synchronous_standby_names="",
        )
        standby.start()
        _wait(
            "the standby to stream synchronously",
            lambda: ("fleet_standby", "streaming", "sync") in [tuple(r) for r in pair.sync_state()],
        )
        primary.query(f'CREATE DATABASE "{database}"')
        _wait(
            "the database on the standby",
            lambda: standby.query(
                "SELECT 1 FROM pg_database WHERE datname = %s", params=(database,)
            ),
        )
        yield pair
    finally:
        for cluster in (standby, primary):
            if os.path.isdir(cluster.datadir):
                cluster.stop()
        shutil.rmtree(root, ignore_errors=True)
