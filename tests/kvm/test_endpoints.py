"""Each kvmd endpoint the client covers, against the fake: what it sends, what it reads back,
and kvmd's refusals (400 with the error class, 409 busy, 503 no signal) as KvmError subclasses
whose message names the device and the failure."""

from __future__ import annotations

import hashlib
import io
import threading
import time

import av
import pytest

from saltext_fleet.kvm.client import UPLOAD_CHUNK, KvmClient
from saltext_fleet.kvm.errors import (
    KvmBadRequestError,
    KvmBusyError,
    KvmError,
    KvmUnavailableError,
)
from tests.kvm.conftest import options_for


def _decode_jpeg(data: bytes):
    codec = av.CodecContext.create("mjpeg", "r")
    (frame,) = codec.decode(av.Packet(data))
    return frame.width, frame.height


# ----- info, generic calls, bad arguments ---------------------------------------------------


def test_info(client, fake):
    fake.cpu_temp = 81.5
    info = client.info()
    assert info["system"]["kvmd"]["version"] == "4.197"
    assert info["hw"]["health"]["temp"]["cpu"] == 81.5
    assert info["hw"]["platform"]["model"] == "v4plus"
    assert info["uptime"]["total"] > 0
    assert set(client.info(fields=["uptime", "node"])) == {"uptime", "node"}
    assert fake.seen("/api/info")[-1].params == {"fields": "uptime,node"}


@pytest.mark.parametrize(
    ("method", "path", "params", "message"),
    [
        (
            "POST",
            "/api/atx/power",
            {"action": "explode"},
            "The argument 'explode' is not a valid ATX power action",
        ),
        ("POST", "/api/atx/click", {}, "None argument is not a valid ATX button"),
        (
            "GET",
            "/api/info",
            {"fields": "bogus"},
            "Failed sub-validator on one of the item of ['bogus']",
        ),
        (
            "POST",
            "/api/hid/events/send_mouse_move",
            {"to_x": "left", "to_y": "0"},
            "The argument 'left' is not a valid Mouse move",
        ),
        ("POST", "/api/msd/remove", {"image": ".hidden"}, "is not a valid MSD image name"),
    ],
)
def test_a_bad_argument_is_a_400_with_kvmd_error_class(client, method, path, params, message):
    with pytest.raises(KvmBadRequestError) as err:
        client.call(method, path, params)
    assert err.value.status == 400 and err.value.error == "ValidatorError"
    assert message in err.value.error_msg
    assert str(err.value).startswith(f"kvm 127.0.0.1: {method} {path}: HTTP 400 ValidatorError: ")


# ----- ATX ---------------------------------------------------------------------------------


def test_atx_power_clicks_only_when_needed_and_busy_is_409(client, fake):
    client.atx_power("on")
    assert fake.atx_clicks == ["power"]
    state = client.atx_state()
    assert state["busy"] is True and state["acts"] == {"power": True, "reset": False}
    with pytest.raises(KvmBusyError) as err:
        client.atx_click("power_long")
    assert str(err.value) == (
        "kvm 127.0.0.1: POST /api/atx/click: HTTP 409 AtxIsBusyError: "
        "Performing another ATX operation, please try again later"
    )
    # The reset button has a region of its own (plugins/atx/gpio.py).
    client.atx_click("reset")
    deadline = time.monotonic() + 5
    while client.atx_state()["busy"]:
        assert time.monotonic() < deadline, "the ATX clicks never ended"
        time.sleep(0.05)
    assert client.atx_state()["leds"]["power"] is True
    client.atx_power("on")  # already on: no click
    client.atx_power("reset_hard", wait=True)  # answers when the click is over
    assert client.atx_state()["busy"] is False
    client.atx_power("off_hard", wait=True)
    assert client.atx_state()["leds"]["power"] is False
    assert fake.atx_clicks == ["power", "reset", "reset", "power_long"]
    assert fake.seen("/api/atx/power")[0].params == {"action": "on", "wait": "0"}


def test_atx_arguments_are_checked_before_asking_the_device(client, fake):
    with pytest.raises(KvmError, match=r"^kvm 127.0.0.1: ATX power action 'boot'"):
        client.atx_power("boot")
    with pytest.raises(KvmError, match=r"^kvm 127.0.0.1: ATX button 'eject'"):
        client.atx_click("eject")
    assert fake.requests == []


# ----- HID ---------------------------------------------------------------------------------


