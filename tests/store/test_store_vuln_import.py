"""The OSV advisory import (``store/vulns/advisories.py``) on SQLite and PostgreSQL: the real
PyPI advisories of ../shared/data/osv-pypi as a folder and as an OSV ``all.zip``, idempotency,
newer/older ``modified``, withdrawn records, and malformed files among good ones."""

from __future__ import annotations

import json
import os
import pathlib
import time
import zipfile

import pytest
import salt.utils.event
from salt.exceptions import SaltRunnerError
from sqlalchemy import event, func, select

from saltext_fleet.core.vulns import osv, sources
from saltext_fleet.output import fleet_drift as drift_output
from saltext_fleet.runners import fleet as fleet_runner
from saltext_fleet.store import engine as store_engine
from saltext_fleet.store import vulns as store_vulns
from saltext_fleet.store.models import Advisory, AdvisoryPackage, VulnImport
from tests.support.osvdata import SHARED_OSV, needs_shared

#: What the real data set holds: 2661 records, 10 of them withdrawn, one non-record file.
REAL_RECORDS = 2661
REAL_WITHDRAWN = 10


@pytest.fixture(scope="module")
def real_zip(tmp_path_factory):
    """The real records as OSV publishes an ecosystem: ``all.zip`` of top-level
    ``<ID>.json`` members (each YAML record converted to JSON as it is)."""
    path = tmp_path_factory.mktemp("osv") / "all.zip"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED, compresslevel=1) as archive:
        for record in sorted(SHARED_OSV.rglob("*.yaml")):
            doc = osv.load_document(record.read_bytes(), str(record))
            archive.writestr(f"{record.stem}.json", json.dumps(doc))
    return str(path)


def _another_engine(engine, request, tmp_path):
    """A second fresh database on the same backend as ``engine``."""
    if engine.dialect.name == "sqlite":
        url = f"sqlite:///{tmp_path / 'second.db'}"
    else:
        url = request.getfixturevalue("pg_url_factory")()
    other = store_engine.get_engine(url)
    store_engine.ensure_schema(other)
    return other


def _snapshot(engine) -> list:
    with engine.connect() as conn:
        return [
            tuple(row)
            for row in conn.execute(
                select(
                    Advisory.id, Advisory.modified, Advisory.imported_at, Advisory.source
                ).order_by(Advisory.id)
            )
        ] + [
            tuple(row)
            for row in conn.execute(
                select(
                    AdvisoryPackage.advisory_id, AdvisoryPackage.ecosystem, AdvisoryPackage.name
                ).order_by(AdvisoryPackage.advisory_id, AdvisoryPackage.name)
            )
        ]


def _totals(**counts) -> dict:
    return {key: counts.get(key, 0) for key in store_vulns.advisories.OUTCOMES}


@needs_shared
def test_the_real_pypi_folder_and_a_zip_of_it_import_alike_and_again_change_nothing(
    engine, request, tmp_path, real_zip
):
    started = time.monotonic()
    folder = store_vulns.import_advisories(
        engine, sources.open_source(str(SHARED_OSV)), actor="user:test"
    )
    folder_s = time.monotonic() - started
    expected = _totals(added=REAL_RECORDS - REAL_WITHDRAWN, withdrawn=REAL_WITHDRAWN)
    assert folder["counts"] == {"by_ecosystem": {"PyPI": expected}, "total": expected}
    assert (folder["rejected"], folder["skipped"]) == ([], 1)  # .id-allocator: not a record

    with engine.connect() as conn:
        stored = conn.execute(select(func.count()).select_from(Advisory)).scalar_one()
        withdrawn = conn.execute(
            select(func.count()).select_from(Advisory).where(Advisory.withdrawn.is_not(None))
        ).scalar_one()
        assert (stored, withdrawn) == (REAL_RECORDS, REAL_WITHDRAWN)
        aiohttp = store_vulns.advisory(conn, "PYSEC-2024-24")
        assert aiohttp["aliases"] == ["CVE-2024-23334", "GHSA-5h86-8mv2-jq9f"]
        assert (aiohttp["cvss_score"], aiohttp["severity"]) == (7.5, "high")
        assert aiohttp["packages"] == [["PyPI", "aiohttp"]]
        assert aiohttp["source"] == "vulns/aiohttp/PYSEC-2024-24.yaml"
        assert store_vulns.advisory(conn, "PYSEC-2021-76")["severity"] == "unknown"  # no CVSS
        (run,) = store_vulns.import_history(conn, 5)
        assert run["id"] == folder["import_id"] and run["actor"] == "user:test"
        assert run["counts"]["total"] == expected and run["counts"]["skipped"] == 1
        assert run["finished_at"] is not None and run["rejected"] == []

    # the same records as OSV's all.zip, into a fresh database: the same counts
    other = _another_engine(engine, request, tmp_path)
    started = time.monotonic()
    zipped = store_vulns.import_advisories(other, sources.open_source(real_zip))
    zip_s = time.monotonic() - started
    assert zipped["counts"] == folder["counts"] and zipped["rejected"] == []
    assert zipped["skipped"] == 0

    # the zip into the first database: every record unchanged, nothing rewritten
    before = _snapshot(engine)
    again = store_vulns.import_advisories(engine, sources.open_source(real_zip))
    assert again["counts"]["total"] == _totals(unchanged=REAL_RECORDS)
    assert _snapshot(engine) == before
    with engine.connect() as conn:
        assert [r["id"] for r in store_vulns.import_history(conn, 5)] == [
            again["import_id"],
            folder["import_id"],
        ]
    print(f"{engine.dialect.name}: folder {folder_s:.2f} s, zip {zip_s:.2f} s")


