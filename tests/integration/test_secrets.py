"""Secrets given to Salt on a command line never rest in clear: a real master (PostgreSQL store)
and a real minion.

``salt-run fleet.secret_set group builders signing_password VALUE`` and runner and minion
calls with ``db_password=VALUE``, ``api_token=VALUE``, ``aws_secret_access_key=VALUE``,
``mysql.pass=VALUE`` and a URL with credentials go through Salt's own paths: the job loads,
the ``salt/run/<jid>/new`` and ``/ret`` events, the job cache's returns, the publish load's
local copy, the spools of the master's and each ``salt-run``'s writer. An event that
PostgreSQL refuses (a NUL character) is quarantined carrying a secret. Then every table is
dumped (every column, as text) and every file under the master's ``<cachedir>/fleet`` is read:
none of the values is found.
"""

from __future__ import annotations

import os
import uuid

import pytest
from saltfactories.utils import random_string
from sqlalchemy import func, select

from saltext_fleet import snippet
from saltext_fleet.core.redact import MASK
from saltext_fleet.store import engine as store_engine
from saltext_fleet.store.models import Event, Job, Quarantine, Return
from tests.support.pgdb import fresh_database
from tests.support.store import dump_tables, files_text
from tests.support.waiting import wait_for

pytestmark = [pytest.mark.integration, pytest.mark.timeout(600)]


@pytest.fixture(scope="module")
def pg_url(pg_server_url):
    with fresh_database(pg_server_url, "fleet_secrets") as url:
        yield url


@pytest.fixture(scope="module")
def master(salt_factories, pg_url):
    overrides = snippet.master_snippet(db_url=pg_url)
    overrides.update({"interface": "127.0.0.1", "event_return_queue": 0})
    overrides.pop("engines", None)  # no web UI here
    factory = salt_factories.salt_master_daemon(random_string("sec-master-"), overrides=overrides)
    with factory.started():
        yield factory


@pytest.fixture(scope="module")
def minion(master):
    factory = master.salt_minion_daemon(random_string("sec-minion-"))
    with factory.started():
        yield factory


def _values() -> dict[str, str]:
    tag = uuid.uuid4().hex[:12]
    names = [
        "signing_password",
        "secret_keyword",
        "group_password",
        "run_db_password",
        "run_api_token",
        "run_aws_secret_access_key",
        "run_mysql_pass",
        "run_url",
        "job_db_password",
        "job_api_token",
        "job_aws_secret_access_key",
        "job_mysql_pass",
        "job_url",
        "quarantined_password",
        "quarantined_url",
    ]
    return {name: f"{name.replace('_', '')}{tag}" for name in names}


def _count(engine, query) -> int:
    with engine.connect() as conn:
        return conn.execute(query).scalar() or 0


