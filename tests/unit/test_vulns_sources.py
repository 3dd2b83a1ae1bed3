"""Where OSV documents come from (``core/vulns/sources.py``): an ecosystem's ``all.zip``, a
folder walked recursively, one file; the zip-bomb and symlink guards; per-file errors."""

from __future__ import annotations

import json
import os
import struct
import zipfile

import pytest

from saltext_fleet.core.vulns import sources


def _doc(ident: str) -> bytes:
    return json.dumps({"id": ident, "modified": "2024-01-01T00:00:00Z"}).encode()


def _zip(path, members: dict[str, bytes], method=zipfile.ZIP_DEFLATED):
    with zipfile.ZipFile(path, "w", compression=method) as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return str(path)


def test_an_osv_all_zip_yields_its_members_one_by_one(tmp_path):
    path = _zip(
        tmp_path / "all.zip",
        {"PYSEC-1.json": _doc("PYSEC-1"), "README": b"not a record", "GHSA-x.json": _doc("GHSA-x")},
    )
    source = sources.open_source(path)
    assert source.kind == "zip" and source.estimate() == 2
    entries = list(source)
    assert entries == [
        ("all.zip/PYSEC-1.json", _doc("PYSEC-1"), None),
        ("all.zip/GHSA-x.json", _doc("GHSA-x"), None),
    ]
    assert source.skipped == 1
    # a generator: one member at a time, never the archive read whole
    iterator = iter(source)
    assert next(iterator).origin == "all.zip/PYSEC-1.json"


def test_a_zip_is_known_by_its_content_not_its_name(tmp_path):
    path = _zip(tmp_path / "osv-pypi.download", {"A.json": _doc("A")})
    assert sources.open_source(path).kind == "zip"


def test_zip_bomb_a_member_over_the_size_cap_is_an_error_and_never_read(tmp_path):
    path = _zip(
        tmp_path / "all.zip",
        {"BOMB.json": b"\0" * (sources.MAX_BYTES + 1), "OK.json": _doc("OK")},
    )
    assert os.path.getsize(path) < 100_000  # small on disk, 16 MiB inflated
    entries = list(sources.open_source(path))
    assert entries[0].origin == "all.zip/BOMB.json" and entries[0].data == b""
    assert "more than the 16 MiB" in entries[0].error
    assert entries[1] == ("all.zip/OK.json", _doc("OK"), None)


def _patch_sizes(path, real: int, declared: int) -> None:
    """Make the archive's headers declare ``declared`` bytes for its one member of ``real``."""
    data = bytearray(open(path, "rb").read())
    local = data.index(b"PK\x03\x04")
    assert struct.unpack_from("<I", data, local + 22)[0] == real
    struct.pack_into("<I", data, local + 22, declared)
    central = data.index(b"PK\x01\x02")
    assert struct.unpack_from("<I", data, central + 24)[0] == real
    struct.pack_into("<I", data, central + 24, declared)
    open(path, "wb").write(bytes(data))


def test_zip_bomb_a_member_that_lies_about_its_size_is_read_no_further_than_it_says(tmp_path):
    big = b"{" + b" " * 1_000_000 + b"}"
    path = _zip(tmp_path / "all.zip", {"LIAR.json": big, "OK.json": _doc("OK")})
    _patch_sizes(path, len(big), 100)
    entries = list(sources.open_source(path))
    assert entries[0].origin == "all.zip/LIAR.json" and entries[0].data == b""
    assert "cannot read the archive member" in entries[0].error
    assert entries[1] == ("all.zip/OK.json", _doc("OK"), None)


def test_zip_bomb_too_many_members_or_too_many_bytes_refuses_the_archive(tmp_path):
    path = _zip(tmp_path / "all.zip", {f"A{i}.json": _doc(f"A{i}") for i in range(3)})
    with pytest.raises(sources.SourceError, match=r"all\.zip: the archive has 3 members"):
        sources.open_source(path, max_entries=2)
    with pytest.raises(sources.SourceError, match="uncompressed, more than"):
        sources.open_source(path, max_total_bytes=10)


def _tree(root, files: dict[str, bytes]):
    for name, data in files.items():
        target = root / name
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)


def test_a_folder_is_walked_recursively_for_json_and_yaml(tmp_path):
    root = tmp_path / "vulns"
    _tree(
        root,
        {
            "b-pkg/PYSEC-2.yaml": b"id: PYSEC-2\n",
            "a-pkg/PYSEC-1.yml": b"id: PYSEC-1\n",
            "a-pkg/deeper/GHSA-1.JSON": _doc("GHSA-1"),
            ".id-allocator": b"deadbeef",
            "LICENSE": b"CC-BY",
        },
    )
    source = sources.open_source(str(root))
    assert source.kind == "folder" and source.estimate() == 3
    assert [e.origin for e in source] == [
        "vulns/a-pkg/PYSEC-1.yml",
        "vulns/a-pkg/deeper/GHSA-1.JSON",
        "vulns/b-pkg/PYSEC-2.yaml",
    ]
    assert source.skipped == 2  # .id-allocator and LICENSE: not documents, not errors
    assert [e.data for e in source][0] == b"id: PYSEC-1\n"