def _record(ident="TEST-1", modified="2024-01-01T00:00:00Z", packages=("foo",), **extra):
    record = {
        "schema_version": "1.6.0",
        "id": ident,
        "modified": modified,
        "summary": f"{ident} at {modified}",
        "affected": [
            {
                "package": {"ecosystem": "PyPI", "name": name},
                "ranges": [
                    {"type": "ECOSYSTEM", "events": [{"introduced": "0"}, {"fixed": "2.0"}]}
                ],
            }
            for name in packages
        ],
    }
    record.update(extra)
    return record


def _write(folder: pathlib.Path, name: str, content) -> None:
    path = folder / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(content if isinstance(content, bytes) else json.dumps(content).encode())


def _import(engine, path, **kwargs):
    return store_vulns.import_advisories(engine, sources.open_source(str(path)), **kwargs)


def _stored(engine, ident):
    with engine.connect() as conn:
        return store_vulns.advisory(conn, ident)


def test_a_newer_record_replaces_and_rewrites_its_packages_an_older_one_does_not(engine, tmp_path):
    _write(tmp_path, "v1/TEST-1.json", _record(packages=("Foo_Bar", "baz")))
    assert _import(engine, tmp_path / "v1")["counts"]["total"] == _totals(added=1)
    assert _stored(engine, "TEST-1")["packages"] == [["PyPI", "baz"], ["PyPI", "foo-bar"]]

    newer = _record(modified="2024-06-01T12:00:00.5Z", packages=("qux",))
    newer["severity"] = [
        {"type": "CVSS_V3", "score": "CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:H/I:H/A:H"}
    ]
    _write(tmp_path, "v2/TEST-1.json", newer)
    result = _import(engine, tmp_path / "v2")
    assert result["counts"]["by_ecosystem"]["PyPI"] == _totals(replaced=1)
    stored = _stored(engine, "TEST-1")
    assert stored["packages"] == [["PyPI", "qux"]]
    assert stored["modified"] == "2024-06-01T12:00:00.500000+00:00"
    assert (stored["summary"], stored["severity"], stored["cvss_score"]) == (
        "TEST-1 at 2024-06-01T12:00:00.5Z",
        "critical",
        9.8,
    )
    assert stored["source"] == "v2/TEST-1.json"
    with engine.connect() as conn:
        assert store_vulns.advisories_for(conn, [("PyPI", "foo-bar")]) == []
        (found,) = store_vulns.advisories_for(conn, [("PyPI", "qux"), ("PyPI", "nothing")])
        assert found.id == "TEST-1" and [a.name for a in found.affected] == ["qux"]
        assert store_vulns.all_advisory_names(conn) == {("PyPI", "qux")}

    # older, and equal with other content: the stored record stays
    _write(tmp_path, "v0/TEST-1.json", _record(modified="2023-01-01T00:00:00Z", packages=("old",)))
    _write(
        tmp_path, "same/TEST-1.json", _record(modified="2024-06-01T12:00:00.5Z", packages=("x",))
    )
    for folder in ("v0", "same"):
        result = _import(engine, tmp_path / folder)
        assert result["counts"]["total"] == _totals(unchanged=1), folder
        assert _stored(engine, "TEST-1") == stored


