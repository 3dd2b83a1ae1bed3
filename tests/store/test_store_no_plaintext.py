"""Every table dumped: no secret is stored in plaintext anywhere, on either backend.

The secrets the product handles go through their real write paths: a node group's SSH
password and private key (``store.secrets.set_group``), a node secret, enrolment tokens
(``store.gate.create_enrolment``), the audit events those actions write. Then every row of
every table is read back as text and searched for each plaintext (and its base64 and hex
forms, in case a column encodes it).
"""

import base64
import datetime as dt
import json
import uuid

from sqlalchemy import select

from saltext_fleet.core import gate as core_gate
from saltext_fleet.core import inventory as core_inventory
from saltext_fleet.core import secrets as core_secrets
from saltext_fleet.core.redact import MASK
from saltext_fleet.store import audit as store_audit
from saltext_fleet.store import engine as store_engine
from saltext_fleet.store import gate as store_gate
from saltext_fleet.store import secrets as store_secrets
from saltext_fleet.store import writer as store_writer
from saltext_fleet.store.models import InventorySnapshot, Quarantine, Secret
from tests.support.store import dump_tables, files_text, write

PRIVATE_KEY = """-----BEGIN OPENSSH PRIVATE KEY-----
b3BlbnNzaC1rZXktdjEAAAAABG5vbmUAAAAEbm9uZQAAAAAAAAABAAAAMwAAAAtzc2gtZW
QyNTUxOQAAACBQk1T0p3c1c2VjcmV0LWtleS1tYXRlcmlhbC1mb3ItdGVzdHMAAAAAAAAA
-----END OPENSSH PRIVATE KEY-----
"""


def _forms(secret: str) -> list[str]:
    raw = secret.encode()
    return [
        secret,
        base64.b64encode(raw).decode(),
        base64.urlsafe_b64encode(raw).decode().rstrip("="),
        raw.hex(),
    ]


