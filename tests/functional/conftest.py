"""Functional layer: Salt's real loaders over a real minion opts dict, no daemon running."""

import pytest
from saltfactories.utils.functional import Loaders


@pytest.fixture(scope="package")
def minion_id():
    return "func-tests-minion"


@pytest.fixture(scope="module")
def minion_config_overrides():
    """Modules override this to add minion options (e.g. ``fleet:inventory:pip``)."""
    return {}


@pytest.fixture(scope="module")
def minion_opts(salt_factories, minion_id, minion_config_overrides):
    overrides = {"file_client": "local"}
    overrides.update(minion_config_overrides)
    factory = salt_factories.salt_minion_daemon(minion_id, overrides=overrides)
    return factory.config.copy()


@pytest.fixture(scope="module")
def loaders(minion_opts):
    return Loaders(minion_opts, loaded_base_name=f"{__name__}.loaded")


@pytest.fixture(autouse=True)
def reset_loaders_state(loaders):
    try:
        yield
    finally:
        loaders.reset_state()
