"""A private sshd on loopback for the bootstrap tests (Debian's openssh-server)."""

from __future__ import annotations

import contextlib
import os
import pathlib
import signal
import socket
import subprocess
import time

import pytest

from tests.support.debian import apt_install

SSHD = "/usr/sbin/sshd"
SSH_KEYGEN = "/usr/bin/ssh-keygen"
HOST_PYTHON = "/usr/bin/python3"


def require_sshd():
    if not os.path.exists(SSHD):
        failed = apt_install("openssh-server", SSHD)
        if not os.path.exists(SSHD):
            pytest.fail(
                f"{SSHD} is missing and installing Debian's openssh-server failed ({failed}): "
                "the bootstrap tests need an SSH server (apt-get install openssh-server)"
            )
    if not os.path.exists(SSH_KEYGEN):
        pytest.fail(f"{SSH_KEYGEN} is missing: install Debian's openssh-client")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def keygen(path: pathlib.Path, kind: str = "ed25519") -> pathlib.Path:
    subprocess.run(
        [SSH_KEYGEN, "-q", "-t", kind, "-N", "", "-C", "fleet-test", "-f", str(path)],
        check=True,
    )
    return path


def _wait_port(port: int, proc: subprocess.Popen, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"sshd exited with {proc.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1) as sock:
                if sock.recv(64).startswith(b"SSH-"):
                    return
        except OSError:
            pass
        time.sleep(0.1)
    raise AssertionError(f"sshd did not listen on 127.0.0.1:{port} within {timeout}s")


@contextlib.contextmanager
def running_sshd(base: pathlib.Path):
    """A root sshd on a free loopback port that accepts one test key (and no passwords):
    ``{"port", "key" (the client's private key file), "dir", "log"}``."""
    require_sshd()
    base.mkdir(parents=True, exist_ok=True)
    host_key = keygen(base / "ssh_host_ed25519_key")
    client_key = keygen(base / "client_key")
    authorized = base / "authorized_keys"
    authorized.write_text((base / "client_key.pub").read_text())
    authorized.chmod(0o600)
    port = free_port()
    config = base / "sshd_config"
    config.write_text(
        "\n".join(
            [
                f"Port {port}",
                "ListenAddress 127.0.0.1",
                f"HostKey {host_key}",
                f"PidFile {base / 'sshd.pid'}",
                f"AuthorizedKeysFile {authorized}",
                "PermitRootLogin prohibit-password",
                "PubkeyAuthentication yes",
                "PasswordAuthentication no",
                "KbdInteractiveAuthentication no",
                "UsePAM no",
                # tmp_path's parents (/tmp) are world-writable
                "StrictModes no",
                # scp of OpenSSH 9 speaks SFTP
                "Subsystem sftp internal-sftp",
                "LogLevel VERBOSE",
                "",
            ]
        )
    )
    # the privilege separation directory of a root sshd
    os.makedirs("/run/sshd", mode=0o755, exist_ok=True)
    log = open(base / "sshd.log", "wb")  # closed at teardown
    proc = subprocess.Popen([SSHD, "-D", "-e", "-f", str(config)], stdout=log, stderr=log)
    try:
        _wait_port(port, proc)
        yield {"port": port, "key": client_key, "dir": base, "log": base / "sshd.log"}
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # a zombie is not alive
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().split(")")[-1].split()[0] != "Z"
    except OSError:
        return False


def kill_minion(pidfile: pathlib.Path) -> None:
    """Stop a daemonised salt-minion and its children by its pid file."""
    try:
        pid = int(pidfile.read_text().strip())
    except (OSError, ValueError):
        return
    import psutil

    try:
        procs = [psutil.Process(pid)] + psutil.Process(pid).children(recursive=True)
    except psutil.Error:
        return
    for proc in procs:
        try:
            proc.send_signal(signal.SIGTERM)
        except psutil.Error:
            pass
    _, alive = psutil.wait_procs(procs, timeout=15)
    for proc in alive:
        try:
            proc.kill()
        except psutil.Error:
            pass
