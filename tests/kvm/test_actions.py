"""The pikvm Salt modules' core (saltext_fleet.kvm.actions) and the client pool, against the
fake kvmd: no Salt daemon."""

from __future__ import annotations

import base64
import hashlib
import http.server
import os
import threading

import pytest

from saltext_fleet.kvm import actions
from saltext_fleet.kvm.client import KvmClient
from saltext_fleet.kvm.errors import (
    KvmArgumentError,
    KvmBusyError,
    KvmConfigError,
    KvmError,
    KvmImageMismatchError,
)
from saltext_fleet.kvm.options import load_options
from saltext_fleet.kvm.pool import KvmPool
from tests.kvm.conftest import options_for
from tests.support.waiting import wait_for

ISO = b"ISO9660-fake-image " * 50_000  # about 1 MB: several upload chunks


@pytest.fixture
def iso(tmp_path):
    path = tmp_path / "debian.iso"
    path.write_bytes(ISO)
    return str(path), hashlib.sha256(ISO).hexdigest()


def _writes(fake):
    return fake.seen("/api/msd/write")


def _changes(fake):
    """POSTs that change the device (a login changes nothing on it)."""
    return [r.path for r in fake.requests if r.method == "POST" and r.path != "/api/auth/login"]


# ----- iso_mount ---------------------------------------------------------------------------


def test_wrong_sha256_is_refused_before_anything_reaches_the_device(client, fake, iso):
    path, good = iso
    wrong = hashlib.sha256(b"something else").hexdigest()
    with pytest.raises(KvmImageMismatchError) as err:
        actions.iso_mount(client, "debian.iso", path, wrong)
    assert err.value.expected == wrong and err.value.actual == good
    assert str(err.value).startswith("kvm 127.0.0.1: image 'debian.iso': sha256 mismatch")
    assert "nothing was uploaded" in str(err.value)
    assert _writes(fake) == []
    assert fake.uploads == {} and fake.images == {}
    assert _changes(fake) == []


def test_good_image_is_uploaded_selected_and_connected(client, fake, iso):
    path, good = iso
    result = actions.iso_mount(client, "debian.iso", path, "SHA256:" + good.upper())
    assert result["drive"] == {
        "image": "debian.iso",
        "connected": True,
        "cdrom": True,
        "rw": False,
    }
    assert result["size"] == len(ISO) and result["sha256"] == good
    assert fake.uploads["debian.iso"] == {"size": len(ISO), "written": len(ISO), "sha256": good}
    assert fake.drive["connected"] is True
    state = actions.msd_state(client)
    assert state["images"]["debian.iso"] == {"size": len(ISO), "complete": True}
    assert state["drive"]["image"] == "debian.iso" and state["drive"]["connected"]
    # The image was known to kvmd only after its delay: the select came after the wait.
    order = _changes(fake)
    assert order.index("/api/msd/write") < order.index("/api/msd/set_params")
    assert order[-1] == "/api/msd/set_connected"


def test_an_existing_image_needs_overwrite_and_a_connected_drive_is_swapped(client, fake, iso):
    path, good = iso
    actions.iso_mount(client, "debian.iso", path, good)
    with pytest.raises(KvmArgumentError, match="already on the device; overwrite=True"):
        actions.iso_mount(client, "debian.iso", path, good)
    assert len(_writes(fake)) == 1
    result = actions.iso_mount(client, "debian.iso", path, good, overwrite=True, cdrom=False)
    assert result["replaced"] is True and result["ejected"] == "debian.iso"
    assert result["drive"]["connected"] and result["drive"]["cdrom"] is False
    assert len(_writes(fake)) == 2