def test_hid_http_events(client, fake):
    assert client.hid_state()["keyboard"]["online"] is True
    client.send_key("KeyA")
    client.send_key("ShiftLeft", state=True)
    client.send_key("ShiftLeft", state=False)
    client.send_shortcut(["ControlLeft", "AltLeft", "Delete"])
    client.send_mouse_button("left")
    client.send_mouse_button("right", state=True)
    client.send_mouse_move(-32768, 32767)
    keys = [(e["key"], e["state"]) for e in fake.hid_events if e["type"] == "key"]
    assert keys == [
        ("KeyA", True),
        ("ShiftLeft", True),
        ("ShiftLeft", False),
        ("ControlLeft", True),
        ("AltLeft", True),
        ("Delete", True),
        ("Delete", False),
        ("AltLeft", False),
        ("ControlLeft", False),
    ]
    assert fake.hid_events[0] == {
        "via": "http",
        "type": "key",
        "key": "KeyA",
        "state": True,
        "finish": True,  # kvmd: no state means press and release
    }
    mouse = [e for e in fake.hid_events if e["type"] != "key"]
    assert mouse == [
        {"via": "http", "type": "mouse_button", "button": "left", "state": True},
        {"via": "http", "type": "mouse_button", "button": "left", "state": False},
        {"via": "http", "type": "mouse_button", "button": "right", "state": True},
        {"via": "http", "type": "mouse_move", "to_x": -32768, "to_y": 32767},
    ]
    with pytest.raises(KvmBadRequestError, match="'Keyboard' is not a valid Keyboard key"):
        client.send_key("Keyboard")
    with pytest.raises(KvmBadRequestError, match="Failed sub-validator"):
        client.send_shortcut(["ControlLeft", "Nope"])


def test_hid_print(client, fake):
    client.print_text("root\n", slow=True)
    client.print_text("x" * 50, limit=10)
    assert fake.printed == [
        {"text": "root\n", "keymap": "en-us", "slow": True, "delay": 0.02},
        {"text": "x" * 10, "keymap": "en-us", "slow": False, "delay": 0.0},
    ]
    with pytest.raises(KvmBadRequestError, match="'klingon' is not a valid keymap"):
        client.print_text("hi", keymap="klingon")


def test_slow_typing_gets_the_time_it_needs(fake):
    """kvmd answers /hid/print when typing is done: the wait grows with the text."""
    fake.stall("/api/hid/print", 0.6)
    with KvmClient(options_for(fake, timeout=0.3)) as kvm:
        kvm.print_text("y" * 20, slow=True)  # 0.3 s + 2 x 20 x 0.02 s
        with pytest.raises(KvmError, match="POST /api/hid/print: no answer within 0.3 s"):
            kvm.print_text("y" * 20, slow=True, timeout=0.3)
    assert fake.printed[0]["text"] == "y" * 20


# ----- MSD ---------------------------------------------------------------------------------


class _Chunks(io.RawIOBase):
    """A readable file that never gives more than asked, remembers the biggest read, and can
    hold the upload half way (``gate``)."""

    def __init__(self, size: int, gate: threading.Event | None = None) -> None:
        self.size, self.pos, self.biggest, self.gate = size, 0, 0, gate
        self.digest = hashlib.sha256()

    def readable(self) -> bool:
        return True

    def read(self, n: int = -1) -> bytes:
        n = self.size - self.pos if n < 0 else min(n, self.size - self.pos)
        self.biggest = max(self.biggest, n)
        if self.gate is not None and self.pos >= self.size // 2:
            assert self.gate.wait(10)
        data = bytes((self.pos + i) % 251 for i in range(n))
        self.pos += n
        self.digest.update(data)
        return data


def test_msd_upload_is_streamed_then_known_after_the_delay(client, fake):
    size = 3 * UPLOAD_CHUNK + 123
    source = _Chunks(size)
    sent = []
    answer = client.msd_write("debian.iso", source, size=size, progress=sent.append)
    assert answer == {"image": {"name": "debian.iso", "size": size, "written": size}}
    assert source.biggest <= UPLOAD_CHUNK  # never the whole image in memory
    assert sent[-1] == size and len(sent) == 4
    assert fake.uploads["debian.iso"]["sha256"] == source.digest.hexdigest()
    assert fake.seen("/api/msd/write")[0].params == {
        "image": "debian.iso",
        "remove_incomplete": "1",
    }

    # kvmd lists the image only after its storage watcher reloads (about a second).
    with pytest.raises(KvmBadRequestError) as err:
        client.msd_set_params(image="debian.iso")
    assert str(err.value) == (
        "kvm 127.0.0.1: POST /api/msd/set_params: HTTP 400 MsdUnknownImageError: "
        "The image is not found in the storage"
    )
    with pytest.raises(KvmBadRequestError, match="MsdUnknownImageError"):
        client.msd_remove("debian.iso")

    image = client.wait_for_image("debian.iso", timeout=5)
    assert image["size"] == size and image["complete"] is True and image["writable"] is False
    client.msd_set_params(image="debian.iso", cdrom=True, rw=True)
    client.msd_set_connected(True)
    drive = client.msd_state()["drive"]
    assert drive["connected"] is True and drive["cdrom"] is True
    assert drive["rw"] is False  # kvmd turns rw off for a CD-ROM
    assert drive["image"]["name"] == "debian.iso"

    # While connected, kvmd refuses to touch the storage.
    with pytest.raises(KvmBadRequestError, match="MsdConnectedError"):
        client.msd_write("other.img", io.BytesIO(b"x" * 10))
    with pytest.raises(KvmBadRequestError, match="MsdConnectedError"):
        client.msd_remove("debian.iso")
    client.msd_set_connected(False)
    with pytest.raises(KvmBadRequestError, match="MsdDisconnectedError"):
        client.msd_set_connected(False)
    with pytest.raises(KvmBadRequestError, match="MsdImageExistsError"):
        client.msd_write("debian.iso", io.BytesIO(b"x"))
    client.msd_remove("debian.iso")
    state = client.msd_state()
    assert state["storage"]["images"] == {} and state["drive"]["image"] is None
    with pytest.raises(KvmBadRequestError, match="MsdImageNotSelected"):
        client.msd_set_connected(True)


