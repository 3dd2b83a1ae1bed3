"""The master's ISO library on disk: an image is copied in and hashed on the way, from a
file or an HTTP URL, and kept only when its SHA-256 is the one given (else nothing is left,
not even the temporary file); names follow the PiKVM's rules."""

import hashlib
import http.server
import os
import threading

import pytest

from saltext_fleet.kvm import library

DATA = os.urandom(3 * library.CHUNK + 123)
SHA = hashlib.sha256(DATA).hexdigest()


@pytest.fixture
def served(tmp_path):
    """An HTTP server on loopback serving ``tmp_path/www``."""
    www = tmp_path / "www"
    www.mkdir()
    (www / "boot.iso").write_bytes(DATA)

    class Handler(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, directory=str(www), **kwargs)

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_a_file_is_copied_hashed_and_placed(tmp_path):
    source = tmp_path / "src.iso"
    source.write_bytes(DATA)
    lib = tmp_path / "lib"
    seen = []
    temp, size = library.copy_in(
        str(source), str(lib), "boot.iso", "SHA256:" + SHA.upper(), lambda d, t: seen.append((d, t))
    )
    assert size == len(DATA) and os.path.basename(temp).startswith(".boot.iso.part-")
    assert seen[-1] == (len(DATA), len(DATA)) and len(seen) == 4
    assert oct(os.stat(lib).st_mode & 0o777) == "0o700"
    final = library.place(temp, str(lib), "boot.iso")
    assert final == str(lib / "boot.iso") and (lib / "boot.iso").read_bytes() == DATA
    assert sorted(os.listdir(lib)) == ["boot.iso"]


def test_a_mismatch_keeps_nothing(tmp_path, served):
    lib = tmp_path / "lib"
    wrong = "0" * 64
    with pytest.raises(library.IsoMismatchError) as caught:
        library.copy_in(f"{served}/boot.iso", str(lib), "boot.iso", wrong)
    assert caught.value.actual == SHA and caught.value.expected == wrong
    assert "refused, nothing was kept" in str(caught.value) and "boot.iso" in str(caught.value)
    assert os.listdir(lib) == []
    source = tmp_path / "src.iso"
    source.write_bytes(DATA)
    with pytest.raises(library.IsoMismatchError):
        library.copy_in(f"file://{source}", str(lib), "boot.iso", wrong)
    assert os.listdir(lib) == []


def test_an_http_source_is_streamed(tmp_path, served):
    lib = tmp_path / "lib"
    seen = []
    temp, size = library.copy_in(
        f"{served}/boot.iso", str(lib), "boot.iso", SHA, lambda d, t: seen.append(t)
    )
    assert size == len(DATA) and set(seen) == {len(DATA)}
    with open(temp, "rb") as handle:
        assert handle.read() == DATA


@pytest.mark.parametrize(
    ("source", "message"),
    [
        ("relative.iso", "an absolute path expected"),
        ("ftp://example.com/a.iso", "a path on the master, file:// or http"),
        ("", "a path or URL expected"),
        ("/nonexistent/a.iso", "cannot read it"),
        ("http://127.0.0.1:1/a.iso", "download failed"),
    ],
)
def test_a_bad_source_says_so_and_keeps_nothing(tmp_path, source, message):
    lib = tmp_path / "lib"
    with pytest.raises(library.IsoLibraryError, match=message):
        library.copy_in(source, str(lib), "a.iso", SHA, timeout=2)
    assert not lib.exists() or os.listdir(lib) == []


def test_names():
    assert library.default_name("/srv/isos/debian-12.iso") == "debian-12.iso"
    assert library.default_name("https://x.example/a/b%20c.iso?token=1") == "b c.iso"
    for bad in ("../x.iso", ".hidden", "a/b", "", " x.iso", None):
        with pytest.raises(library.IsoLibraryError, match="image name"):
            library.check_name(bad)
    with pytest.raises(library.IsoLibraryError, match="64 hex digits"):
        library.check_sha256("abc")