def test_a_file_changed_after_hashing_never_completes_its_upload(client, fake, iso, tmp_path):
    path, good = iso
    with pytest.raises(KvmImageMismatchError, match="changed while uploading"):
        with actions.staged_image("h", "debian.iso", path, good) as staged:
            with open(path, "r+b") as handle:  # changed between hash and upload
                handle.write(b"X")
            with open(staged.path, "rb") as handle:
                reader = actions.VerifyingReader(
                    client.host, "debian.iso", handle, staged.size, good
                )
                client.msd_write("debian.iso", reader, size=staged.size)
    # kvmd notices the dropped connection a moment later
    upload = wait_for("the aborted upload", lambda: fake.uploads.get("debian.iso"), 5, 0.05)
    assert upload["written"] < len(ISO)  # the last chunk was withheld
    assert "debian.iso" not in fake.images and "debian.iso" not in fake.pending_images


def test_an_http_source_is_streamed_hashed_and_its_temp_file_removed(client, fake, iso, tmp_path):
    path, good = iso

    class Handler(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, directory=os.path.dirname(path), **kwargs)

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    staging = tmp_path / "staging"
    staging.mkdir()
    url = f"http://127.0.0.1:{server.server_address[1]}/debian.iso"
    try:
        with pytest.raises(KvmImageMismatchError):
            actions.iso_mount(client, "web.iso", url, "0" * 64, tmp_dir=str(staging))
        assert _writes(fake) == [] and list(staging.iterdir()) == []
        result = actions.iso_mount(client, "web.iso", url, good, tmp_dir=str(staging))
        assert result["drive"]["image"] == "web.iso"
        assert fake.uploads["web.iso"]["sha256"] == good
        assert list(staging.iterdir()) == []
        with pytest.raises(KvmArgumentError, match="download failed"):
            actions.iso_mount(client, "gone.iso", url + ".missing", good, tmp_dir=str(staging))
    finally:
        server.shutdown()
        server.server_close()


def test_a_salt_source_goes_through_fetch(client, fake, iso, tmp_path):
    path, good = iso
    fetched = []

    def fetch(url, dest):
        fetched.append(url)
        with open(dest, "wb") as handle:
            handle.write(ISO)
        return dest

    result = actions.iso_mount(
        client, "s.iso", "salt://isos/s.iso", good, fetch=fetch, tmp_dir=str(tmp_path)
    )
    assert fetched == ["salt://isos/s.iso"] and result["drive"]["connected"]
    with pytest.raises(KvmArgumentError, match="not found on the Salt fileserver"):
        actions.iso_mount(
            client,
            "t.iso",
            "salt://nope.iso",
            good,
            fetch=lambda u, d: False,
            tmp_dir=str(tmp_path),
        )
    with pytest.raises(KvmArgumentError, match="salt:// needs Salt's file client"):
        actions.iso_mount(client, "t.iso", "salt://x.iso", good, tmp_dir=str(tmp_path))
    assert [p.name for p in tmp_path.iterdir()] == ["debian.iso"]


@pytest.mark.parametrize(
    ("name", "source", "sha256", "message"),
    [
        ("../etc.iso", "/x.iso", "0" * 64, "image name '../etc.iso': one file name"),
        (".hidden.iso", "/x.iso", "0" * 64, "image name '.hidden.iso'"),
        ("", "/x.iso", "0" * 64, "image name '': a non-empty string"),
        ("a.iso", "/x.iso", "abc", "sha256 'abc': 64 hex digits expected"),
        ("a.iso", "/x.iso", 12345, "quote it on the command line"),
        ("a.iso", "relative/x.iso", "0" * 64, "an absolute path expected"),
        ("a.iso", "ftp://host/x.iso", "0" * 64, "a path, file://, http(s):// or salt://"),
        ("a.iso", "/no/such/file.iso", "0" * 64, "no such file"),
    ],
)
def test_bad_iso_arguments_are_clear_errors_and_send_nothing_but_reads(
    client, fake, name, source, sha256, message
):
    with pytest.raises(KvmArgumentError) as err:
        actions.iso_mount(client, name, source, sha256)
    assert message in str(err.value)
    assert str(err.value).startswith("kvm 127.0.0.1: ")
    assert _changes(fake) == []


