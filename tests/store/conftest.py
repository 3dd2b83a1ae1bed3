"""Store tests: a migrated engine on each backend (SQLite and real PostgreSQL)."""

import pytest

from saltext_fleet.store import engine as store_engine


@pytest.fixture
def engine(db_url):
    eng = store_engine.get_engine(db_url)
    store_engine.ensure_schema(eng)
    return eng
