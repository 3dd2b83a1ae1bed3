"""The SSH part of ``salt-run fleet.bootstrap``: salt-minion onto a machine that has only SSH.

Salt's own agentless path does the work: :func:`apply` runs
``SSHClient(mopts=...).cmd(id, "state.apply", ["fleet_bootstrap"], kwarg={"pillar": ...})``
with the shipped ``fleet_bootstrap`` SLS (``saltext_fleet/bootstrap/fleet_bootstrap``), which
makes a virtualenv with the host's python, copies the master's wheelhouse (see
:mod:`saltext_fleet.master.wheelhouse`; nothing is downloaded), pip-installs salt and
saltext-fleet from it, writes the minion configuration and its pre-generated key pair under
the prefix, and starts the minion (systemd unit, launchd daemon, or a plain daemon).

How it is kept safe and bounded:

* Everything salt-ssh needs lives in a private directory (mode 0700) under
  ``<cachedir>/fleet/bootstrap-tmp``: the file tree (``fleet_bootstrap/init.sls`` and the
  wheels), the roster (0600), the SSH private key (0600), salt-ssh's cachedir and temporary
  files (the state tarball carries the pillar with the minion's private key). It is removed
  in all cases. salt-ssh's thin is kept between runs in ``<cachedir>/fleet/salt-ssh/thin``.
* salt-ssh runs in a child process of its own (``python -m saltext_fleet.master.bootstrap``)
  that is killed, with every process it started, when ``timeout`` runs out: salt-ssh itself
  has no overall deadline. The child gets a private ``sock_dir`` (no job events with the
  pillar on the master's event bus) and ``local_cache`` as job cache in the private
  cachedir (the job load holds the pillar).
* Host keys are checked: ``<cachedir>/fleet/known_hosts`` with
  ``StrictHostKeyChecking=accept-new`` (first contact records the key, a changed key fails).
* The remote thin directory (which receives the state tarball) is wiped after the run.

Progress goes to ``progress(step)``: ``connecting``, ``applying bootstrap state``, then one
call per state result (its readable name from :data:`STEP_NAMES`).
"""

from __future__ import annotations

import base64
import copy
import json
import logging
import os
import pathlib
import pickle
import queue
import re
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from typing import Any

import psutil
import yaml

from saltext_fleet.core import gate as core_gate
from saltext_fleet.master import wheelhouse

log = logging.getLogger(__name__)

SLS_NAME = "fleet_bootstrap"
SLS_DIR = pathlib.Path(__file__).resolve().parent.parent / "bootstrap" / SLS_NAME
SERVICES = ("daemon", "systemd", "launchd")
CREDENTIAL_KINDS = ("password", "private_key")

#: Readable names of the SLS's state ids, in the order they run.
STEP_NAMES = {
    "fleet_bootstrap_pillar": "check the bootstrap pillar",
    "fleet_bootstrap_venv": "create the virtualenv",
    "fleet_bootstrap_wheels": "copy the wheelhouse",
    "fleet_bootstrap_install": "install salt and saltext-fleet",
    "fleet_bootstrap_config": "write the minion configuration",
    "fleet_bootstrap_key": "install the minion key",
    "fleet_bootstrap_pub": "install the minion public key",
    "fleet_bootstrap_log_dir": "create the log directory",
    "fleet_bootstrap_service_file": "write the service definition",
    "fleet_bootstrap_stop": "stop the old minion",
    "fleet_bootstrap_start": "start the minion",
    "fleet_bootstrap_running": "check that the minion runs",
}

HOST_RE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._-]{0,252}|\[?[0-9A-Fa-f:.]+(%[A-Za-z0-9_.-]+)?\]?")
USER_RE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._-]{0,63}")
PATH_RE = re.compile(r"/[A-Za-z0-9._+/-]*")
PYTHON_RE = re.compile(r"/?[A-Za-z0-9._+-][A-Za-z0-9._+/-]*")

#: exit code of the shell when the command does not exist
EX_NOT_FOUND = 127

Progress = Callable[[str], Any]