def test_withdrawn_records_are_kept_flagged_and_never_offered_for_matching(engine, tmp_path):
    _write(tmp_path, "a/LIVE-1.json", _record("LIVE-1", packages=("shared",)))
    _write(
        tmp_path,
        "a/GONE-1.json",
        _record("GONE-1", packages=("shared", "only-gone"), withdrawn="2024-02-01T00:00:00Z"),
    )
    result = _import(engine, tmp_path / "a")
    assert result["counts"]["total"] == _totals(added=1, withdrawn=1)
    gone = _stored(engine, "GONE-1")
    assert gone["withdrawn"] == "2024-02-01T00:00:00+00:00"
    assert gone["packages"] == [["PyPI", "only-gone"], ["PyPI", "shared"]]
    with engine.connect() as conn:
        assert [a.id for a in store_vulns.advisories_for(conn, [("PyPI", "shared")])] == ["LIVE-1"]
        assert [
            a.id
            for a in store_vulns.advisories_for(conn, [("PyPI", "shared")], include_withdrawn=True)
        ] == ["GONE-1", "LIVE-1"]
        assert store_vulns.all_advisory_names(conn) == {("PyPI", "shared")}
    # withdrawing a live record later is a replacement that counts as withdrawn
    _write(
        tmp_path,
        "b/LIVE-1.json",
        _record("LIVE-1", "2024-03-01T00:00:00Z", withdrawn="2024-03-01T00:00:00Z"),
    )
    assert _import(engine, tmp_path / "b")["counts"]["total"] == _totals(withdrawn=1)
    with engine.connect() as conn:
        assert store_vulns.advisories_for(conn, [("PyPI", "foo"), ("PyPI", "shared")]) == []


def test_malformed_files_among_good_ones_are_named_and_the_good_ones_imported(engine, tmp_path):
    root = tmp_path / "vulns"
    _write(root, "good/GOOD-1.json", _record("GOOD-1"))
    _write(root, "good/GOOD-2.yaml", b"id: GOOD-2\nmodified: '2024-01-01T00:00:00Z'\naffected:\n"
           b"- package: {ecosystem: PyPI, name: good}\n  versions: ['1.10']\n")  # fmt: skip
    _write(root, "bad/BAD-JSON.json", b'{"id": "BAD-JSON", "modified": ')
    _write(root, "bad/BAD-YAML.yaml", b"id: BAD-YAML\naffected: [unclosed\n")
    no_modified = _record("NO-MODIFIED")
    del no_modified["modified"]
    _write(root, "bad/NO-MODIFIED.json", no_modified)
    deep = _record("DEEP-TYPE")
    deep["affected"][0]["ranges"][0]["events"][1] = {"fixed": ["2.0"]}
    _write(root, "bad/DEEP-TYPE.json", deep)
    os.mkfifo(root / "bad" / "FIFO.json")

    result = _import(engine, root, batch=1)
    rejected = {item["origin"]: item["error"] for item in result["rejected"]}
    assert sorted(rejected) == [
        "vulns/bad/BAD-JSON.json",
        "vulns/bad/BAD-YAML.yaml",
        "vulns/bad/DEEP-TYPE.json",
        "vulns/bad/FIFO.json",
        "vulns/bad/NO-MODIFIED.json",
    ]
    for origin, error in rejected.items():
        assert error.startswith(origin + ": "), error
    assert "not valid JSON" in rejected["vulns/bad/BAD-JSON.json"]
    assert "not valid YAML" in rejected["vulns/bad/BAD-YAML.yaml"]
    assert "$.modified" in rejected["vulns/bad/NO-MODIFIED.json"]
    assert "$.affected[0].ranges[0].events[1]" in rejected["vulns/bad/DEEP-TYPE.json"]
    assert "not a regular file" in rejected["vulns/bad/FIFO.json"]
    assert result["rejected_count"] == 5
    assert result["counts"]["total"] == _totals(added=2, rejected=5)
    # a record that says its ecosystem counts its rejection there
    assert result["counts"]["by_ecosystem"] == {
        "PyPI": _totals(added=2, rejected=2),
        "unknown": _totals(rejected=3),
    }
    assert _stored(engine, "GOOD-2")["record"]["affected"][0]["versions"] == ["1.10"]
    assert _stored(engine, "GOOD-1") is not None
    with engine.connect() as conn:
        row = conn.execute(select(VulnImport).where(VulnImport.id == result["import_id"])).one()
        assert row.rejected == result["rejected"]
        assert row.counts["total"] == result["counts"]["total"]


