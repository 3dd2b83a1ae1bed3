"""Integration layer: a real salt-master and two real salt-minions (pytest-salt-factories).

The master's configuration is the snippet ``saltext-fleet config`` prints, with no
``extension_modules``: the daemons find this extension through its ``salt.loader`` entry
point. Each minion lists the packages of its own real virtualenv (``fleet:inventory:pip``),
so the two minions really differ.
"""

import pytest
import salt.runner
from saltfactories.utils import random_string

from saltext_fleet import config, snippet
from saltext_fleet.store import engine as store_engine
from tests.support.harness import ACCEPTED_BY_HARNESS, accept_known
from tests.support.sshd import free_port
from tests.support.venvs import make_venv, make_wheel, pip_install


@pytest.fixture(scope="package")
def venvs(tmp_path_factory):
    """Two real virtualenvs with different packages: {"one": python, "two": python}."""
    root = tmp_path_factory.mktemp("venvs")
    wheels = root / "wheels"
    one = make_venv(root / "one")
    two = make_venv(root / "two")
    pip_install(one, make_wheel(wheels, "fleet-alpha", "1.0.0"))
    pip_install(
        two, make_wheel(wheels, "fleet-alpha", "2.1.0"), make_wheel(wheels, "fleet-beta", "0.3")
    )
    return {"one": one, "two": two, "wheels": wheels}


#: A reaction with nothing to do with keys, for the gate tests to time: fleet/test/echo ->
#: the event.send runner -> fleet/test/echoed, carrying the same "n".
ECHO_SLS = """
fleet_test_echo:
  runner.event.send:
    - args:
      - tag: fleet/test/echoed
      - data:
          n: {{ data.get('n') | json }}
"""


@pytest.fixture(scope="package")
def salt_master(salt_factories, tmp_path_factory):
    overrides = snippet.master_snippet()
    overrides.update({"interface": "127.0.0.1", "open_mode": False, "auto_accept": False})
    # A minion that has not answered when a command's timeout ends is asked whether it still
    # runs the job (find_job), for gather_job_timeout seconds: Salt's 10 s would make every
    # look for a node that is gone (fleet.presence_check) cost ten more seconds.
    overrides["gather_job_timeout"] = 5
    # A low alert threshold, so the drift tests see fleet/alert/drift both ways.
    overrides["fleet"]["drift"]["alert_score"] = 10
    # Every new vulnerability finding alerts (the real advisory the findings test imports
    # has no CVSS vector: its severity is unknown).
    overrides["fleet"]["vulns"] = {"alert_severity": "any"}
    # Onboarding turns the package beacon on: every 2 s (in a minion's loop_interval units)
    overrides["fleet"]["onboard"]["beacon_interval"] = 2
    # The engine serves the web UI: on a free port (the default, 8443, is one for all masters)
    # Its live overview looks at the store only when the event bus wakes it (no periodic
    # look), so the live-update test proves the bus path.
    overrides["fleet"]["ui"] = {"host": "127.0.0.1", "port": free_port(), "live_poll_seconds": 0}
    # a named command for this machine's system (the web UI's node and group actions)
    overrides["fleet"]["actions"] = {"Debian": {"test": "echo fleet-test-action $(id -un)"}}
    echo = tmp_path_factory.mktemp("reactors") / "echo.sls"
    echo.write_text(ECHO_SLS)
    overrides["reactor"] = [*overrides["reactor"], {"fleet/test/echo": [str(echo)]}]
    factory = salt_factories.salt_master_daemon(
        random_string("fleet-master-"), overrides=overrides, on_auth_event_callback=accept_known
    )
    assert "extension_modules" not in overrides
    with factory.started():
        yield factory


def _minion(salt_master, minion_id, python, beacons=None):
    ACCEPTED_BY_HARNESS.add(minion_id)
    overrides = {"fleet": {"inventory": {"pip": [str(python)]}}}
    if beacons:
        # Salt counts a beacon's interval in loop_interval units but calls beacons once a
        # second; salt-factories' loop_interval of 0.05 would stretch 1 s into 20 s.
        overrides["beacons"] = beacons
        overrides["loop_interval"] = 1
    return salt_master.salt_minion_daemon(minion_id, overrides=overrides)


@pytest.fixture(scope="package")
def salt_minion(salt_master, venvs):
    # The beacon watches this minion's virtualenv; a short interval keeps the test quick.
    factory = _minion(
        salt_master,
        random_string("fleet-minion-1-"),
        venvs["one"],
        beacons={"fleet_pkgset": [{"interval": 1}]},
    )
    with factory.started():
        yield factory


@pytest.fixture(scope="package")
def salt_minion_2(salt_master, venvs):
    factory = _minion(salt_master, random_string("fleet-minion-2-"), venvs["two"])
    with factory.started():
        yield factory


@pytest.fixture(scope="package")
def salt_cli(salt_master):
    return salt_master.salt_cli()


@pytest.fixture(scope="package")
def salt_run_cli(salt_master):
    return salt_master.salt_run_cli()


@pytest.fixture(scope="package")
def salt_call_cli(salt_minion):
    return salt_minion.salt_call_cli()


@pytest.fixture(scope="package")
def runner(salt_master):
    """The master's runners loaded in this process, for reading (``fleet.keys``,
    ``fleet.audit``...) and polling with ``tests.support.waiting.ask``: the runners salt-run
    loads, without its start-up per look. (What salt-run prints is test_runner_output's.)"""
    return salt.runner.RunnerClient(salt_master.config.copy())


@pytest.fixture(scope="package")
def ui(salt_master):
    """The package master's web UI (its engine): ``{"url", "store" (the store's engine),
    "cfg"}``."""
    cfg = config.load(salt_master.config)
    engine = store_engine.get_engine(cfg.db_url)
    store_engine.ensure_schema(engine)
    return {"url": f"http://{cfg.ui.host}:{cfg.ui.port}", "store": engine, "cfg": cfg}