def apply(
    opts: dict,
    *,
    host: str,
    port: int = 22,
    user: str = "root",
    credential_kind: str,
    credential: str,
    minion_id: str,
    minion_config: dict,
    minion_pem: str,
    minion_pub: str,
    python: str = "python3",
    prefix: str = "/opt/saltext-fleet",
    service: str = "systemd",
    wheelhouse_dir: str,
    progress: Progress | None = None,
    timeout: float = 600,
    sudo: bool | None = None,
) -> dict[str, Any]:
    """Bootstrap ``minion_id`` on ``host`` over SSH; never raises.

    ``credential_kind`` is ``password`` or ``private_key`` (``credential`` is then the key's
    text). ``sudo`` (default: when ``user`` is not root and the service is not ``daemon``)
    runs the state through sudo. Returns ``{"ok": bool, "steps": [{"id", "name", "result",
    "comment"}], "error": str | None}``; ``error`` names what failed.
    """
    report = _Report(progress)
    try:
        checked = _check_arguments(
            host=host,
            port=port,
            user=user,
            credential_kind=credential_kind,
            credential=credential,
            minion_id=minion_id,
            minion_config=minion_config,
            minion_pem=minion_pem,
            minion_pub=minion_pub,
            python=python,
            prefix=prefix,
            service=service,
            wheelhouse_dir=wheelhouse_dir,
            timeout=timeout,
        )
    except ValueError as exc:
        return report.fail(f"bad argument: {exc}")
    manifest = checked["manifest"]
    if sudo is None:
        sudo = user != "root" and service != "daemon"

    cachedir = opts.get("cachedir") or "/var/cache/salt/master"
    fleet_dir = os.path.join(cachedir, "fleet")
    tmp = None
    try:
        for path in (fleet_dir, os.path.join(fleet_dir, "bootstrap-tmp")):
            os.makedirs(path, mode=0o700, exist_ok=True)
        tmp = tempfile.mkdtemp(prefix=f"{minion_id}-", dir=os.path.join(fleet_dir, "bootstrap-tmp"))
        os.chmod(tmp, 0o700)
        payload = _prepare(
            opts,
            tmp=tmp,
            fleet_dir=fleet_dir,
            host=host,
            port=int(port),
            user=user,
            credential_kind=credential_kind,
            credential=credential,
            minion_id=minion_id,
            sudo=sudo,
            timeout=timeout,
            wheelhouse_dir=wheelhouse_dir,
            pillar={
                "fleet_bootstrap": {
                    "prefix": prefix,
                    "python": python,
                    "wheels": f"salt://{SLS_NAME}/wheels",
                    "requirements": _pins(manifest),
                    "minion_config": {**minion_config, "id": minion_id},
                    "minion_pem": minion_pem,
                    "minion_pub": minion_pub,
                    "service": service,
                }
            },
            python=python,
            expect={
                "python": manifest.get("python"),
                "platform": manifest.get("platform"),
                "machine": manifest.get("machine"),
            },
        )
        return _run_child(payload, tmp=tmp, timeout=timeout, report=report)
    except Exception as exc:  # the runner records it; never a traceback
        log.exception("fleet: bootstrap of %s on %s failed", minion_id, host)
        return report.fail(f"bootstrap failed on the master: {type(exc).__name__}: {exc}")
    finally:
        if tmp:
            shutil.rmtree(tmp, ignore_errors=True)


# -- arguments ------------------------------------------------------------------------------


def _check_arguments(**args) -> dict[str, Any]:
    host = args["host"]
    if not isinstance(host, str) or not HOST_RE.fullmatch(host):
        raise ValueError(f"host {str(host)[:60]!r} is not a host name or IP address")
    port = args["port"]
    if isinstance(port, bool) or not isinstance(port, int | str) or not str(port).isdigit():
        raise ValueError(f"port {port!r} is not a number")
    if not 0 < int(port) < 65536:
        raise ValueError(f"port {port} is out of range")
    if not isinstance(args["user"], str) or not USER_RE.fullmatch(args["user"]):
        raise ValueError(f"user {str(args['user'])[:40]!r} is not a user name")
    if args["credential_kind"] not in CREDENTIAL_KINDS:
        raise ValueError(f"credential_kind must be one of {', '.join(CREDENTIAL_KINDS)}")
    if not isinstance(args["credential"], str) or not args["credential"]:
        raise ValueError("credential is empty")
    if args["credential_kind"] == "private_key" and "PRIVATE KEY" not in args["credential"]:
        raise ValueError("credential holds no private key")
    core_gate.check_minion_id(args["minion_id"], "minion_id")
    if not isinstance(args["minion_config"], dict):
        raise ValueError("minion_config must be a mapping")
    for field in ("minion_pem", "minion_pub"):
        if not isinstance(args[field], str) or "-----BEGIN" not in args[field]:
            raise ValueError(f"{field} is not a PEM key")
    python = args["python"]
    if not isinstance(python, str) or not PYTHON_RE.fullmatch(python) or "/bin/sh" in python:
        raise ValueError(f"python {str(python)[:60]!r} is not an interpreter name or path")
    prefix = args["prefix"]
    if not isinstance(prefix, str) or not PATH_RE.fullmatch(prefix) or prefix.rstrip("/") == "":
        raise ValueError(f"prefix {str(prefix)[:60]!r} is not an absolute path (A-Z a-z 0-9 ._+-/)")
    if ".." in prefix.split("/"):
        raise ValueError(f"prefix {prefix!r} must not contain '..'")
    if args["service"] not in SERVICES:
        raise ValueError(f"service must be one of {', '.join(SERVICES)}")
    timeout = args["timeout"]
    if not isinstance(timeout, int | float) or timeout <= 0:
        raise ValueError("timeout must be a positive number of seconds")
    manifest = wheelhouse.read_manifest(str(args["wheelhouse_dir"]))
    if manifest is None:
        raise ValueError(
            f"wheelhouse_dir {args['wheelhouse_dir']} is not a finished wheelhouse "
            "(build it with saltext_fleet.master.wheelhouse.build)"
        )
    return {"manifest": manifest}


