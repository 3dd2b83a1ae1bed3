"""Hot-hot multi-master on one store: two real salt-masters sharing one master key pair and one
PostgreSQL database, and one real salt-minion with ``master: [m1, m2]``.

Each master is configured from ``saltext-fleet config``'s snippet (without the web UI engine,
which is not under test here), with the same ``fleet:db_url`` and the same ``fleet:key_file``.
"""

import pathlib

import pytest
import salt.crypt
from saltfactories.utils import random_string

from saltext_fleet import snippet
from saltext_fleet.store import engine as store_engine
from tests.support.daemons import start_all, stop_all
from tests.support.harness import ACCEPTED_BY_HARNESS, accept_known
from tests.support.pgdb import fresh_database


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