def test_symlinks_out_of_the_folder_are_not_followed(tmp_path):
    outside = tmp_path / "secret"
    outside.mkdir()
    (outside / "shadow.json").write_bytes(b'{"root": "x"}')
    root = tmp_path / "vulns"
    _tree(root, {"pkg/A.json": _doc("A")})
    os.symlink(outside / "shadow.json", root / "pkg" / "escape.json")
    os.symlink(root / "pkg" / "A.json", root / "pkg" / "inside.json")
    os.symlink(outside, root / "dirlink")
    entries = {e.origin: e for e in sources.open_source(str(root))}
    assert set(entries) == {"vulns/pkg/A.json", "vulns/pkg/escape.json", "vulns/pkg/inside.json"}
    escape = entries["vulns/pkg/escape.json"]
    assert escape.data == b"" and "outside" in escape.error and "not followed" in escape.error
    assert entries["vulns/pkg/inside.json"] == ("vulns/pkg/inside.json", _doc("A"), None)


def test_an_unreadable_file_is_an_error_of_its_own(tmp_path):
    root = tmp_path / "vulns"
    _tree(root, {"a/A.json": _doc("A"), "c/C.json": _doc("C")})
    os.mkfifo(root / "a" / "fifo.json")  # would block a plain open()
    os.symlink(root / "gone.json", root / "a" / "dangling.json")
    (root / "b").mkdir()
    (root / "b" / "huge.json").write_bytes(b" " * 100)
    source = sources.open_source(str(root), max_bytes=60)
    entries = {e.origin: e for e in source}
    assert entries["vulns/a/A.json"].error is None and entries["vulns/c/C.json"].error is None
    assert "not a regular file" in entries["vulns/a/fifo.json"].error
    assert "cannot open" in entries["vulns/a/dangling.json"].error
    assert entries["vulns/b/huge.json"].error == (
        "100 bytes, more than the 60 bytes a record may have; not read"
    )


def test_a_sub_folder_that_cannot_be_listed_is_an_error_of_its_own(tmp_path, monkeypatch):
    root = tmp_path / "vulns"
    _tree(root, {"a/A.json": _doc("A"), "locked/B.json": _doc("B"), "z/Z.json": _doc("Z")})
    scandir = os.scandir

    def denied(path="."):  # root can read anything: a permission error as a non-root sees it
        if os.fspath(path).endswith("locked"):
            raise PermissionError(13, "Permission denied", os.fspath(path))
        return scandir(path)

    monkeypatch.setattr(os, "scandir", denied)
    entries = list(sources.open_source(str(root)))
    assert [(e.origin, e.error) for e in entries] == [
        ("vulns/a/A.json", None),
        ("vulns/locked", "cannot read the folder: Permission denied"),
        ("vulns/z/Z.json", None),
    ]


def test_a_single_file(tmp_path):
    path = tmp_path / "PYSEC-1.yaml"
    path.write_bytes(b"id: PYSEC-1\n")
    source = sources.open_source(str(path))
    assert source.kind == "file" and source.estimate() == 1
    assert list(source) == [("PYSEC-1.yaml", b"id: PYSEC-1\n", None)]


@pytest.mark.parametrize("what", ["missing", "text", "fifo", "empty"])
def test_a_wrong_path_is_an_error_naming_it(tmp_path, what):
    path = tmp_path / "osv-data.txt"
    if what == "text":
        path.write_text("hello")
    elif what == "fifo":
        os.mkfifo(path)
    elif what == "empty":
        path = ""
    with pytest.raises(sources.SourceError) as err:
        sources.open_source(str(path))
    message = str(err.value)
    if what == "empty":
        assert "path of an OSV zip, folder or file" in message
        return
    assert str(path) in message
    expected = {
        "missing": "no such file or folder",
        "text": "not a zip archive, a folder or a .json/.yaml/.yml file",
        "fifo": "not a zip archive, a folder or a JSON/YAML file",
    }[what]
    assert expected in message


def test_a_damaged_zip_is_an_error_naming_it(tmp_path):
    path = _zip(tmp_path / "all.zip", {"A.json": _doc("A")})
    data = open(path, "rb").read()
    cut = tmp_path / "cut.zip"
    cut.write_bytes(data[: len(data) // 2])  # the central directory is gone: not a zip
    with pytest.raises(sources.SourceError, match=r"cut\.zip: not a zip archive"):
        sources.open_source(str(cut))