def test_text_no_column_can_hold_is_rejected_by_name_not_with_its_batch(
    engine, tmp_path, monkeypatch
):
    root = tmp_path / "vulns"
    _write(root, "GOOD-1.json", _record("GOOD-1"))
    _write(root, "NUL-1.json", _record("NUL-1", summary="a\u0000b"))
    # a lone surrogate, as JSON's escapes can write it
    _write(
        root, "SURROGATE-1.json", json.dumps(_record("SURROGATE-1", aliases=["\ud800"])).encode()
    )
    long_eco = _record("LONG-ECO-1")
    long_eco["affected"][0]["package"]["ecosystem"] = "E" * 100
    _write(root, "LONG-ECO-1.json", long_eco)
    _write(root, "evil\x1b]0;title\x07.json", b"{")
    _write(root, "GOOD-2.json", _record("GOOD-2"))

    result = _import(engine, root)
    rejected = {item["origin"]: item["error"] for item in result["rejected"]}
    assert "$.summary" in rejected["vulns/NUL-1.json"]
    assert "$.aliases[0]" in rejected["vulns/SURROGATE-1.json"]
    assert "lone UTF-16 surrogate" in rejected["vulns/SURROGATE-1.json"]
    assert "$.affected[0].package.ecosystem: longer than 64" in rejected["vulns/LONG-ECO-1.json"]
    assert "vulns/evil.json" in rejected  # the escape sequence is gone from what people read
    assert result["counts"]["total"] == _totals(added=2, rejected=4)

    if engine.dialect.name != "postgresql":
        return
    # PostgreSQL holds an ecosystem of at most 64 characters: should a record slip past the
    # checks, its batch is written again one record at a time and only that one is rejected
    monkeypatch.setattr(store_vulns.advisories, "_check_storable", lambda *args: None)
    _write(tmp_path, "more/GOOD-3.json", _record("GOOD-3"))
    long_eco["id"] = "LONG-ECO-2"
    _write(tmp_path, "more/LONG-ECO-2.json", long_eco)
    _write(tmp_path, "more/GOOD-4.json", _record("GOOD-4"))
    result = _import(engine, tmp_path / "more")
    (item,) = result["rejected"]
    assert item["origin"] == "more/LONG-ECO-2.json"
    assert item["error"].startswith("more/LONG-ECO-2.json: the database refused it: value too long")
    assert result["counts"]["total"] == _totals(added=2, rejected=1)
    assert _stored(engine, "GOOD-3") and _stored(engine, "GOOD-4")
    assert _stored(engine, "LONG-ECO-2") is None


@pytest.fixture
def pg_engine(pg_url_factory):
    eng = store_engine.get_engine(pg_url_factory())
    store_engine.ensure_schema(eng)
    return eng


def test_a_newer_copy_another_import_stores_meanwhile_keeps_its_packages(pg_engine, tmp_path):
    """Two imports at once (PostgreSQL only: SQLite serialises writers, so no import writes
    between another's read and write): the one that read no stored copy loses to the newer
    record the other committed since, packages included."""
    engine = pg_engine
    _write(
        tmp_path, "old/RACE-1.json", _record("RACE-1", "2024-01-01T00:00:00Z", packages=("old",))
    )
    _write(
        tmp_path, "new/RACE-1.json", _record("RACE-1", "2025-01-01T00:00:00Z", packages=("new",))
    )
    raced = []

    def after_read(conn, cursor, statement, parameters, context, executemany):
        if not raced and statement.lstrip().startswith("SELECT advisories.id, advisories.modified"):
            raced.append(statement)
            # the other import, on a connection of its own: it commits before this one writes
            _import(engine, tmp_path / "new")

    event.listen(engine, "after_cursor_execute", after_read)
    try:
        _import(engine, tmp_path / "old")
    finally:
        event.remove(engine, "after_cursor_execute", after_read)
    assert raced
    stored = _stored(engine, "RACE-1")
    assert stored["modified"].startswith("2025-01-01") and stored["packages"] == [["PyPI", "new"]]


