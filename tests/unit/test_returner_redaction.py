"""The returner module masks secrets before its own files: a minion's spool (``--return
fleet``) and the master's spool and ``loads/`` copy, while the database is unreachable (so
everything stays on disk to be read back)."""

import os
import uuid

import pytest

from saltext_fleet.core.redact import MASK
from saltext_fleet.returners import fleet as returner_mod
from saltext_fleet.store import writer as store_writer
from tests.support.store import files_text

UNREACHABLE = "postgresql+psycopg://postgres@127.0.0.1:1/none"


@pytest.fixture
def opts(tmp_path, monkeypatch):
    def make(role):
        opts = {"cachedir": str(tmp_path / role), "__role": role, "id": f"{role}-1"}
        opts["fleet"] = {"db_url": UNREACHABLE}
        monkeypatch.setattr(returner_mod, "__opts__", opts, raising=False)
        monkeypatch.setattr(returner_mod, "__context__", {}, raising=False)
        return opts

    monkeypatch.setattr(returner_mod, "MINION_FLUSH_SECONDS", 0.2)
    yield make
    store_writer.close_all(0.5)


def test_the_minion_returner_spools_masked_returns(opts):
    o = opts("minion")
    secret = f"s{uuid.uuid4().hex}"
    returner_mod.returner(
        {
            "id": "mini-07",
            "jid": "20261205120000000001",
            "fun": "test.arg",
            "fun_args": [f"db_password={secret}", f"https://u:{secret}@h.example/"],
            "return": {"kwargs": {"api_token": secret, "mysql.pass": secret}},
        }
    )
    text = "\n".join(files_text(os.path.join(o["cachedir"], "fleet", "spool")).values())
    assert "mini-07" in text and "mysql.pass" in text and MASK in text  # the spool was read
    assert secret not in text


def test_the_master_keeps_masked_loads_and_events(opts):
    o = opts("master")
    secret = f"s{uuid.uuid4().hex}"
    jid = "20261205120000000002"
    load = {"fun": "test.arg", "arg": [f"api_token={secret}"], "tgt": "*", "user": "root"}
    returner_mod.save_load(jid, load, ["mini-07"])
    assert load["arg"] == [f"api_token={secret}"]  # Salt's own load is not changed
    returner_mod.event_return(
        [
            {
                "tag": f"salt/run/{jid}/new",
                "data": {
                    "fun": "runner.fleet.secret_set",
                    "fun_args": ["group", "builders", "signing_password", secret],
                },
            }
        ]
    )
    # the local copy answers get_load while the database is away: masked
    assert returner_mod._recall_load(jid)["arg"] == [f"api_token={MASK}"]
    fleet_dir = os.path.join(o["cachedir"], "fleet")
    assert sorted(os.listdir(fleet_dir)) == ["loads", "spool"]
    text = "\n".join(files_text(fleet_dir).values())
    assert "signing_password" in text and "api_token" in text
    assert secret not in text