def test_iso_eject_disconnects_unselects_and_removes(client, fake, iso):
    path, good = iso
    actions.iso_mount(client, "debian.iso", path, good)
    result = actions.iso_eject(client)
    assert result["image"] == "debian.iso" and result["was_connected"] is True
    assert result["drive"]["connected"] is False and result["drive"]["image"] is None
    assert "debian.iso" in fake.images
    actions.iso_mount(client, "debian.iso", path, good, overwrite=True)
    assert actions.iso_eject(client, remove=True)["removed"] is True
    assert fake.images == {}
    assert actions.iso_eject(client) == {
        "image": None,
        "was_connected": False,
        "removed": False,
        "drive": {"image": None, "connected": False, "cdrom": True, "rw": False},
    }


# ----- power, click, snapshot, grains ------------------------------------------------------


def test_power_actions_reach_the_device_and_report_the_led(client, fake):
    result = actions.power(client, "on", wait=True)
    assert result["clicked"] is True and result["power_before"] is False
    assert result["leds"]["power"] is True
    assert fake.seen("/api/atx/power")[-1].params == {"action": "on", "wait": "1"}
    result = actions.power(client, "reset_hard", wait=True)
    assert result["action"] == "reset_hard" and result["clicked"] is True
    assert fake.seen("/api/atx/power")[-1].params["action"] == "reset_hard"
    assert actions.power(client, "on")["clicked"] is False  # already on: kvmd does nothing
    assert fake.atx_clicks == ["power", "reset"]


def test_power_takes_the_booleans_salt_makes_of_on_and_off(client, fake):
    # `salt pikvm-1 pikvm.power on` arrives as True (YAML 1.1), `off` as False
    assert actions.power(client, True, wait=True)["action"] == "on"
    assert actions.power(client, False, wait=True)["action"] == "off"
    assert [r.params["action"] for r in fake.seen("/api/atx/power")] == ["on", "off"]


def test_click_presses_the_button(client, fake):
    assert actions.click(client, "power", wait=True)["leds"]["power"] is True
    assert fake.seen("/api/atx/click")[-1].params == {"button": "power", "wait": "1"}


@pytest.mark.parametrize(
    ("func", "arg", "message"),
    [
        (actions.power, "explode", "power action 'explode': one of on, off, off_hard, reset_hard"),
        (actions.power, None, "power action None: one of on, off, off_hard, reset_hard"),
        (actions.click, "kick", "button 'kick': one of power, power_long, reset"),
    ],
)
def test_bad_atx_arguments_are_refused_before_any_request(client, fake, func, arg, message):
    with pytest.raises(KvmArgumentError) as err:
        func(client, arg)
    assert str(err.value) == f"kvm 127.0.0.1: {message}"
    assert fake.requests == []


def test_snapshot_base64_or_file(client, fake, tmp_path):
    shot = actions.snapshot(client)
    data = base64.b64decode(shot["jpeg_base64"])
    assert data.startswith(b"\xff\xd8") and shot["bytes"] == len(data)
    path = tmp_path / "shot.jpg"
    shot = actions.snapshot(client, path=str(path))
    assert shot["path"] == str(path) and path.read_bytes().startswith(b"\xff\xd8")
    assert "jpeg_base64" not in shot
    with pytest.raises(KvmArgumentError, match="an absolute path expected"):
        actions.snapshot(client, path="shot.jpg")
    fake.signal = False
    with pytest.raises(KvmError, match="503 UnavailableError"):
        actions.snapshot(client)
    assert actions.snapshot(client, allow_offline=True)["bytes"] > 0


