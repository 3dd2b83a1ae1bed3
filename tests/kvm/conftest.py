"""The kvmd client against the fake kvmd (tests/support/fakekvmd.py) over real HTTPS on
loopback. No Salt daemon: these run without the daemon lock.

One fake serves the whole run (its certificate and JPEG frames are made once); each test gets
it reset to a powered-off host with a video signal and no images. Timing knobs are short so
the whole folder stays in seconds: images appear 0.3 s after upload (kvmd: about 1 s), an ATX
click keeps its region busy 0.5 s (kvmd: 1.1 s).
"""

from __future__ import annotations

import pytest

from saltext_fleet.kvm.client import KvmClient
from tests.support.fakekvmd import FakeKvmd, make_certificate

PASSWORD = "s3cret-pw"
TOTP_SECRET = "JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP"


@pytest.fixture(scope="session")
def certificate():
    return make_certificate()


@pytest.fixture(scope="session")
def fake_server(certificate):
    with FakeKvmd(
        password=PASSWORD,
        image_delay=0.3,
        click_s=0.5,
        long_click_s=0.6,
        fps=30,
        certificate=certificate,
    ) as fake:
        yield fake


@pytest.fixture
def fake(fake_server):
    with fake_server.fresh() as fake:
        yield fake


def options_for(fake: FakeKvmd, **overrides) -> dict:
    """Client options that reach ``fake``: pinned by its fingerprint, session auth."""
    options = {
        "host": "127.0.0.1",
        "port": fake.port,
        "password": PASSWORD,
        "fingerprint": fake.fingerprint,
        "connect_timeout": 2,
        "timeout": 5,
    }
    options.update(overrides)
    return {k: v for k, v in options.items() if v is not None}


@pytest.fixture
def client(fake):
    with KvmClient(options_for(fake)) as kvm:
        yield kvm