def test_msd_size_comes_from_a_real_file(client, fake, tmp_path):
    path = tmp_path / "tiny.img"
    path.write_bytes(b"\x00" * 4096)
    with path.open("rb") as handle:
        assert client.msd_write("tiny.img", handle)["image"]["written"] == 4096
    assert client.wait_for_image("tiny.img")["writable"] is True


def test_msd_is_busy_during_an_upload(fake):
    gate = threading.Event()
    source = _Chunks(4 * UPLOAD_CHUNK, gate)
    result = {}

    def upload():
        with KvmClient(options_for(fake)) as uploader:
            result["answer"] = uploader.msd_write("big.img", source, size=source.size)

    thread = threading.Thread(target=upload)
    thread.start()
    try:
        with KvmClient(options_for(fake)) as kvm:
            deadline = time.monotonic() + 5
            while (kvm.msd_state()["storage"]["uploading"] or {}).get("written", 0) == 0:
                assert time.monotonic() < deadline, "the upload never started"
                time.sleep(0.02)
            state = kvm.msd_state()
            assert state["busy"] is True
            assert state["storage"]["uploading"]["name"] == "big.img"
            with pytest.raises(KvmBusyError) as err:
                kvm.msd_set_params(cdrom=False)
            assert err.value.error == "MsdIsBusyError"
    finally:
        gate.set()
        thread.join(10)
    assert result["answer"]["image"]["written"] == source.size


def test_msd_upload_of_a_short_file_is_refused(client, fake):
    with pytest.raises(KvmError, match=r"the file ended after 5 of the 10 bytes declared"):
        client.msd_write("short.img", io.BytesIO(b"12345"), size=10)


def test_wait_for_image_times_out_naming_the_image(client):
    with pytest.raises(KvmError) as err:
        client.wait_for_image("ghost.iso", timeout=0.3, interval=0.1)
    assert isinstance(err.value, TimeoutError)
    assert str(err.value) == (
        "kvm 127.0.0.1: image 'ghost.iso' not in the MSD storage 0.3 s after it was written"
    )


# ----- streamer ----------------------------------------------------------------------------


def test_snapshot_with_and_without_signal(client, fake):
    shot = client.snapshot()
    assert (shot.online, shot.width, shot.height) == (True, 64, 48)
    assert _decode_jpeg(shot.data) == (64, 48)
    fake.signal = False
    assert client.streamer_state()["streamer"]["source"]["online"] is False
    with pytest.raises(KvmUnavailableError) as err:
        client.snapshot()
    assert str(err.value) == (
        "kvm 127.0.0.1: GET /api/streamer/snapshot: HTTP 503 UnavailableError: Service Unavailable"
    )
    offline = client.snapshot(allow_offline=True)
    assert offline.online is False and _decode_jpeg(offline.data) == (64, 48)
    assert fake.seen("/api/streamer/snapshot")[-1].params["allow_offline"] == "1"


def test_mjpeg_stream_gives_real_jpeg_frames(client, fake):
    frames = list(client.mjpeg_frames(max_frames=5))
    assert len(frames) == 5
    assert all(_decode_jpeg(frame.data) == (64, 48) for frame in frames)
    assert all(frame.online is True for frame in frames)
    assert len({frame.data for frame in frames}) > 1  # frames change
    assert "x-timestamp" in frames[0].headers
    assert fake.seen("/streamer/stream")[0].params == {"extra_headers": "1"}


def test_a_forgotten_session_is_renewed_for_upload_and_stream(client, fake):
    client.atx_state()
    fake.sessions.clear()
    client.msd_write("s.img", io.BytesIO(b"z" * 1000))
    fake.sessions.clear()
    assert len(list(client.mjpeg_frames(max_frames=1))) == 1
    assert [(r.path, r.status) for r in fake.requests] == [
        ("/api/auth/login", 200),
        ("/api/atx", 200),
        ("/api/auth/check", 403),
        ("/api/auth/login", 200),
        ("/api/auth/check", 200),
        ("/api/msd/write", 200),
        ("/streamer/stream", 403),
        ("/api/auth/login", 200),
        ("/streamer/stream", 200),
    ]
    assert fake.uploads["s.img"]["written"] == 1000