def test_no_secret_from_a_command_line_rests_in_clear(master, minion, pg_url):
    v = _values()
    run = master.salt_run_cli()

    # our own secret-taking runners, positional and keyword
    assert run.run("fleet.group_set", "builders").returncode == 0
    ret = run.run(
        "fleet.secret_set", "group", "builders", "signing_password", v["signing_password"]
    )
    assert ret.returncode == 0 and ret.data["stored"] is True, ret
    ret = run.run("fleet.secret_set", "group", "builders", "deploy", f"value={v['secret_keyword']}")
    assert ret.returncode == 0 and ret.data["stored"] is True, ret
    ret = run.run("fleet.group_set", "lab", f"password={v['group_password']}")
    assert ret.returncode == 0, ret

    # any runner, with secrets by name and in a URL (test.arg echoes them in its return)
    url = f"postgresql://app:{v['run_url']}@db.example/app"
    ret = run.run(
        "test.arg",
        f"db_password={v['run_db_password']}",
        f"api_token={v['run_api_token']}",
        f"aws_secret_access_key={v['run_aws_secret_access_key']}",
        f"mysql.pass={v['run_mysql_pass']}",
        url,
    )
    assert ret.returncode == 0 and ret.data["kwargs"]["db_password"] == v["run_db_password"]

    # a minion job: the publish load keeps name=value strings, the return the kwargs
    ret = master.salt_cli().run(
        "test.arg",
        f"db_password={v['job_db_password']}",
        f"api_token={v['job_api_token']}",
        f"aws_secret_access_key={v['job_aws_secret_access_key']}",
        f"mysql.pass={v['job_mysql_pass']}",
        f"https://deploy:{v['job_url']}@git.example/repo.git",
        minion_tgt=minion.id,
    )
    assert ret.returncode == 0 and ret.data["kwargs"]["api_token"] == v["job_api_token"], ret

    # an event PostgreSQL refuses (a NUL character): quarantined, carrying secrets
    quarantine_tag = f"fleet/test/quarantined/{uuid.uuid4().hex[:8]}"
    data = (
        f'data={{"db_password": "{v["quarantined_password"]}", '
        f'"dsn": "https://u:{v["quarantined_url"]}@h.example/", "note": "a\\0b"}}'
    )
    assert run.run("event.send", quarantine_tag, data).returncode == 0

    # positive controls: everything above reached the store
    engine = store_engine.get_engine(pg_url)
    wait_for(
        "the runner jobs' returns",
        lambda: (
            _count(
                engine,
                select(func.count())
                .select_from(Return)
                .where(Return.fun.in_(["runner.fleet.secret_set", "runner.fleet.group_set"])),
            )
            >= 4
            and _count(
                engine,
                select(func.count()).select_from(Return).where(Return.fun == "runner.test.arg"),
            )
            >= 1
        ),
        timeout=60,
        interval=0.25,
    )
    wait_for(
        "the minion's test.arg return and its event",
        lambda: (
            _count(
                engine,
                select(func.count())
                .select_from(Return)
                .where(Return.minion_id == minion.id, Return.fun == "test.arg"),
            )
            >= 1
            and _count(
                engine,
                select(func.count())
                .select_from(Event)
                .where(Event.tag.like("salt/job/%/ret/" + minion.id)),
            )
            >= 1
        ),
        timeout=60,
        interval=0.25,
    )
    wait_for(
        "the runners' new and ret events",
        lambda: (
            _count(
                engine,
                select(func.count()).select_from(Event).where(Event.tag.like("salt/run/%/ret")),
            )
            >= 5
        ),
        timeout=60,
        interval=0.25,
    )
    wait_for(
        "the quarantined events",
        lambda: (
            _count(
                engine,
                select(func.count())
                .select_from(Quarantine)
                .where(Quarantine.payload.contains(quarantine_tag)),
            )
            >= 3  # the event itself, and the runner's new and ret events that carry it
        ),
        timeout=60,
        interval=0.25,
    )
    assert _count(engine, select(func.count()).select_from(Job)) >= 6

    dump = dump_tables(engine)
    leaked = [name for name, value in v.items() if value in dump]
    assert not leaked, f"in clear in the database: {leaked}"
    # the dump holds the records, masked
    assert "signing_password" in dump and "db_password" in dump and "mysql.pass" in dump
    assert f"postgresql://app:{MASK}@db.example/app" in dump
    assert quarantine_tag in dump

    files = files_text(os.path.join(master.config["cachedir"], "fleet"))
    spooled = [name for name in files if name.startswith("spool")]
    loads = [name for name in files if name.startswith("loads")]
    assert spooled and loads, sorted(files)
    # the publish load's local copy is there, masked
    assert any(
        minion.id in files[name] and "db_password" in files[name] and MASK in files[name]
        for name in loads
    )
    leaked = {
        name: [key for key, value in v.items() if value in text]
        for name, text in files.items()
        if any(value in text for value in v.values())
    }
    assert not leaked, f"in clear under the master's cachedir/fleet: {leaked}"
