"""The ``saltext-fleet`` command: master config snippet, config check, the store's schema, the
web UI's users, and the demo fleet.

A master configuration file a command reads (``-c``, ``config --check``) must be there and be
readable YAML: otherwise the command names the file and what is wrong with it, exits 2 and does
nothing else (Salt's own reader would fall back to its defaults, and so to another database).
"""

from __future__ import annotations

import argparse
import getpass
import logging
import os
import secrets
import sys

from saltext_fleet import __version__, config, snippet

# The store (SQLAlchemy and Alembic, 0.4 s to import) and Salt (0.2 s) are imported inside the
# commands that use them, so that `saltext-fleet --help`, `config` and `demo` start at once
# (0.05 s to import this module).

#: The master configuration read when ``-c`` is not given (Salt's own default and variable).
DEFAULT_MASTER_CONFIG = "/etc/salt/master"
MASTER_CONFIG_VARIABLE = "SALT_MASTER_CONFIG"


def default_master_config() -> str:
    return os.environ.get(MASTER_CONFIG_VARIABLE) or DEFAULT_MASTER_CONFIG


class _Collect(logging.Handler):
    """The messages Salt's config reader logs before it gives up (it exits instead of raising)."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


def read_master_config(path: str) -> dict:
    """The master's opts from ``path``, read the way ``salt-master`` reads it (the files of
    ``master.d`` and ``include`` too). :class:`~saltext_fleet.config.ConfigFileError` when the
    file, or one it pulls in, is missing, unreadable or not valid YAML."""
    config.check_config_file(path)
    import salt.config  # Salt: see the imports
    import salt.exceptions

    collect = _Collect()
    logger = logging.getLogger("salt.config")
    logger.addHandler(collect)
    try:
        opts = salt.config.master_config(path, exit_on_config_errors=True)
    except (SystemExit, salt.exceptions.SaltException) as exc:
        detail = collect.messages[-1] if collect.messages else str(exc) or type(exc).__name__
        detail = " ".join(detail.split())  # Salt's YAML errors span lines
        raise config.ConfigFileError(path, f"Salt cannot read it: {detail}") from exc
    finally:
        logger.removeHandler(collect)
    read = opts.get("conf_file")
    if read and os.path.realpath(read) != os.path.realpath(path):
        raise config.ConfigFileError(
            path, f"Salt read {read} instead (${MASTER_CONFIG_VARIABLE}); give that file with -c"
        )
    return opts


def cmd_config(args: argparse.Namespace) -> int:
    if args.check:
        try:
            cfg = config.load(read_master_config(args.check))
        except config.ConfigFileError as exc:
            print(f"saltext-fleet config: {exc}", file=sys.stderr)
            return 2
        except config.FleetConfigError as exc:
            print(f"{args.check}: {exc}", file=sys.stderr)
            return 2
        print(f"{args.check}: the fleet options are valid (database: {cfg.db_url.split('://')[0]})")
        return 0
    try:
        sys.stdout.write(snippet.render(db_url=args.db_url))
    except config.FleetConfigError as exc:
        print(f"saltext-fleet config: {exc}", file=sys.stderr)
        return 2
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    # Imported here: the demo loads Salt's clients, which no other command needs.
    from saltext_fleet import demo

    if args.minions < 1 or args.minions > 20:
        print("saltext-fleet demo: --minions must be between 1 and 20", file=sys.stderr)
        return 2
    return demo.run_demo(count=args.minions, root=args.root, once=args.once, timeout=args.timeout)


def db_url_of(args: argparse.Namespace) -> str:
    """``--db-url``, else ``fleet:db_url`` of the master config (``-c``, or the default one).
    A master config given with ``-c`` is read (and must be usable) even with ``--db-url``."""
    path = args.master_config or (None if args.db_url else default_master_config())
    cfg = config.load(read_master_config(path)) if path else None
    return args.db_url or cfg.db_url


def cmd_db(args: argparse.Namespace) -> int:
    from saltext_fleet.store import engine as store_engine  # the store: see the imports

    if args.action == "minion-role":
        return cmd_minion_role(args)
    if args.name:
        print(f"saltext-fleet db {args.action}: takes no name", file=sys.stderr)
        return 2
    try:
        engine = store_engine.get_engine(db_url_of(args))
        before = store_engine.current_revision(engine)
        if args.action == "upgrade":
            after = store_engine.upgrade(engine)
            print(f"schema of {store_engine.display_url(engine)}: {before or 'empty'} -> {after}")
        else:
            head = store_engine.head_revision()
            state = "up to date" if before == head else f"behind (newest is {head})"
            print(f"schema of {store_engine.display_url(engine)}: {before or 'empty'}, {state}")
    except (config.ConfigFileError, config.FleetConfigError, store_engine.StoreError) as exc:
        print(f"saltext-fleet db: {exc}", file=sys.stderr)
        return 2
    except Exception as exc:  # noqa: BLE001 - unreachable database, permissions, ...
        print(
            f"saltext-fleet db: {type(exc).__name__}: {str(exc).splitlines()[0]}", file=sys.stderr
        )
        return 1
    return 0


def cmd_minion_role(args: argparse.Namespace) -> int:
    """Create or update a PostgreSQL role that may only append returns and events, and print
    the minion config that uses it (see :mod:`saltext_fleet.store.minion`)."""
    # the store: see the imports
    from sqlalchemy import text
    from sqlalchemy.engine import make_url

    from saltext_fleet.store import engine as store_engine
    from saltext_fleet.store import minion as minion_store

    what = "saltext-fleet db minion-role"
    if not args.name:
        print(f"{what}: a role name is needed (e.g. fleet_minion)", file=sys.stderr)
        return 2
    if args.password is not None and args.password_file:
        print(f"{what}: give --password or --password-file, not both", file=sys.stderr)
        return 2
    try:
        password = args.password
        if args.password_file:
            with open(args.password_file, encoding="utf-8") as fh:
                password = fh.readline().rstrip("\r\n")
        engine = store_engine.get_engine(db_url_of(args))
        if engine.dialect.name != "postgresql":
            raise minion_store.MinionRoleError(
                "minion roles need the store on PostgreSQL; this store is SQLite, which "
                "minions cannot share (use --db-url or fleet:db_url of the master config)"
            )
        store_engine.ensure_schema(engine)
        with engine.connect() as conn:
            exists = conn.execute(
                text("SELECT 1 FROM pg_roles WHERE rolname = :n"), {"n": args.name}
            ).first()
        generated = password is None and exists is None
        if generated:
            password = secrets.token_urlsafe(24)
        with engine.begin() as conn:
            done = minion_store.create_minion_role(conn, args.name, password)
    except (
        OSError,
        config.ConfigFileError,
        config.FleetConfigError,
        store_engine.StoreError,
    ) as exc:
        print(f"{what}: {exc}", file=sys.stderr)
        return 2
    except Exception as exc:  # noqa: BLE001 - unreachable database, permissions, ...
        print(f"{what}: {type(exc).__name__}: {str(exc).splitlines()[0]}", file=sys.stderr)
        return 1
    url = make_url(engine.url.render_as_string(hide_password=False)).set(
        username=args.name, password=password if password is not None else "PASSWORD"
    )
    state = "created" if done["created"] else "updated"
    print(
        f"# minion role {args.name} {state}: it may only append returns and events to "
        f"{url.database}."
    )
    if done["revoked_memberships"]:
        print(f"# revoked its membership of: {', '.join(done['revoked_memberships'])}")
    if done["problems"]:
        print(
            f"{what}: the role can still do more than append: " + "; ".join(done["problems"]),
            file=sys.stderr,
        )
        return 1
    if not done["verified"]:
        print("# (not checked as the role itself: this connection may not SET ROLE to it)")
    if generated:
        print("# its password was generated: keep it, it is shown only here")
    elif password is None:
        print("# its password is unchanged: put it in place of PASSWORD")
    print(
        "# Put this in each minion's config (e.g. /etc/salt/minion.d/fleet.conf), with a host\n"
        "# the minions reach, and allow the role in pg_hba.conf; then use --return fleet.\n"
        "fleet:\n"
        f"  db_url: {url.render_as_string(hide_password=False)}"
    )
    return 0


def user_config_of(args: argparse.Namespace) -> config.FleetConfig | None:
    """The fleet options for ``saltext-fleet user``: of ``-c``, else of the default master
    config. With ``--db-url`` the default file may be missing (Salt's defaults then give the
    key file that anchors the audit chain) and a bad ``fleet:`` option is passed over (None)."""
    path = args.master_config or default_master_config()
    if not args.master_config and args.db_url and not os.path.lexists(path):
        opts: dict = {}
    else:
        opts = read_master_config(path)
    try:
        return config.load(opts)
    except config.FleetConfigError:
        if not args.db_url:
            raise
        return None


def cmd_user(args: argparse.Namespace) -> int:
    """Users of the web UI: add, list, set a role or password, reset the second factor,
    disable, enable, delete. Works on the store of the master config given (``-c``)."""
    # the store: see the imports
    from saltext_fleet.store import audit as store_audit
    from saltext_fleet.store import engine as store_engine
    from saltext_fleet.store import users as store_users

    actor = f"cli:{os.environ.get('SUDO_USER') or getpass.getuser()}"
    try:
        cfg = user_config_of(args)
        db_url = args.db_url or cfg.db_url
        engine = store_engine.get_engine(db_url)
        store_engine.ensure_schema(engine)
        if cfg is not None and os.path.exists(cfg.key_file):
            store_audit.use_anchor(engine, cfg.key_file)  # the master's key anchors the chain
        if args.action == "list":
            with engine.connect() as conn:
                for user in store_users.users(conn):
                    flags = [user["source"]]
                    flags += ["totp"] if user["totp"] else []
                    flags += ["disabled"] if user["disabled"] else []
                    print(f"{user['username']:24} {user['role']:9} {' '.join(flags)}")
            return 0
        if not args.username:
            print(f"saltext-fleet user {args.action}: a username is needed", file=sys.stderr)
            return 2
        name = args.username
        with engine.begin() as conn:
            if args.action in ("add", "password"):
                password = None
                if args.action == "password" or args.source == "local":
                    password = _new_password(args, name)
                if args.action == "add":
                    role = args.role or "viewer"
                    store_users.create_user(conn, name, role, password, source=args.source)
                    details = {"role": role, "source": args.source}
                else:
                    store_users.set_password(conn, name, password)
                    details = {}
            elif args.action == "role":
                if not args.role:
                    raise ValueError("--role is needed: viewer, auditor, operator or admin")
                store_users.set_role(conn, name, args.role)
                details = {"role": args.role}
            elif args.action == "reset-totp":
                store_users.reset_totp(conn, name)
                details = {}
            elif args.action in ("disable", "enable"):
                store_users.set_disabled(conn, name, args.action == "disable")
                details = {}
            elif args.action == "delete":
                if not store_users.delete_user(conn, name):
                    raise store_users.UserError(f"no user {name!r}")
                details = {}
            store_audit.append(conn, actor, f"user.{args.action}", name, details)
    # WebAuthError, UserError and ConfigFileError are ValueErrors
    except (ValueError, config.FleetConfigError) as exc:
        field = getattr(exc, "field", None)
        where = f"{field}: " if field and not str(exc).startswith(field) else ""
        print(f"saltext-fleet user {args.action}: {where}{exc}", file=sys.stderr)
        return 2
    except store_engine.StoreError as exc:
        print(f"saltext-fleet user {args.action}: {exc}", file=sys.stderr)
        return 1
    print(f"user {name}: {args.action} done")
    return 0


def _new_password(args: argparse.Namespace, username: str) -> str:
    if args.password_stdin:
        password = sys.stdin.readline().rstrip("\n")
    else:
        password = getpass.getpass(f"password for {username}: ")
        if getpass.getpass("again: ") != password:
            raise ValueError("the two passwords differ")
    return password


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="saltext-fleet", description="saltext-fleet: a Salt master as a fleet control plane"
    )
    parser.add_argument("--version", action="version", version=f"saltext-fleet {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    p_config = sub.add_parser(
        "config", help="print the master config snippet for this package (or check a config)"
    )
    p_config.add_argument("--db-url", help="database URL (default: SQLite under the cachedir)")
    p_config.add_argument(
        "--check", metavar="MASTER_CONFIG", help="validate the fleet options of a master config"
    )
    p_config.set_defaults(func=cmd_config)

    p_db = sub.add_parser(
        "db",
        help="the store's schema: upgrade it, or show its revision; minion-role NAME: a "
        "PostgreSQL role for minion returners that may only append returns and events",
    )
    p_db.add_argument("action", choices=["upgrade", "status", "minion-role"])
    p_db.add_argument("name", nargs="?", help="minion-role: the role to create or update")
    p_db.add_argument(
        "--password", help="minion-role: the role's password (default: generated for a new role)"
    )
    p_db.add_argument(
        "--password-file", help="minion-role: read the role's password from this file's first line"
    )
    p_db.add_argument("--db-url", help="database URL (default: fleet:db_url of the master config)")
    p_db.add_argument(
        "-c",
        "--master-config",
        help=f"master config file to read (default: ${MASTER_CONFIG_VARIABLE} or "
        f"{DEFAULT_MASTER_CONFIG}; not read for --db-url unless given)",
    )
    p_db.set_defaults(func=cmd_db)

    p_demo = sub.add_parser(
        "demo", help="run a real salt-master and minions on loopback with the extension"
    )
    p_demo.add_argument("--minions", type=int, default=3, help="how many minions (default 3)")
    p_demo.add_argument(
        "--root", help="folder for every file of the demo (default: a new temp dir)"
    )
    p_demo.add_argument("--once", action="store_true", help="print the summary, then stop")
    p_demo.add_argument("--timeout", type=float, default=60, help="seconds to wait for the fleet")
    p_demo.set_defaults(func=cmd_demo)

    p_user = sub.add_parser("user", help="users of the web UI: add, list, role, password, ...")
    p_user.add_argument(
        "action",
        choices=["add", "list", "role", "password", "reset-totp", "disable", "enable", "delete"],
    )
    p_user.add_argument("username", nargs="?")
    p_user.add_argument(
        "--role", help="viewer, auditor, operator or admin (add: viewer unless given)"
    )
    p_user.add_argument(
        "--source",
        default="local",
        choices=["local", "eauth"],
        help="local: a password kept here (hashed); eauth: Salt's external_auth checks it",
    )
    p_user.add_argument(
        "--password-stdin", action="store_true", help="read the password from standard input"
    )
    p_user.add_argument(
        "--db-url", help="database URL (default: fleet:db_url of the master config)"
    )
    p_user.add_argument(
        "-c",
        "--master-config",
        help=f"master config file to read (default: ${MASTER_CONFIG_VARIABLE} or "
        f"{DEFAULT_MASTER_CONFIG})",
    )
    p_user.set_defaults(func=cmd_user)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