def _pins(manifest: dict) -> list[str]:
    dists = manifest.get("dists") or {}
    pins = []
    for name in ("salt", "saltext-fleet"):
        pins.append(f"{name}=={dists[name]}" if dists.get(name) else name)
    return pins


# -- the private file tree, roster and options ----------------------------------------------


def _prepare(
    opts,
    *,
    tmp,
    fleet_dir,
    host,
    port,
    user,
    credential_kind,
    credential,
    minion_id,
    sudo,
    timeout,
    wheelhouse_dir,
    pillar,
    python,
    expect,
):
    tree = os.path.join(tmp, "files")
    sls_dir = os.path.join(tree, SLS_NAME)
    os.makedirs(sls_dir)
    shutil.copyfile(SLS_DIR / "init.sls", os.path.join(sls_dir, "init.sls"))
    os.symlink(os.path.abspath(wheelhouse_dir), os.path.join(sls_dir, "wheels"))

    known_hosts = os.path.join(fleet_dir, "known_hosts")
    if not os.path.exists(known_hosts):
        _write_private(known_hosts, "")

    connect_timeout = int(max(5, min(30, timeout / 4)))
    target: dict[str, Any] = {
        "host": host,
        "port": port,
        "user": user,
        "timeout": connect_timeout,
        "sudo": bool(sudo),
    }
    ssh_options = [
        "StrictHostKeyChecking=accept-new",
        f"UserKnownHostsFile={known_hosts}",
        "LogLevel=ERROR",
    ]
    if credential_kind == "password":
        target["passwd"] = credential
        # only the password: neither the master user's keys nor its agent
        ssh_options.append("PubkeyAuthentication=no")
        priv = "agent-forwarding"  # salt-ssh's word for "no key file" (it then makes none)
    else:
        priv = os.path.join(tmp, "id_bootstrap")
        _write_private(priv, credential if credential.endswith("\n") else credential + "\n")
        target["priv"] = priv
        target["identities_only"] = True
        # never a passphrase or password prompt
        ssh_options.append("BatchMode=yes")

    # the master's own ssh_options (a ProxyJump, say) come after ours: ssh takes the first
    # value of an option, so they cannot turn host key checking off
    extra = opts.get("ssh_options") or []
    if isinstance(extra, list | tuple):
        ssh_options.extend(str(o) for o in extra if "ProxyCommand" not in str(o))

    roster = os.path.join(tmp, "roster")
    _write_private(
        roster, "#!yaml\n" + yaml.safe_dump({minion_id: target}, default_flow_style=False)
    )

    cache = os.path.join(tmp, "cache")
    os.makedirs(cache, mode=0o700)
    thin = os.path.join(fleet_dir, "salt-ssh", "thin")
    os.makedirs(thin, mode=0o700, exist_ok=True)
    os.symlink(thin, os.path.join(cache, "thin"))
    sock = os.path.join(tmp, "sock")
    os.makedirs(sock, mode=0o700)

    mopts = copy.deepcopy(opts)
    mopts.update(
        {
            "file_roots": {"base": [tree]},
            "fileserver_backend": ["roots"],
            "fileserver_followsymlinks": True,
            "pillar_roots": {"base": []},
            "ext_pillar": [],
            "cachedir": cache,
            "sock_dir": sock,
            "master_job_cache": "local_cache",
            "known_hosts_file": known_hosts,
            "ssh_priv": priv,
            "ssh_use_home_key": False,
            "thin_exclude_saltexts": True,
            # the flat roster we wrote, the thin (relenv would download), host keys checked
            "roster": "flat",
            "relenv": False,
            "ignore_host_keys": False,
            "no_host_keys": False,
            "ssh_update_roster": False,
            "ssh_key_deploy": False,
            "ssh_run_pre_flight": False,
            "ssh_max_procs": 1,
        }
    )
    return {
        "opts": mopts,
        "minion_id": minion_id,
        "roster_file": roster,
        "ssh_options": ssh_options,
        "pillar": pillar,
        "python": python,
        "expect": expect,
        "host": f"{user}@{host}:{port}",
    }