def test_no_table_holds_a_plaintext_secret(engine, tmp_path):
    vault = core_secrets.Vault.open(str(tmp_path / "fleet.fernet"))
    password = "correct-horse-battery-staple-7731"
    node_secret = "api-token-0f9e8d7c6b5a"
    tokens = [core_gate.new_token() for _ in range(3)]
    with engine.begin() as conn:
        store_secrets.set_group(
            conn, vault, "lab", ssh_user="root", credential_kind="password", credential=password
        )
        store_secrets.set_group(
            conn, vault, "builders", credential_kind="private_key", credential=PRIVATE_KEY
        )
        store_secrets.put_secret(conn, vault, "node", "mini-07", "api_token", node_secret)
        for n, token in enumerate(tokens):
            store_gate.create_enrolment(
                conn, f"mini-0{n}", token, dt.timedelta(hours=1), "user:root", node_group="lab"
            )
            store_audit.append(conn, "user:root", "enrol.create", f"mini-0{n}", {"group": "lab"})
        store_audit.append(conn, "user:root", "group.set", "lab", {"credential": "password"})
    # the secrets are really there, and readable with the key
    with engine.connect() as conn:
        assert store_secrets.group_credential(conn, vault, "lab") == ("password", password)
        assert store_secrets.group_credential(conn, vault, "builders")[1] == PRIVATE_KEY
    # every row of every table, as text
    text = dump_tables(engine)
    assert "secrets:" in text and "enrolments:" in text  # the tables were read
    for secret in [password, node_secret, *tokens, *PRIVATE_KEY.strip().splitlines()[1:-1]]:
        for form in _forms(secret):
            assert form not in text, f"a plaintext secret is stored: {secret[:12]}..."
    # what is stored instead: Fernet tokens, and hashes of the enrolment tokens
    with engine.connect() as conn:
        values = list(conn.execute(select(Secret.value)).scalars())
    assert len(values) == 3 and all(core_secrets.is_token(v) for v in values)
    for token in tokens:
        assert core_gate.token_hash(token) in text
    # and the key itself never enters the database
    keys = [
        line.strip()
        for line in (tmp_path / "fleet.fernet").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert keys
    for key in keys:
        assert key not in text


# -- secrets that Salt hands the returner: spool, tables and quarantine ------------------------

RUNNER_JID = "20261205120000000001"
MINION_JID = "20261205120000000002"


def _secret_values() -> dict[str, str]:
    """One distinct value per form of secret (easy to find in any dump)."""
    tag = uuid.uuid4().hex[:10]
    return {
        name: f"{name}-{tag}-VALUE"
        for name in (
            "signing_password",
            "group_password",
            "db_password",
            "api_token",
            "aws_secret_access_key",
            "mysql.pass",
            "url",
            "quarantined",
            "quarantined_url",
            "quarantined_arg",
        )
    }


def _salt_records(v: dict[str, str]) -> list[dict]:
    """The records Salt hands the returner for ``salt-run fleet.secret_set group builders
    signing_password VALUE``, ``salt-run fleet.group_set ... VALUE``, ``salt '*' test.arg
    db_password=VALUE ... postgresql://app:VALUE@db/app``, an inventory with ``passwd`` and
    ``libsecret-1-0``, and two records that are quarantined carrying secrets."""
    url = f"postgresql://app:{v['url']}@db.example/app"
    secret_set = {
        "fun": "runner.fleet.secret_set",
        "fun_args": ["group", "builders", "signing_password", v["signing_password"]],
        "jid": RUNNER_JID,
        "user": "root",
        "_stamp": "2026-12-05T12:00:00.000000",
    }
    secret_set_ret = {**secret_set, "return": {"stored": True}, "success": True}
    group_set = {
        "fun": "runner.fleet.group_set",
        "fun_args": ["lab", "the lab", "root", 22, "base", v["group_password"]],
        "jid": RUNNER_JID[:-1] + "3",
        "user": "root",
    }
    kwargs = {
        "db_password": v["db_password"],
        "api_token": v["api_token"],
        "aws_secret_access_key": v["aws_secret_access_key"],
        "mysql.pass": v["mysql.pass"],
    }
    arg = [f"{k}={value}" for k, value in kwargs.items()] + [url]
    test_arg_ret = {
        "id": "mini-07",
        "jid": MINION_JID,
        "fun": "test.arg",
        "fun_args": arg,
        "return": {"args": [url], "kwargs": {**kwargs, "__pub_fun": "test.arg"}},
        "retcode": 0,
        "success": True,
    }
    packages = {"deb": {"passwd": "1:4.13+dfsg1-1", "libsecret-1-0": "0.20.5-3"}}
    inv = core_inventory.build_inventory(packages, {}, {"os": "Debian"})
    records = [
        {"kind": "event", "tag": f"salt/run/{RUNNER_JID}/new", "data": secret_set},
        {"kind": "event", "tag": f"salt/run/{RUNNER_JID}/ret", "data": secret_set_ret},
        {"kind": "event", "tag": f"salt/run/{group_set['jid']}/new", "data": group_set},
        # the job cache of a runner job (salt.utils.job.store_job): the load, and the return
        {
            "kind": "load",
            "jid": RUNNER_JID,
            "publish": False,
            "load": {
                "id": "master",
                "tgt": "master",
                "jid": RUNNER_JID,
                "fun": "runner.fleet.secret_set",
                "user": "root",
                "return": secret_set_ret,
            },
        },
        {
            "kind": "return",
            "ret": {"id": "master", "jid": RUNNER_JID, "fun": "runner.fleet.secret_set"}
            | {"return": secret_set_ret},
        },
        # a minion job: the publish load keeps name=value strings, the return the kwargs
        {
            "kind": "load",
            "jid": MINION_JID,
            "publish": True,
            "minions": ["mini-07"],
            "load": {"fun": "test.arg", "arg": arg, "tgt": "*", "jid": MINION_JID, "user": "root"},
        },
        {"kind": "return", "ret": test_arg_ret},
        {"kind": "event", "tag": f"salt/job/{MINION_JID}/ret/mini-07", "data": test_arg_ret},
        {
            "kind": "return",
            "ret": {
                "id": "mini-07",
                "jid": MINION_JID[:-1] + "4",
                "fun": "fleet.inventory",
                "return": inv,
                "retcode": 0,
                "success": True,
            },
        },
        # quarantined: an event without a tag, a return that is no mapping
        {
            "kind": "event",
            "tag": None,
            "data": {
                "db_password": v["quarantined"],
                "dsn": f"https://u:{v['quarantined_url']}@h.example/",
            },
        },
        {"kind": "return", "ret": [f"api_token={v['quarantined_arg']}"]},
    ]
    return [{**record, "rid": uuid.uuid4().hex} for record in records]


def _assert_none_in(text: str, values: dict[str, str], where: str) -> None:
    found = [name for name, value in values.items() if value in text]
    assert not found, f"secrets in clear in {where}: {found}"


def test_the_spool_never_holds_a_secret_in_clear(tmp_path):
    """The database is away: every record waits in the spool, already masked."""
    values = _secret_values()
    spool_dir = tmp_path / "spool"
    writer = store_writer.Writer("postgresql+psycopg://postgres@127.0.0.1:1/none", str(spool_dir))
    try:
        records = _salt_records(values)
        assert writer.submit_many(records) == len(records)
        writer.submit({"kind": "event", "tag": "x", "data": {"api_token": values["api_token"]}})
        assert writer.pending() == len(records) + 1  # nothing reached a database
    finally:
        writer.close(0.5)
    text = "\n".join(files_text(spool_dir).values())
    assert "signing_password" in text and "passwd" in text  # the spool was read
    _assert_none_in(text, values, "the spool")
    assert "1:4.13+dfsg1-1" in text and "0.20.5-3" in text  # package versions are data


def test_no_table_nor_the_spool_holds_a_secret_salt_handed_over(db_url, tmp_path):
    values = _secret_values()
    spool_dir = tmp_path / "spool"
    writer = store_writer.Writer(db_url, str(spool_dir))
    try:
        writer.submit_many(_salt_records(values))
        assert writer.drain(30)
    finally:
        writer.close(5)
    engine = store_engine.get_engine(db_url)
    text = dump_tables(engine)
    # the records are there: jobs, returns, events, the quarantine, the inventory
    for table in ("jobs:", "returns:", "events:", "quarantine:", "inventory_snapshots:"):
        assert table in text, table
    with engine.connect() as conn:
        quarantined = [
            p for (p,) in conn.execute(select(Quarantine.payload).order_by(Quarantine.id))
        ]
    assert len(quarantined) == 2 and all(MASK in p for p in quarantined)
    assert "signing_password" in text and MASK in text
    _assert_none_in(text, values, "the tables")
    _assert_none_in("\n".join(files_text(spool_dir).values()), values, "the spool")
    # package names and versions are data: kept in the inventory snapshot
    with engine.connect() as conn:
        snapshots = [s for (s,) in conn.execute(select(InventorySnapshot.packages))]
    packages = snapshots[0] if isinstance(snapshots[0], dict) else json.loads(snapshots[0])
    assert packages == {"deb": {"libsecret-1-0": "0.20.5-3", "passwd": "1:4.13+dfsg1-1"}}


def test_records_written_without_the_spool_are_masked_too(engine):
    """``write_batch`` called directly (the returner's publish-load fast path): the tables and
    the quarantine get masked records even when nothing masked them before."""
    values = _secret_values()
    result = write(engine, _salt_records(values))
    assert result.quarantined == 2
    _assert_none_in(dump_tables(engine), values, "the tables")
