"""The master configuration this package needs, as data and as a YAML snippet.

``saltext-fleet config`` prints :func:`render` so it can be appended to a master config as is;
the demo and the integration tests build their masters from :func:`master_snippet`, so the
snippet admins paste is the one that is tested.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from saltext_fleet import config
from saltext_fleet.reactors import REACTORS

PACKAGE_DIR = Path(__file__).resolve().parent


def reactor_list() -> list[dict[str, list[str]]]:
    """The ``reactor:`` entries for the SLS files shipped in the package, absolute paths."""
    return [
        {tag: [str(PACKAGE_DIR / "reactors" / sls) for sls in files]}
        for tag, files in sorted(REACTORS.items())
    ]


def master_snippet(db_url: str | None = None, cachedir: str | None = None) -> dict[str, Any]:
    """The master options this package needs.

    Only components the installed package ships are wired in: the job cache and event return
    when the ``fleet`` returner is present, the engine when the ``fleet`` engine is, the
    external pillar when the ``fleet`` pillar is, and the shipped reactor SLS files.
    """
    opts = {"cachedir": cachedir} if cachedir else {}
    fleet = config.load({**opts, "fleet": {"db_url": db_url} if db_url else {}}).as_dict()
    if not db_url and not cachedir:
        # Leave the default to the master: SQLite under its own cachedir.
        fleet.pop("db_url")
    # The key file defaults to the master's own pki_dir, which this snippet does not know.
    fleet.pop("key_file")
    fleet.pop("inventory")  # minion-side options
    fleet.pop("grains")
    fleet.pop("actions")  # the defaults apply; see the configuration page to change them
    if fleet["gate"].get("master") is None:
        fleet["gate"].pop("master")
    snippet: dict[str, Any] = {"fleet": fleet}
    if (PACKAGE_DIR / "returners" / "fleet.py").exists():
        snippet["master_job_cache"] = "fleet"
        snippet["event_return"] = "fleet"
    if (PACKAGE_DIR / "engines" / "fleet.py").exists():
        snippet["engines"] = [{"fleet": {}}]
    if (PACKAGE_DIR / "pillar" / "fleet.py").exists():
        # Each node's assigned baseline as fleet:baseline, for the fleet.baseline state.
        snippet["ext_pillar"] = [{"fleet": {}}]
    # salt/auth events of pending keys carry the minion's enrolment token (its
    # autosign_grains), which the key gate checks; Salt itself autosigns nothing.
    snippet["auth_events_autosign_grains"] = ["pend"]
    # salt/presence/change when nodes connect or go away: online/offline in the store
    snippet["presence_events"] = True
    # ...and a check by id every 5 minutes (presence_events tell nodes apart by address);
    # with several masters on one store, one of them checks each period (the window)
    snippet["schedule"] = {
        "fleet_presence_check": {
            "function": "fleet.presence_check",
            "minutes": 5,
            "kwargs": {"window": 240},
        }
    }
    reactors = reactor_list()
    if reactors:
        snippet["reactor"] = reactors
        # The reactor keeps its runner client for 10 minutes instead of Salt's 60 s: each
        # new one builds a MasterMinion (all loaders, grains and their subprocesses) in
        # every reactor worker thread that runs a runner at once, which cost more than the
        # onboarding runs it served when a hundred minions started together. A runner
        # module synced to the master later reaches the reactor within 10 minutes.
        snippet["reactor_refresh_interval"] = 600
    return snippet


#: What every master of one fleet must share (hot-hot multi-master): see docs/multimaster.rst.
MULTIMASTER_NOTE = (
    "# Several masters on one store (hot-hot): every master needs\n"
    "#  - the same master key pair (<pki_dir>/master.pem and master.pub), as Salt requires;\n"
    "#  - this same fleet: section, with the same fleet:db_url (PostgreSQL);\n"
    "#  - fleet:key_file set to one file on storage the masters share (the vault key: the\n"
    "#    web UI's session key in the store is encrypted with it, and the audit anchor,\n"
    "#    <key_file>.audit-anchor, is kept beside it). See the 'Many masters' page.\n"
)


def render(db_url: str | None = None) -> str:
    """The snippet as commented YAML, ready to append to /etc/salt/master."""
    body = yaml.safe_dump(master_snippet(db_url=db_url), default_flow_style=False, sort_keys=False)
    head = (
        "# saltext-fleet: append to the master config (e.g. /etc/salt/master.d/fleet.conf)\n"
        "# fleet:db_url defaults to SQLite under the master's cachedir; fleet:key_file to\n"
        "# <pki_dir>/fleet.fernet. Options: see the 'Configuration' page of the docs.\n"
        "# fleet:alerts:routes: where the engine's alert worker sends alerts (webhook, slack,\n"
        "# pagerduty, email; secrets with salt-run fleet.alert_secret): the 'Alerting' page.\n"
    )
    return head + MULTIMASTER_NOTE + body
