"""Shared test fixtures.

Salt daemons and loaders are set up by pytest-salt-factories; every daemon's root_dir lives
under pytest's own temporary folder, so a run leaves nothing behind.
"""

import logging
import os
import pathlib

import pytest

log = logging.getLogger(__name__)

CODE_DIR = pathlib.Path(__file__).resolve().parent.parent
FIXTURES = pathlib.Path(__file__).resolve().parent / "fixtures"


@pytest.hookimpl(tryfirst=True)
def pytest_sessionstart(session):
    """Keep salt-factories' log server on loopback (its default is every interface)."""
    log_server = session.config.pluginmanager.get_plugin("saltfactories-log-server")
    if log_server is not None:
        log_server.log_host = "127.0.0.1"


@pytest.fixture(scope="session")
def event_listener():
    """salt-factories' event listener, bound to loopback instead of every interface."""
    from saltfactories.plugins.event_listener import EventListener

    listener = EventListener()
    listener.host = "127.0.0.1"
    listener.address = f"tcp://127.0.0.1:{listener.port}"
    with listener:
        yield listener


@pytest.fixture(scope="session")
def salt_factories_config(tmp_path_factory):
    """Tell pytest-salt-factories where the code is and how long daemons may take to start.

    Every daemon's root_dir goes under one temporary folder of this test run.
    """
    return {
        "root_dir": tmp_path_factory.mktemp("salt", numbered=False),
        "code_dir": str(CODE_DIR),
        "inject_sitecustomize": "COVERAGE_PROCESS_START" in os.environ,
        "start_timeout": 120 if os.environ.get("CI") else 60,
    }


@pytest.fixture(scope="session")
def fixtures_dir():
    return FIXTURES


def pytest_unconfigure(config):
    # salt-factories logs its manager's repr after pytest has closed the capture streams;
    # that is noise, not a failure.
    logging.raiseExceptions = False