def _write_private(path: str, text: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        fh.write(text)
    os.chmod(path, 0o600)


# -- the child process that runs salt-ssh -----------------------------------------------------


class _Report:
    def __init__(self, progress: Progress | None):
        self.progress = progress
        self.steps: list[dict[str, Any]] = []
        self.current = "starting"

    def step(self, name: str) -> None:
        self.current = name
        if self.progress is not None:
            try:
                self.progress(name)
            except Exception:  # a broken progress sink must not stop the bootstrap
                log.exception("fleet: bootstrap progress callback failed")

    def fail(self, error: str) -> dict[str, Any]:
        return {"ok": False, "steps": self.steps, "error": error}


def _run_child(payload: dict, *, tmp: str, timeout: float, report: _Report) -> dict[str, Any]:
    env = dict(os.environ)
    # salt-ssh's temporary files (the state tarball with the pillar) stay in the private dir
    env.update({"TMPDIR": tmp, "PYTHONUNBUFFERED": "1"})
    errlog = os.path.join(tmp, "child.log")
    deadline = time.monotonic() + timeout
    with open(errlog, "wb") as err:
        proc = subprocess.Popen(
            [sys.executable, "-m", __name__],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=err,
            cwd=tmp,
            env=env,
            start_new_session=True,
        )
    lines: queue.Queue = queue.Queue()
    reader = threading.Thread(target=_read_lines, args=(proc.stdout, lines), daemon=True)
    reader.start()
    result = None
    try:
        try:
            proc.stdin.write(pickle.dumps(payload))
            proc.stdin.close()
        except OSError:
            pass
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                _kill_tree(proc)
                return report.fail(
                    f"timed out after {timeout:g}s while '{report.current}' on {payload['host']}"
                )
            try:
                line = lines.get(timeout=min(remaining, 1.0))
            except queue.Empty:
                continue
            if line is None:
                break
            try:
                msg = json.loads(line)
            except ValueError:
                continue
            if "progress" in msg:
                report.step(msg["progress"])
            elif "result" in msg:
                result = msg["result"]
        proc.wait(timeout=max(1.0, deadline - time.monotonic()))
    except subprocess.TimeoutExpired:
        _kill_tree(proc)
        return report.fail(f"timed out after {timeout:g}s while '{report.current}'")
    finally:
        if proc.poll() is None:
            _kill_tree(proc)
    if result is None:
        tail = _tail(errlog)
        return report.fail(
            f"the salt-ssh process ended without a result (exit code {proc.returncode})"
            + (f": {tail}" if tail else "")
        )
    if "state" in result:
        return _state_report(result["state"], report, payload["host"])
    return report.fail(result.get("error") or "unknown error")


def _read_lines(stream, lines: queue.Queue) -> None:
    try:
        for raw in stream:
            lines.put(raw.decode("utf-8", "replace"))
    finally:
        lines.put(None)


def _kill_tree(proc: subprocess.Popen) -> None:
    """The child and everything it started (ssh runs in a pty session of its own)."""
    try:
        procs = psutil.Process(proc.pid).children(recursive=True)
    except psutil.Error:  # the child is already gone
        procs = []
    for sig_target in [proc.pid] + [p.pid for p in procs]:
        try:
            os.kill(sig_target, signal.SIGKILL)
        except OSError:
            pass
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except OSError:
        pass
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        pass


def _tail(path: str, limit: int = 600) -> str:
    try:
        with open(path, "rb") as fh:
            text = fh.read().decode("utf-8", "replace")
    except OSError:
        return ""
    lines = [ln for ln in text.strip().splitlines() if ln.strip()]
    return " | ".join(lines[-5:])[-limit:]


# -- reading salt-ssh's answers (used in the child) -------------------------------------------

PROBE = (
    "import json, platform, sys\n"
    "try:\n"
    "    import venv, ensurepip\n"
    "    has_venv = True\n"
    "except ImportError:\n"
    "    has_venv = False\n"
    "print('FLEET-PROBE ' + json.dumps({'python': '%d.%d' % sys.version_info[:2],"
    " 'platform': sys.platform, 'machine': platform.machine(), 'venv': has_venv,"
    " 'executable': sys.executable}))\n"
)


def probe_command(python: str) -> str:
    """A shell command that reports the host's python; salt-ssh's raw shell passes whatever
    follows ``/bin/sh`` to the remote shell as one string (quoted once for that shell)."""
    code = base64.b64encode(PROBE.encode()).decode()
    inner = f"{shlex.quote(python)} -c " + shlex.quote(
        f"import base64; exec(base64.b64decode('{code}'))"
    )
    return "/bin/sh -c " + shlex.quote(inner)


def classify_ssh_error(text: str, host: str) -> str:
    """A clear sentence for ssh's complaint about logging in to ``host``."""
    low = text.lower()
    if (
        "permission denied" in low
        or "authentication failed" in low
        or "too many authentication" in low
    ):
        return f"login to {host} failed: permission denied (check the user and credential)"
    if "host key verification failed" in low or "remote host identification has changed" in low:
        return (
            f"host key of {host} does not match the one recorded in the master's "
            "fleet/known_hosts (remove the old entry if the machine was reinstalled)"
        )
    if "connection refused" in low:
        return f"cannot reach {host}: connection refused (is sshd running on that port?)"
    if "timed out" in low or "timeout" in low:
        return f"cannot reach {host}: connection timed out"
    if "could not resolve" in low or "name or service not known" in low:
        return f"cannot reach {host}: host name not found"
    if "no route to host" in low or "network is unreachable" in low:
        return f"cannot reach {host}: no route to host"
    if "passphrase" in low:
        return f"login to {host} failed: the private key needs a passphrase"
    first = text.strip().splitlines()[0] if text.strip() else "no output"
    return f"ssh to {host} failed: {first[:300]}"


def check_probe(ret: Any, host: str, python: str, expect: dict) -> tuple[str | None, dict]:
    """``(None, facts)`` if the raw probe answered and the host's python suits the wheelhouse;
    ``(why not, facts)`` otherwise."""
    problem, found = _probe_problem(ret, host, python, expect)
    return problem, found or {}


def _probe_problem(ret, host, python, expect):
    if not isinstance(ret, dict):
        return classify_ssh_error(str(ret), host), None
    stdout = str(ret.get("stdout") or "")
    stderr = str(ret.get("stderr") or ret.get("_error") or "")
    retcode = ret.get("retcode")
    found = None
    for line in stdout.splitlines():
        if line.startswith("FLEET-PROBE "):
            try:
                found = json.loads(line[len("FLEET-PROBE ") :])
            except ValueError:
                found = None
    if found is None:
        if retcode == EX_NOT_FOUND or "not found" in stderr.lower():
            return f"{python} was not found on {host} (install python3 there)", None
        if retcode == 255 or not stdout:
            return classify_ssh_error(stderr or stdout, host), None
        text = (stderr or stdout).strip()[:300]
        return f"{python} on {host} did not answer the probe: {text}", None
    if not isinstance(found, dict):
        return f"{python} on {host} gave an unreadable answer to the probe", None
    if not found.get("venv"):
        return (
            f"{python} on {host} lacks the venv module (Debian/Ubuntu: apt install python3-venv)",
            found,
        )
    want = (expect.get("python"), expect.get("platform"), expect.get("machine"))
    have = (found.get("python"), found.get("platform"), found.get("machine"))
    if all(want) and want != have:
        return (
            f"{python} on {host} is Python {have[0]} on {have[1]}/{have[2]}, but the "
            f"wheelhouse was built for Python {want[0]} on {want[1]}/{want[2]}",
            found,
        )
    return None, found


def thin_path(found: dict) -> str | None:
    """``set_path`` for salt-ssh's shim: the probed interpreter's directory first.

    The shim runs the thin with the first ``python3`` on the remote PATH, and when that is a
    shell script (a pyenv shim, say) it takes a path that fails under ``set -u``
    (``LD_LIBRARY_PATH: parameter not set``). The interpreter the probe found is a real one.
    """
    executable = found.get("executable")
    if not isinstance(executable, str) or not PATH_RE.fullmatch(executable):
        return None
    directory = os.path.dirname(executable)
    return f"{directory}:$PATH" if directory and directory != "/" else None


def _state_report(ret: Any, report: _Report, host: str) -> dict[str, Any]:
    if not isinstance(ret, dict) or not all(
        isinstance(v, dict) and "result" in v for v in ret.values()
    ):
        # salt-ssh's error shapes: a string, or {"_error": ..., "stderr": ...}, or a list of
        # render errors
        if isinstance(ret, dict) and ("_error" in ret or "stderr" in ret):
            text = " ".join(str(ret.get(k) or "") for k in ("_error", "stderr", "stdout"))
            if ret.get("retcode") == 255:
                return report.fail(classify_ssh_error(text, host))
            return report.fail(f"bootstrap state did not run on {host}: {text.strip()[:600]}")
        if isinstance(ret, list):
            return report.fail(f"bootstrap state did not render: {'; '.join(map(str, ret))[:600]}")
        return report.fail(f"bootstrap state did not run on {host}: {str(ret)[:600]}")
    chunks = sorted(ret.items(), key=lambda kv: kv[1].get("__run_num__", 0))
    failed = None
    for key, chunk in chunks:
        state_id = chunk.get("__id__") or key.split("_|-")[1]
        name = STEP_NAMES.get(state_id, state_id)
        comment = chunk.get("comment") or ""
        if isinstance(comment, list):
            comment = "\n".join(map(str, comment))
        step = {"id": state_id, "name": name, "result": chunk.get("result"), "comment": comment}
        report.steps.append(step)
        outcome = {True: "ok", False: "failed"}.get(chunk.get("result"), "not run")
        report.step(f"{name}: {outcome}")
        if chunk.get("result") is False and failed is None:
            failed = step
    if failed is not None:
        return report.fail(f"step '{failed['name']}' failed: {_short(failed['comment'])}")
    return {"ok": True, "steps": report.steps, "error": None}


def _short(text: str, limit: int = 800) -> str:
    text = str(text).strip()
    if "Traceback (most recent call last)" in text:
        # Salt's "An exception occurred in this state": the exception is the last line
        lines = [ln for ln in text.splitlines() if ln.strip()]
        text = f"{lines[0]} {lines[-1].strip()}"
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _child_main() -> int:
    """Runs salt-ssh for the parent; protocol lines (JSON) on the original stdout."""
    payload = pickle.load(sys.stdin.buffer)
    proto = os.fdopen(os.dup(1), "w", buffering=1, encoding="utf-8")
    os.dup2(2, 1)  # whatever salt prints goes to the log, not into the protocol
    sys.stdout = sys.stderr

    def emit(**msg):
        proto.write(json.dumps(msg, default=str) + "\n")
        proto.flush()

    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    # Imported only here, in the child, after stdout went to the log: what Salt prints while it
    # loads must not reach the protocol, and the runner that imports this module never needs
    # salt-ssh (0.3 s to import).
    import salt.client.ssh.client
    import salt.utils.jid

    opts = payload["opts"]
    mid = payload["minion_id"]
    host = payload["host"]
    common = {
        "tgt_type": "list",
        "roster_file": payload["roster_file"],
        "ssh_options": payload["ssh_options"],
    }
    client = salt.client.ssh.client.SSHClient(mopts=opts)

    emit(progress="connecting")
    ret = client.cmd(
        [mid],
        probe_command(payload["python"]),
        raw_shell=True,
        jid=salt.utils.jid.gen_jid(opts),
        **common,
    )
    problem, found = check_probe(ret.get(mid), host, payload["python"], payload["expect"])
    if problem:
        emit(result={"error": problem})
        return 0
    set_path = thin_path(found)
    if set_path:
        with open(payload["roster_file"], encoding="utf-8") as fh:
            roster = yaml.safe_load(fh.read().split("\n", 1)[1])
        roster[mid]["set_path"] = set_path
        _write_private(payload["roster_file"], "#!yaml\n" + yaml.safe_dump(roster))

    emit(progress="applying bootstrap state")
    ret = client.cmd(
        [mid],
        "state.apply",
        [SLS_NAME],
        kwarg={"pillar": payload["pillar"]},
        ssh_wipe=True,
        jid=salt.utils.jid.gen_jid(opts),
        **common,
    )
    answer = ret.get(mid)
    if isinstance(answer, dict) and "return" in answer and "retcode" in answer:
        answer = answer["return"]  # salt-call --metadata
    emit(result={"state": answer})
    return 0


if __name__ == "__main__":
    sys.exit(_child_main())
