"""Hot-hot multi-master on one store: two real salt-masters sharing one master key pair and one
PostgreSQL database, and one real salt-minion with ``master: [m1, m2]``.

Each master is configured from ``saltext-fleet config``'s snippet (without the web UI engine,
which is not under test here), with the same ``fleet:db_url`` and the same ``fleet:key_file``.
"""

import pathlib

import pytest
import salt.crypt
from saltfactories.utils import random_string
from sqlalchemy import func, select

from saltext_fleet import snippet
from saltext_fleet.store import carriers as store_carriers
from saltext_fleet.store import engine as store_engine
from saltext_fleet.store.drift import node_rows
from saltext_fleet.store.models import JobCarrier
from tests.support.daemons import start_all, stop_all
from tests.support.harness import ACCEPTED_BY_HARNESS, accept_known
from tests.support.pgdb import fresh_database
from tests.support.waiting import wait_for


def fleet_master_overrides(db_url: str, key_file) -> dict:
    """A master's configuration for a fleet of several masters: ``saltext-fleet config``'s
    snippet on the shared store ``db_url`` and vault key ``key_file``, without the web UI
    engine (not under test here), keys accepted by the harness only."""
    overrides = snippet.master_snippet(db_url=db_url)
    overrides.pop("engines", None)
    overrides["fleet"]["key_file"] = str(key_file)
    overrides.update(
        {
            "interface": "127.0.0.1",
            "open_mode": False,
            "auto_accept": False,
            "gather_job_timeout": 5,
        }
    )
    return overrides


@pytest.fixture(scope="package")
def mm_db_url(pg_server_url):
    with fresh_database(pg_server_url, "fleet_mm") as url:
        yield url


@pytest.fixture(scope="package")
def mm_masters(salt_factories, short_tmp, mm_db_url):
    """Two masters, one key pair (made here, placed in both pki dirs before they start)."""
    private, public = salt.crypt.gen_keys(2048)
    keys = {"master.pem": private, "master.pub": public}
    masters = []
    for n in (1, 2):
        overrides = fleet_master_overrides(mm_db_url, short_tmp / "mm-fleet.fernet")
        factory = salt_factories.salt_master_daemon(
            random_string(f"mm{n}-"), overrides=overrides, on_auth_event_callback=accept_known
        )
        pki = pathlib.Path(factory.config["pki_dir"])
        pki.mkdir(parents=True, exist_ok=True)
        for name, text in keys.items():
            (pki / name).write_text(text)
        (pki / "master.pem").chmod(0o400)
        masters.append(factory)
    start_all(masters)
    yield masters
    stop_all(masters)


@pytest.fixture(scope="package")
def mm_minion(mm_masters):
    first, second = mm_masters
    minion_id = random_string("mm-minion-")
    ACCEPTED_BY_HARNESS.add(minion_id)
    overrides = {
        "master": [
            f"127.0.0.1:{first.config['ret_port']}",
            f"127.0.0.1:{second.config['ret_port']}",
        ],
    }
    factory = first.salt_minion_daemon(minion_id, overrides=overrides)
    with factory.started():
        yield factory


@pytest.fixture(scope="package")
def store(mm_db_url):
    """The masters' store (migrated by the masters; checked here)."""
    engine = store_engine.get_engine(mm_db_url)
    store_engine.ensure_schema(engine)
    return engine


# -- syndic carriers (test_syndic.py, test_syndic_wire.py) ------------------------------------


def carriers(store, jid: str, minion: str) -> dict | None:
    """The carrier the store resolves for (jid, minion); None when nobody announced it."""
    with store.connect() as conn:
        return store_carriers.carriers_of(conn, [(jid, minion)]).get((jid, minion))


def served(store, minion_id: str) -> dict | None:
    """How the fleet view says the node is served; None while it has no node row."""
    rows = [r for r in node_rows(store) if r["minion_id"] == minion_id]
    return rows[0]["served"] if rows else None


def assert_claim_disputed(store, jid: str, leaf: str, syndic: str, liar: str) -> None:
    """After ``liar`` claimed ``leaf`` (and itself) for ``jid``, which ``syndic`` announced:
    the carrier is disputed, neither believed, nothing recorded about the liar itself, and
    the node is shown as disputed, never as served through the liar."""

    def both_claims():
        found = carriers(store, jid, leaf)
        return found if found and len(found["claimants"]) == 2 else None

    assert wait_for("the liar's claim in the store", both_claims, timeout=30) == {
        "syndic": None,
        "via": None,
        "claimants": sorted([liar, syndic]),
        "disputed": True,
    }
    with store.connect() as conn:
        about_liar = conn.execute(
            select(func.count()).select_from(JobCarrier).where(JobCarrier.minion_id == liar)
        ).scalar()
    assert about_liar == 0  # a sender never carries itself
    shown = served(store, leaf)
    assert shown["syndic"] is None and shown["disputed"] is True