def test_batches_report_progress_and_a_bad_batch_is_refused(engine, tmp_path):
    for index in range(5):
        _write(tmp_path, f"v/T-{index}.json", _record(f"T-{index}"))
    _write(tmp_path, "v/T-0-again.json", _record("T-0", "2025-01-01T00:00:00Z", packages=("new",)))
    calls = []
    result = _import(engine, tmp_path / "v", batch=2, progress=lambda *args: calls.append(args))
    # T-0 twice (T-0-again.json is read first): the newer one is stored, the older counts as
    # unchanged without waiting for a write
    assert calls == [(3, 6), (5, 6), (6, 6)]
    assert result["counts"]["total"] == _totals(added=5, unchanged=1)
    assert _stored(engine, "T-0")["packages"] == [["PyPI", "new"]]
    for bad in (0, -1, "10", True, store_vulns.advisories.MAX_BATCH + 1):
        with pytest.raises(store_vulns.AdvisoryImportError, match="batch must be"):
            _import(engine, tmp_path / "v", batch=bad)


# -- the runner, without daemons ------------------------------------------------------------


class _Bus:
    def __init__(self):
        self.fired = []

    def fire_event(self, data, tag):
        self.fired.append((tag, data))
        return True


class _JidEvent(salt.utils.event.NamespacedEvent):
    """Salt's own NamespacedEvent (what salt-run injects), on a bus that records, printing
    through the outputter each event names, as salt-run does."""

    def __init__(self):
        self.printed = []
        super().__init__(_Bus(), "salt/run/20261205090000000001", print_func=self._print)

    def _print(self, suffix, data):
        self.printed.append(drift_output.render({"suffix": suffix, "event": data}))


def test_the_runner_imports_prints_a_bar_per_batch_and_names_rejected_files(monkeypatch, tmp_path):
    db = tmp_path / "fleet.db"
    opts = {
        "fleet": {"db_url": f"sqlite:///{db}", "key_file": str(tmp_path / "fleet.fernet")},
        "cachedir": str(tmp_path),
        "pki_dir": str(tmp_path / "pki"),
        "sock_dir": str(tmp_path / "sock"),
        "output": None,
    }
    event = _JidEvent()
    for name, value in (("__opts__", opts), ("__context__", {}), ("__jid_event__", event)):
        monkeypatch.setattr(fleet_runner, name, value, raising=False)
    monkeypatch.setitem(fleet_runner.__dict__, "__user__", "alice")
    after = []
    monkeypatch.setattr(fleet_runner, "_after_import", lambda engine, result: after.append(result))
    for index in range(5):
        _write(tmp_path, f"osv/pkg/T-{index}.json", _record(f"T-{index}"))
    _write(tmp_path, "osv/pkg/BROKEN.json", b"{")

    result = fleet_runner.cve_import(str(tmp_path / "osv"), batch="2")
    assert result["counts"]["by_ecosystem"] == {
        "PyPI": _totals(added=5),
        "unknown": _totals(rejected=1),
    }
    assert [r["origin"] for r in result["rejected"]] == ["osv/pkg/BROKEN.json"]
    assert "not valid JSON" in result["rejected"][0]["error"]
    assert after == [result]  # the findings recompute's call site ran once
    assert event.printed == [
        f"... [....................]   0% 0/6  importing about 6 OSV records from {tmp_path / 'osv'}",
        # BROKEN.json comes first: the first batch of 2 records is written after 3 files
        "... [##########..........]  50% 3/6  imported 3 of about 6",
        "... [################....]  83% 5/6  imported 5 of about 6",
        "... [####################] 100% 6/6  imported 6 of about 6",
        "... 5 added, 0 replaced, 0 unchanged, 0 withdrawn, 1 rejected in "
        + event.printed[-1].rsplit(" in ", 1)[1],
    ]
    engine = store_engine.get_engine(f"sqlite:///{db}")
    with engine.connect() as conn:
        (run,) = store_vulns.import_history(conn, 1)
    assert run["actor"] == "user:alice" and run["rejected"] == result["rejected"]

    for bad, words in (
        (str(tmp_path / "nowhere"), "no such file or folder"),
        (str(db), "not a zip archive, a folder or a .json/.yaml/.yml file"),
    ):
        with pytest.raises(SaltRunnerError, match="fleet.cve_import: .*" + words):
            fleet_runner.cve_import(bad)
    with pytest.raises(SaltRunnerError, match="batch must be"):
        fleet_runner.cve_import(str(tmp_path / "osv"), batch=0)
    with pytest.raises(SaltRunnerError, match="batch='lots': invalid literal"):
        fleet_runner.cve_import(str(tmp_path / "osv"), batch="lots")
    with engine.connect() as conn:  # refused before anything was read or recorded
        assert len(store_vulns.import_history(conn, 10)) == 1
