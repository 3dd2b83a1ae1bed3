"""The SSH bootstrap against a real sshd on loopback, and the wheelhouse it installs from.

A private sshd (Debian's openssh-server, ``/usr/sbin/sshd``) runs on a free 127.0.0.1 port
with its own config, host key and authorized_keys under tmp_path; ``bootstrap.apply`` reaches
it through salt-ssh as root, installs salt-minion in a virtualenv from the wheelhouse (no
network), writes the config and the key pair, and starts the minion as a plain daemon. No
master is needed: the minion only has to run, with its files where they belong.
"""

from __future__ import annotations

import os
import pathlib
import socket
import stat
import subprocess
import sys
import time

import pytest
import yaml

from saltext_fleet.master import bootstrap, wheelhouse
from tests.support.sshd import (
    HOST_PYTHON,
    SSH_KEYGEN,
    free_port,
    keygen,
    kill_minion,
    pid_alive,
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


def test_bootstrap_daemon_minion(sshd, wheels, master_opts, minion_keys, tmp_path):
    pem, pub = minion_keys
    prefix = tmp_path / "fleet"
    data_in = {"master": "127.0.0.1", "master_port": free_port()}
    seen = []
    started = time.monotonic()
    try:
        result = bootstrap.apply(
            master_opts,
            host="127.0.0.1",
            port=sshd["port"],
            user="root",
            credential_kind="private_key",
            credential=sshd["key"].read_text(),
            minion_id="boot-test-1",
            minion_config=data_in,
            minion_pem=pem,
            minion_pub=pub,
            python=HOST_PYTHON,
            prefix=str(prefix),
            service="daemon",
            wheelhouse_dir=wheels["dir"],
            progress=seen.append,
            timeout=600,
        )
        elapsed = time.monotonic() - started
        print(f"bootstrap took {elapsed:.1f}s; steps: {seen}")
        assert result["ok"], (result["error"], result["steps"])
        assert result["error"] is None
        assert seen[:2] == ["connecting", "applying bootstrap state"]
        ids = [s["id"] for s in result["steps"]]
        assert ids[:3] == [
            "fleet_bootstrap_venv",
            "fleet_bootstrap_wheels",
            "fleet_bootstrap_install",
        ]
        assert "fleet_bootstrap_start" in ids and "fleet_bootstrap_running" in ids
        assert all(s["result"] is not False for s in result["steps"])
        assert any(s.startswith("start the minion") for s in seen)

        # the minion runs, from its pid file under the prefix
        pidfile = prefix / "var" / "run" / "salt-minion.pid"
        assert pidfile.exists()
        pid = int(pidfile.read_text().strip())
        assert pid_alive(pid)
        with open(f"/proc/{pid}/cmdline", "rb") as fh:
            assert b"salt-minion" in fh.read()

        conf = prefix / "etc" / "salt" / "minion"
        assert stat.S_IMODE(conf.stat().st_mode) == 0o600
        data = yaml.safe_load(conf.read_text())
        assert data["id"] == "boot-test-1"
        assert data["master"] == "127.0.0.1"
        assert data["root_dir"] == str(prefix)

        pki = prefix / "etc" / "salt" / "pki" / "minion"
        assert stat.S_IMODE((pki / "minion.pem").stat().st_mode) == 0o400
        assert (pki / "minion.pem").read_text().strip() == pem.strip()
        assert (pki / "minion.pub").read_text().strip() == pub.strip()

        venv_python = prefix / "venv" / "bin" / "python"
        check = subprocess.run(
            [str(venv_python), "-c", "import salt, saltext_fleet; print(salt.__file__)"],
            capture_output=True,
            text=True,
            cwd=tmp_path,
            check=False,
        )
        assert check.returncode == 0, check.stderr
        assert str(prefix) in check.stdout

        # again: nothing changes, the running minion is kept
        started = time.monotonic()
        again = bootstrap.apply(
            master_opts,
            host="127.0.0.1",
            port=sshd["port"],
            credential_kind="private_key",
            credential=sshd["key"].read_text(),
            minion_id="boot-test-1",
            minion_config=data_in,
            minion_pem=pem,
            minion_pub=pub,
            python=HOST_PYTHON,
            prefix=str(prefix),
            service="daemon",
            wheelhouse_dir=wheels["dir"],
        )
        print(f"second bootstrap took {time.monotonic() - started:.1f}s")
        assert again["ok"], again
        assert int(pidfile.read_text().strip()) == pid and pid_alive(pid)
        start = next(s for s in again["steps"] if s["id"] == "fleet_bootstrap_start")
        assert "unless condition is true" in start["comment"], start

        # nothing secret left behind on the master
        leftovers = pathlib.Path(master_opts["cachedir"], "fleet", "bootstrap-tmp")
        assert list(leftovers.iterdir()) == []
        # the host key was recorded, not ignored
        known = pathlib.Path(master_opts["cachedir"], "fleet", "known_hosts")
        found = subprocess.run(
            [SSH_KEYGEN, "-F", f"[127.0.0.1]:{sshd['port']}", "-f", str(known)],
            capture_output=True,
            check=False,
        )
        assert found.returncode == 0, known.read_text()
    finally:
        kill_minion(prefix / "var" / "run" / "salt-minion.pid")


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
