"""Nodes with the macOS fixtures' signing identities and Xcode bundles, stored as the job
cache stores a ``grains.items`` return (the authenticated path)."""

from __future__ import annotations

import datetime as dt
import pathlib
import uuid

from saltext_fleet.core import hostinfo
from tests.support.store import write

MACOS = pathlib.Path(__file__).parents[1] / "fixtures" / "macos"

#: the fixtures' certificates (tests/fixtures/README.md)
JANE = "737869D2082B715013D7ED485284CAD02C391716"  # Apple Development, 2030-06-30T23:59:59Z
BUILDS = "F8D09B1318E284C6FC2A38B79873D7CB56BB417E"  # Developer ID, 2031-02-01T10:00:00Z
OLD = "0A264B6283335A37AC487CBD741F6536D4CC947D"  # expired 2024-05-01T08:30:00Z
JANE_NOT_AFTER = dt.datetime(2030, 6, 30, 23, 59, 59, tzinfo=dt.timezone.utc)
BUILDS_NOT_AFTER = dt.datetime(2031, 2, 1, 10, 0, 0, tzinfo=dt.timezone.utc)
OLD_NOT_AFTER = dt.datetime(2024, 5, 1, 8, 30, 0, tzinfo=dt.timezone.utc)


def fixture_identities(now: dt.datetime | None = None) -> list[dict]:
    """The identities the ``fleet`` grain reports from the recorded ``security`` output."""
    problems: list[str] = []
    found = hostinfo.signing_identities(
        (MACOS / "find-identity.txt").read_bytes(),
        (MACOS / "find-certificate.txt").read_bytes(),
        now=now or dt.datetime(2026, 12, 5, tzinfo=dt.timezone.utc),
        problems=problems,
    )
    assert not problems, problems
    assert [i["sha1"] for i in found] == [JANE, BUILDS, OLD]
    return found


def xcode(version: str, selected: bool = False, build: str = "15F31d") -> dict:
    return {
        "path": f"/Applications/Xcode-{version}.app",
        "version": version,
        "build": build,
        "selected": selected,
    }


def mac_grains(identities=None, xcodes=None, os_version="14.4.1") -> dict:
    return {
        "os": "MacOS",
        "osrelease": os_version,
        "fleet": {
            "os": "MacOS",
            "os_version": os_version,
            "macos": {
                "xcode": list(xcodes if xcodes is not None else [xcode("15.4", True)]),
                "signing_identities": list(
                    identities if identities is not None else fixture_identities()
                ),
            },
        },
    }


def store_grains(engine, minion: str, grains) -> None:
    """``grains`` of ``minion`` as the job cache stores a ``grains.items`` return."""
    ret = {
        "id": minion,
        "jid": "20261205120000000001",
        "fun": "grains.items",
        "return": grains,
        "retcode": 0,
        "success": True,
    }
    write(engine, [{"kind": "return", "rid": uuid.uuid4().hex, "ret": ret}])
