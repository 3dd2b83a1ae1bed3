"""
Fleet runners: ``salt-run fleet.*`` on the master.

Reads the master's ``fleet:`` options (see the configuration docs):

.. code-block:: yaml

    fleet:
      db_url: postgresql+psycopg://fleet@127.0.0.1/fleet   # default: SQLite under the cachedir

:depends: saltext-fleet's store (SQLAlchemy 2, psycopg 3), installed with the package.
"""

from __future__ import annotations

import logging
import os

from salt.exceptions import SaltRunnerError

from saltext_fleet import config
from saltext_fleet.store import engine as store_engine
from saltext_fleet.store import queries
from saltext_fleet.store.spool import spool_status

log = logging.getLogger(__name__)

__virtualname__ = "fleet"


def __virtual__():
    try:
        config.load(__opts__)
    except config.FleetConfigError as exc:
        return False, f"the fleet runners cannot load: {exc}"
    return __virtualname__


def _cfg() -> config.FleetConfig:
    return config.load(__opts__)


def store_status():
    """
    Show the store: backend, schema revision (current and newest), spool depth and age,
    quarantined records, and row counts.

    CLI Example:

    .. code-block:: bash

        salt-run fleet.store_status
    """
    cfg = _cfg()
    engine = store_engine.get_engine(cfg.db_url)
    spool = spool_status(os.path.join(__opts__["cachedir"], "fleet", "spool"))
    status = {
        "backend": engine.dialect.name,
        "url": engine.url.render_as_string(hide_password=True),
        "schema_revision": None,
        "schema_head": store_engine.head_revision(),
        "spool_depth": spool["depth"],
        "spool_oldest_age_seconds": spool["oldest_age"],
        "spool_bytes": spool["bytes"],
        "reachable": True,
    }
    try:
        store_engine.ensure_schema(engine)
        status["schema_revision"] = store_engine.current_revision(engine)
        rows = queries.counts(engine)
        status["quarantine"] = rows.pop("quarantine")
        status["rows"] = rows
    except Exception as exc:  # noqa: BLE001 - an unreachable database is a status, not a crash
        if not _is_unreachable(exc):
            raise SaltRunnerError(f"fleet.store_status: {exc}") from exc
        status["reachable"] = False
        status["error"] = f"{type(exc).__name__}: {str(exc).splitlines()[0][:300]}"
    return status


def _is_unreachable(exc: BaseException) -> bool:
    from saltext_fleet.store.batch import is_connection_error

    return is_connection_error(exc)
