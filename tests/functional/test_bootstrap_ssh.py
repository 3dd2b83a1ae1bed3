"""The SSH bootstrap against a real sshd on loopback, and the wheelhouse it installs from.

A private sshd (Debian's openssh-server, ``/usr/sbin/sshd``) runs on a free 127.0.0.1 port
with its own config, host key and authorized_keys under tmp_path; ``bootstrap.apply`` reaches
it through salt-ssh as root, installs salt-minion in a virtualenv from the wheelhouse (no
network), writes the config and the key pair, and starts the minion as a plain daemon. No
master is needed here: these tests are about what goes wrong (logins, host keys, timeouts, bad
arguments). The whole way from SSH-only to an accepted minion, and what it leaves on the node,
is tests/integration/test_bootstrap.py.
"""

from __future__ import annotations

import os
import pathlib
import socket
import sys
import time

import pytest

from saltext_fleet.master import bootstrap, wheelhouse
from tests.support.sshd import (
    HOST_PYTHON,
    free_port,
    keygen,
    require_sshd,
    running_sshd,
)

pytestmark = [pytest.mark.timeout(900)]


@pytest.fixture(scope="module")
def sshd(tmp_path_factory):
    with running_sshd(tmp_path_factory.mktemp("sshd")) as found:
        yield found


@pytest.fixture(scope="module")
def wheels(tmp_path_factory):
    """One wheelhouse for the whole module (building it takes a while)."""
    dest = tmp_path_factory.mktemp("wheelhouse")
    return wheelhouse.build(str(dest))


@pytest.fixture(scope="module")
def master_opts(salt_factories):
    return salt_factories.salt_master_daemon("fleet-bootstrap-master").config.copy()


@pytest.fixture(scope="module")
def minion_keys():
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    ).decode()
    pub = (
        key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )
    return pem, pub


def test_wheelhouse_is_built_once(wheels):
    """The wheelhouse holds salt and this extension, and a second build reuses it. (That pip
    installs from it with no index at all is shown by every bootstrap below.)"""
    names = set(wheels["wheels"])
    assert any(n.startswith("salt-") for n in names)
    assert any(n.startswith("saltext_fleet-") for n in names)
    assert wheelhouse.build(os.path.dirname(wheels["dir"]))["reused"] is True
    manifest = wheelhouse.read_manifest(wheels["dir"])
    assert manifest is not None


@pytest.mark.parametrize("kind", ["private_key", "password"])
def test_bootstrap_login_failure_fails_fast(kind, sshd, wheels, master_opts, minion_keys, tmp_path):
    """A key the host does not know, or a password it does not take: no prompt, no hang."""
    pem, pub = minion_keys
    if kind == "private_key":
        credential = keygen(tmp_path / "other_key").read_text()
    else:
        credential = "not-the-password"
    started = time.monotonic()
    result = bootstrap.apply(
        master_opts,
        host="127.0.0.1",
        port=sshd["port"],
        credential_kind=kind,
        credential=credential,
        minion_id="boot-test-2",
        minion_config={"master": "127.0.0.1"},
        minion_pem=pem,
        minion_pub=pub,
        python=HOST_PYTHON,
        prefix=str(tmp_path / "fleet"),
        service="daemon",
        wheelhouse_dir=wheels["dir"],
        timeout=120,
    )
    elapsed = time.monotonic() - started
    assert result["ok"] is False
    assert "login" in result["error"] and "127.0.0.1" in result["error"], result["error"]
    assert elapsed < 30, elapsed
    assert not (tmp_path / "fleet").exists()


def test_bootstrap_changed_host_key_fails(sshd, wheels, master_opts, minion_keys, tmp_path):
    """A host whose key differs from the recorded one is refused, not silently accepted."""
    pem, pub = minion_keys
    opts = {**master_opts, "cachedir": str(tmp_path / "cache")}
    impostor = keygen(tmp_path / "impostor")
    known = tmp_path / "cache" / "fleet" / "known_hosts"
    known.parent.mkdir(parents=True)
    known.write_text(
        f"[127.0.0.1]:{sshd['port']} "
        + " ".join((tmp_path / "impostor.pub").read_text().split()[:2])
        + "\n"
    )
    assert impostor.exists()
    result = bootstrap.apply(
        opts,
        host="127.0.0.1",
        port=sshd["port"],
        credential_kind="private_key",
        credential=sshd["key"].read_text(),
        minion_id="boot-test-5",
        minion_config={"master": "127.0.0.1"},
        minion_pem=pem,
        minion_pub=pub,
        python=HOST_PYTHON,
        prefix=str(tmp_path / "fleet"),
        service="daemon",
        wheelhouse_dir=wheels["dir"],
        timeout=120,
    )
    assert result["ok"] is False
    assert "host key" in result["error"], result["error"]
    assert not (tmp_path / "fleet").exists()


def test_bootstrap_unreachable_host(wheels, master_opts, minion_keys, tmp_path):
    pem, pub = minion_keys
    require_sshd()
    key = keygen(tmp_path / "key")
    result = bootstrap.apply(
        master_opts,
        host="127.0.0.1",
        port=free_port(),
        credential_kind="private_key",
        credential=key.read_text(),
        minion_id="boot-test-3",
        minion_config={"master": "127.0.0.1"},
        minion_pem=pem,
        minion_pub=pub,
        prefix=str(tmp_path / "fleet"),
        service="daemon",
        wheelhouse_dir=wheels["dir"],
        timeout=60,
    )
    assert result["ok"] is False
    assert "connection refused" in result["error"], result["error"]


def test_bootstrap_times_out(wheels, master_opts, minion_keys, tmp_path):
    """A host that accepts the connection and never answers: the deadline ends it."""
    pem, pub = minion_keys
    require_sshd()
    key = keygen(tmp_path / "key")
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(5)
        started = time.monotonic()
        result = bootstrap.apply(
            master_opts,
            host="127.0.0.1",
            port=silent.getsockname()[1],
            credential_kind="private_key",
            credential=key.read_text(),
            minion_id="boot-test-6",
            minion_config={"master": "127.0.0.1"},
            minion_pem=pem,
            minion_pub=pub,
            prefix=str(tmp_path / "fleet"),
            service="daemon",
            wheelhouse_dir=wheels["dir"],
            timeout=3,
        )
        elapsed = time.monotonic() - started
    assert result["ok"] is False
    assert "timed out after 3s" in result["error"] and "connecting" in result["error"], result
    assert elapsed < 20, elapsed
    leftovers = pathlib.Path(master_opts["cachedir"], "fleet", "bootstrap-tmp")
    assert list(leftovers.iterdir()) == []


def test_bootstrap_bad_arguments(wheels, master_opts, minion_keys):
    pem, pub = minion_keys
    base = dict(
        host="127.0.0.1",
        credential_kind="password",
        credential="x",
        minion_id="boot-test-4",
        minion_config={},
        minion_pem=pem,
        minion_pub=pub,
        wheelhouse_dir=wheels["dir"],
    )
    for change, word in [
        ({"host": "-oProxyCommand=evil"}, "host"),
        ({"minion_id": "../etc"}, "minion_id"),
        ({"prefix": "relative/path"}, "prefix"),
        ({"python": "python3; rm -rf /"}, "python"),
        ({"service": "upstart"}, "service"),
        ({"credential_kind": "token"}, "credential_kind"),
        ({"wheelhouse_dir": "/nonexistent"}, "wheelhouse"),
    ]:
        result = bootstrap.apply(master_opts, **{**base, **change})
        assert result["ok"] is False and word in result["error"], (change, result)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(pytest.main([__file__, "-q"]))
