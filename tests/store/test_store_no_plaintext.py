"""Every table dumped: no secret is stored in plaintext anywhere, on either backend.

The secrets the product handles go through their real write paths: a node group's SSH
password and private key (``store.secrets.set_group``), a node secret, enrolment tokens
(``store.gate.create_enrolment``), the audit events those actions write. Then every row of
every table is read back as text and searched for each plaintext (and its base64 and hex
forms, in case a column encodes it).
"""

import base64
import datetime as dt

from sqlalchemy import MetaData, select

from saltext_fleet.core import gate as core_gate
from saltext_fleet.core import secrets as core_secrets
from saltext_fleet.store import audit as store_audit
from saltext_fleet.store import gate as store_gate
from saltext_fleet.store import secrets as store_secrets

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
    meta = MetaData()
    meta.reflect(bind=engine)
    dump = []
    with engine.connect() as conn:
        for table in meta.sorted_tables:
            for row in conn.execute(select(table)):
                dump.append(f"{table.name}: {tuple(row)!r}")
    text = "\n".join(dump)
    assert "secrets:" in text and "enrolments:" in text  # the tables were read
    for secret in [password, node_secret, *tokens, *PRIVATE_KEY.strip().splitlines()[1:-1]]:
        for form in _forms(secret):
            assert form not in text, f"a plaintext secret is stored: {secret[:12]}..."
    # what is stored instead: Fernet tokens, and hashes of the enrolment tokens
    with engine.connect() as conn:
        values = [v for (v,) in conn.execute(select(meta.tables["secrets"].c.value))]
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