def test_info_grains_describe_the_device(client, fake):
    grains = actions.info_grains(client.info(), client.options)
    assert grains["os"] == "PiKVM" and grains["osrelease"] == "4.197"
    assert grains["serialnumber"] == "10000000FAKE0001"
    assert grains["cpuarch"] == "aarch64" and grains["model"] == "v4plus"
    assert grains["pikvm"]["kvmd_version"] == "4.197"
    assert grains["pikvm"]["platform"]["board"] == "rpi4"
    assert grains["pikvm"]["api"] == f"https://127.0.0.1:{fake.port}"
    assert "temp" not in str(grains)  # volatile values stay out of cached grains
    assert actions.info_grains({}) == {
        "pikvm": {
            "kvmd_version": None,
            "streamer": {"app": None, "version": None},
            "platform": {},
            "kernel": {},
            "meta": {},
            "host": None,
            "auth_enabled": None,
            "extras": [],
        },
        "os": "PiKVM",
        "os_family": "PiKVM",
        "manufacturer": "PiKVM",
        "osfullname": "PiKVM",
    }


# ----- options ----------------------------------------------------------------------------


def test_proxy_options_drop_salt_keys_and_name_bad_ones(fake):
    options = actions.proxy_options({"proxytype": "pikvm", **options_for(fake)})
    assert options.port == fake.port
    with pytest.raises(KvmConfigError, match="unknown option"):
        actions.proxy_options({"proxytype": "pikvm", "hots": "x", "password": "p"})


def test_local_options_pin_the_devices_own_certificate(fake, tmp_path):
    cert = tmp_path / "server.crt"
    cert.write_text(open(fake.cert_path).read())
    options = actions.local_options({"port": fake.port, "password": "x"}, cert_file=str(cert))
    assert (
        options.host == "127.0.0.1"
        and options.fingerprint == fake.fingerprint.replace(":", "").lower()
    )
    unpinned = actions.local_options({"password": "x"}, cert_file=str(tmp_path / "none"))
    assert unpinned.fingerprint is None and unpinned.verify is True
    explicit = actions.local_options({"password": "x", "verify": False}, cert_file=str(cert))
    assert explicit.fingerprint is None


# ----- pool -------------------------------------------------------------------------------


def test_pool_reuses_one_session_per_concurrent_user(fake):
    pool = KvmPool(load_options(options_for(fake)))
    for _ in range(3):
        with pool.client() as kvm:
            kvm.atx_state()
    assert pool.created == 1 and len(fake.seen("/api/auth/login")) == 1
    with pool.client() as one, pool.client() as two:
        assert one is not two
        one.atx_state()
        two.atx_state()
    assert pool.created == 2 and len(fake.seen("/api/auth/login")) == 2
    pool.close()


def test_pool_after_fork_keeps_the_session_and_drops_the_connection(fake):
    pool = KvmPool(load_options(options_for(fake)))
    with pool.client() as kvm:
        kvm.atx_state()
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child reports through the pipe
        try:
            with pool.client() as child:
                same = child is kvm
                child.atx_state()
            os.write(write, b"ok" if same else b"new")
        finally:
            os._exit(0)
    os.close(write)
    assert os.read(read, 10) == b"ok"
    os.waitpid(pid, 0)
    os.close(read)
    with pool.client() as again:  # the parent's connection still works
        again.atx_state()
    assert len(fake.seen("/api/auth/login")) == 1
    assert len(fake.seen("/api/atx")) == 3
    pool.close()


def test_client_errors_name_the_device(fake):
    with KvmClient(options_for(fake, password="wrong")) as kvm, pytest.raises(KvmError) as err:
        actions.power(kvm, "on")
    assert str(err.value).startswith("kvm 127.0.0.1: POST /api/auth/login: HTTP 403")


def test_iso_mount_during_another_upload_is_busy_and_sends_nothing(client, fake, iso):
    path, good = iso
    fake.uploading = {"name": "other.iso", "size": 10, "written": 1}
    with pytest.raises(KvmBusyError, match="MsdIsBusyError: an upload is in progress"):
        actions.iso_mount(client, "debian.iso", path, good)
    assert _changes(fake) == []
