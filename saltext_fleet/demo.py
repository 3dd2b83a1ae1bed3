"""``saltext-fleet demo``: a real salt-master and real salt-minions on loopback, under one root.

Everything the demo starts lives below one temporary folder (configs, keys, caches, logs, the
embedded SQLite store) and listens on 127.0.0.1 on free ports. The daemons are the ordinary
``salt-master`` and ``salt-minion`` of the installed Salt; they find this extension through its
``salt.loader`` entry point, exactly as a production master does.

Keys are not auto-accepted: the demo waits for each minion's key to be pending and accepts it
by name, as an operator would.
"""

from __future__ import annotations

import contextlib
import getpass
import http.cookiejar
import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, TextIO

import salt.client
import salt.config
import salt.key
import salt.runner
import yaml

from saltext_fleet import config, snippet
from saltext_fleet.core.errors import FleetError
from saltext_fleet.output.fleet_drift import render
from saltext_fleet.store import engine as store_engine
from saltext_fleet.store import ui as store_ui
from saltext_fleet.store import users as store_users
from saltext_fleet.store import writer as store_writer


class DemoError(FleetError, RuntimeError):
    """The demo could not bring its fleet up; the message says which step failed."""


def free_port() -> int:
    with contextlib.closing(socket.socket(socket.AF_INET, socket.SOCK_STREAM)) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def salt_script(name: str) -> list[str]:
    """The command line of a Salt daemon script of the running interpreter's installation."""
    beside = Path(sys.executable).with_name(name)
    if beside.exists():
        return [str(beside)]
    found = shutil.which(name)
    if found:
        return [found]
    entry = {"salt-master": "salt_master", "salt-minion": "salt_minion"}[name]
    return [sys.executable, "-c", f"import salt.scripts; salt.scripts.{entry}()"]


class DemoFleet:
    """A master and ``count`` minions under ``root``; use as a context manager."""

    def __init__(
        self,
        root: str | os.PathLike | None = None,
        count: int = 3,
        say: Callable[[str], None] | None = None,
        minion_pip: dict[int, list[str]] | None = None,
    ):
        self.own_root = root is None
        self.root = Path(root or tempfile.mkdtemp(prefix="saltext-fleet-demo-"))
        self.count = count
        self.say = say or (lambda message: None)
        self.minion_pip = minion_pip or {}
        self.user = getpass.getuser()
        self.publish_port = free_port()
        self.ret_port = free_port()
        self.ui_port = free_port()
        self.master_conf_dir = self.root / "master"
        self.minion_ids = [f"demo-{n}" for n in range(1, count + 1)]
        self.processes: dict[str, subprocess.Popen] = {}
        # Unix socket paths are limited to ~107 bytes: under a long root, the daemons' sockets
        # go to a short temporary folder instead (removed on stop).
        self.sock_base: Path | None = None
        if len(str(self.root)) > 30:
            self.sock_base = Path(tempfile.mkdtemp(prefix="sfleet-"))
        self._client = None

    # -- configuration -------------------------------------------------------------------------

    def _paths(self, name: str, kind: str) -> dict[str, Any]:
        """Explicit paths for one daemon under the demo root.

        Salt would prepend ``root_dir`` to every path (sockets included), and Unix socket paths
        are limited to ~107 bytes, so the root stays "/" and each path is spelled out; under a
        long root the sockets go to a short temporary folder.
        """
        base = self.root / f"{name}-root"
        sock_dir = (self.sock_base / name) if self.sock_base else base / "run"
        paths = {
            "root_dir": "/",
            "pki_dir": str(base / "pki"),
            "cachedir": str(base / "cache"),
            "extension_modules": str(base / "cache" / "extmods"),
            "sock_dir": str(sock_dir),
            "pidfile": str(base / "run" / f"salt-{kind}.pid"),
            "log_file": str(base / "log" / kind),
        }
        if kind == "master":
            paths.update(
                {
                    "key_logfile": str(base / "log" / "key"),
                    "token_dir": str(base / "cache" / "tokens"),
                    "autosign_grains_dir": str(base / "autosign_grains"),
                    "file_roots": {"base": [str(base / "srv" / "salt")]},
                    "pillar_roots": {"base": [str(base / "srv" / "pillar")]},
                }
            )
        return paths

    def master_config(self) -> dict[str, Any]:
        paths = self._paths("master", "master")
        conf = snippet.master_snippet(cachedir=paths["cachedir"])
        conf.update(paths)
        conf.update(
            {
                "id": "demo-master",
                "user": self.user,
                "interface": "127.0.0.1",
                "publish_port": self.publish_port,
                "ret_port": self.ret_port,
                "auto_accept": False,
                "open_mode": False,
                "log_level_logfile": "info",
            }
        )
        # the engine serves the web UI on loopback
        conf["fleet"]["ui"] = {"host": "127.0.0.1", "port": self.ui_port}
        return conf

    @property
    def ui_url(self) -> str:
        return f"http://127.0.0.1:{self.ui_port}/"

    def create_admin(self) -> str:
        """An ``admin`` user of the web UI with a new random password (returned)."""
        password = secrets.token_urlsafe(12)
        engine = store_engine.get_engine(config.load(self.master_config()).db_url)
        store_engine.ensure_schema(engine)
        with engine.begin() as conn:
            if store_users.get_user(conn, "admin") is None:
                store_users.create_user(conn, "admin", "admin", password)
            else:
                store_users.set_password(conn, "admin", password)
        return password

    def wait_for_ui(self, timeout: float = 60) -> float:
        """Seconds until the engine answers on the UI's port (DemoError after ``timeout``)."""
        started = time.monotonic()
        while time.monotonic() - started < timeout:
            try:
                with urllib.request.urlopen(self.ui_url + "login", timeout=5) as resp:
                    if resp.status == 200:
                        return time.monotonic() - started
            except (urllib.error.URLError, OSError):
                pass
            self._check_alive()
            time.sleep(0.5)
        raise DemoError(f"the web UI did not answer on {self.ui_url} within {timeout:.0f} s")

    def check_login(self, username: str, password: str) -> None:
        """Log in to the UI as a browser would (DemoError when the overview does not open)."""
        opener = urllib.request.build_opener(
            urllib.request.HTTPCookieProcessor(http.cookiejar.CookieJar())
        )
        try:
            # the form first: its CSRF token is bound to the session cookie it sets
            with opener.open(self.ui_url + "login", timeout=30) as resp:
                form = resp.read().decode("utf-8", "replace")
            token = re.search(r'name="csrf_token" value="([^"]+)"', form)
            if token is None:
                raise DemoError("the web UI's login form has no CSRF token")
            fields = {"username": username, "password": password, "csrf_token": token.group(1)}
            body = urllib.parse.urlencode(fields).encode()
            with opener.open(self.ui_url + "login", data=body, timeout=30) as resp:
                page = resp.read().decode("utf-8", "replace")
        except OSError as exc:
            raise DemoError(f"logging in to the web UI failed: {exc}") from exc
        if 'id="fleet"' not in page:
            raise DemoError("logging in to the web UI did not open the fleet overview")

    def minion_config(self, index: int, minion_id: str) -> dict[str, Any]:
        conf: dict[str, Any] = self._paths(minion_id, "minion")
        conf.update(
            {
                "id": minion_id,
                "user": self.user,
                "master": "127.0.0.1",
                "master_port": self.ret_port,
                "publish_port": self.publish_port,
                "acceptance_wait_time": 1,
                "acceptance_wait_time_max": 2,
                "random_reauth_delay": 0,
                "log_level_logfile": "info",
            }
        )
        pip = self.minion_pip.get(index)
        if pip:
            conf["fleet"] = {"inventory": {"pip": pip}}
        return conf

    def write_configs(self) -> None:
        self.master_conf_dir.mkdir(parents=True, exist_ok=True)
        _write_yaml(self.master_conf_dir / "master", self.master_config())
        for index, minion_id in enumerate(self.minion_ids, start=1):
            conf_dir = self.root / minion_id
            conf_dir.mkdir(parents=True, exist_ok=True)
            _write_yaml(conf_dir / "minion", self.minion_config(index, minion_id))

    # -- lifecycle -----------------------------------------------------------------------------

    def start(self, timeout: float = 60) -> float:
        """Start everything and wait until every minion answers; returns the seconds it took."""
        started = time.monotonic()
        self.write_configs()
        self._spawn("master", salt_script("salt-master") + ["-c", str(self.master_conf_dir)])
        for minion_id in self.minion_ids:
            self._spawn(minion_id, salt_script("salt-minion") + ["-c", str(self.root / minion_id)])
        self.say(f"started salt-master and {self.count} salt-minions under {self.root}")
        deadline = started + timeout
        self._accept_keys(deadline)
        self._wait_for_answers(deadline)
        return time.monotonic() - started

    def stop(self) -> None:
        """Stop every daemon this demo started (TERM, then KILL after a grace period)."""
        # The runners this process ran wrote to the job cache through a writer of its own:
        # flush it while the store is still there.
        store_writer.close_all(10)
        if self._client is not None:
            self._client.destroy()
            self._client = None
        for proc in self.processes.values():
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGTERM)
        deadline = time.monotonic() + 15
        for proc in self.processes.values():
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=5)
        self.processes.clear()
        if self.sock_base:
            shutil.rmtree(self.sock_base, ignore_errors=True)

    def __enter__(self) -> DemoFleet:
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def _spawn(self, name: str, argv: list[str]) -> None:
        log_path = self.root / f"{name}.out"
        with open(log_path, "ab") as out:
            # A new session: Ctrl-C in the terminal reaches the demo, which then stops the
            # daemons in order, instead of every daemon at once.
            self.processes[name] = subprocess.Popen(
                argv,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )

    def _check_alive(self) -> None:
        for name, proc in self.processes.items():
            if proc.poll() is not None:
                tail = _tail(self.root / f"{name}.out")
                raise DemoError(f"{name} exited with code {proc.returncode}:\n{tail}")

    # -- keys and answers ----------------------------------------------------------------------

    def master_opts(self) -> dict[str, Any]:
        return salt.config.master_config(str(self.master_conf_dir / "master"))

    def _accept_keys(self, deadline: float) -> None:
        with salt.key.get_key(self.master_opts()) as keys:
            waiting = set(self.minion_ids)
            while waiting:
                self._check_alive()
                pending = set(keys.list_status("pre").get("minions_pre", []))
                for minion_id in sorted(waiting & pending):
                    keys.accept(match=[minion_id], include_rejected=False, include_denied=False)
                    self.say(f"accepted the key of {minion_id}")
                    waiting.discard(minion_id)
                if waiting and time.monotonic() > deadline:
                    raise DemoError(f"no pending key from {', '.join(sorted(waiting))} in time")
                if waiting:
                    time.sleep(0.2)

    def client(self):
        if self._client is None:
            self._client = salt.client.LocalClient(mopts=self.master_opts())
        return self._client

    def _wait_for_answers(self, deadline: float) -> None:
        answering: set[str] = set()
        while True:
            self._check_alive()
            ret = self.client().cmd(self.minion_ids, "test.ping", tgt_type="list", timeout=3)
            answering = {mid for mid, value in ret.items() if value is True}
            if answering >= set(self.minion_ids):
                return
            if time.monotonic() > deadline:
                missing = ", ".join(sorted(set(self.minion_ids) - answering))
                raise DemoError(f"minions not answering in time: {missing}")

    def health(self) -> dict[str, Any]:
        """What an operator sees in the store: the nodes (only minions), their status, the
        failed jobs on each node's page and who is onboarded."""

        engine = store_engine.get_engine(config.load(self.master_opts()).db_url)
        with engine.connect() as conn:
            rows = store_ui.overview(conn, store_ui.OverviewQuery(per_page=500))["rows"]
            failed = {
                row["id"]: [
                    job["fun"]
                    for job in store_ui.recent_jobs(conn, row["id"], limit=100)
                    if job["success"] is False
                ]
                for row in rows
            }
            onboarded = [
                row["id"]
                for row in rows
                if (store_ui.node(conn, row["id"]) or {}).get("onboarded_at")
            ]
        return {
            "nodes": sorted(row["id"] for row in rows),
            "statuses": {row["id"]: row["status"] for row in rows},
            "failed_jobs": {mid: funs for mid, funs in failed.items() if funs},
            "onboarded": sorted(onboarded),
        }

    def run(self, fun: str, arg: Iterable = (), timeout: int = 60) -> dict[str, Any]:
        return self.client().cmd(self.minion_ids, fun, list(arg), tgt_type="list", timeout=timeout)


#: The demo's own virtualenvs: demo-1 and demo-3 share the "good" one, demo-2 really differs
#: (a newer demo-app, an extra package, demo-tool missing). Written as installed
#: distributions (``.dist-info``), so nothing is downloaded.
DEMO_VENVS = {
    "good": {"demo-app": "1.4.2", "demo-lib": "2.3.0", "demo-tool": "3.1.0"},
    "other": {"demo-app": "2.0.1", "demo-lib": "2.3.1", "demo-extra": "0.9.0"},
}
DEMO_VENV_OF = {1: "good", 2: "other"}  # other minions: "good"


def make_demo_venv(path: Path, packages: dict[str, str]) -> str:
    """A real virtualenv (no pip) holding ``packages`` as installed distributions."""
    subprocess.run(
        [sys.executable, "-m", "venv", "--without-pip", str(path)], check=True, capture_output=True
    )
    python = path / "bin" / "python"
    site = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    for name, version in packages.items():
        dist = Path(site) / f"{name.replace('-', '_')}-{version}.dist-info"
        dist.mkdir(parents=True, exist_ok=True)
        (dist / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n")
        (dist / "INSTALLER").write_text("saltext-fleet-demo\n")
    return str(python)


def drift_summary(fleet: DemoFleet, say: Callable[[str], None], timeout: float = 60) -> dict:
    """Pin a baseline from demo-1, assign it to every minion, and show the drift table."""
    opts = fleet.master_opts()
    opts["quiet"] = True
    with salt.runner.RunnerClient(opts) as runner:
        deadline = time.monotonic() + timeout
        while True:  # the returner stores inventories in the background
            nodes = runner.cmd("fleet.nodes", print_event=False)
            if not isinstance(nodes, list):
                raise DemoError(f"fleet.nodes failed: {str(nodes)[:500]}")
            stored = {n["minion_id"] for n in nodes if n.get("digest")}
            if stored >= set(fleet.minion_ids):
                break
            if time.monotonic() > deadline:
                raise DemoError("the master did not store every inventory in time")
            time.sleep(0.5)
        first = fleet.minion_ids[0]

        def call(fun, arg=(), kwarg=None, want=dict):
            ret = runner.cmd(fun, list(arg), kwarg=kwarg or {}, print_event=False)
            if isinstance(ret, dict) and set(ret) == {"outputter", "data"}:
                ret = ret["data"]
            if not isinstance(ret, want):
                raise DemoError(f"{fun} failed: {str(ret)[:500]}")
            return ret

        call("fleet.baseline_pin", [first], {"name": "demo", "overwrite": True})
        call("fleet.baseline_assign", ["demo", "demo-*"])
        result = call("fleet.drift")
    if not isinstance(result, dict):
        raise DemoError(f"fleet.drift failed: {str(result)[:300]}")
    say(f"Drift from baseline 'demo' (pinned from {first}):")
    for line in render(result).splitlines():
        say(line)
    return {minion: r["score"] for minion, r in result.items()}


def wait_onboarded(fleet: DemoFleet, look: Callable[[], dict], timeout: float = 60) -> dict:
    """The store's view once the reactor has onboarded every minion (and the jobs it sent,
    which run on the nodes, have returned)."""
    deadline = time.monotonic() + timeout
    while True:
        seen = look()
        if set(seen["onboarded"]) >= set(fleet.minion_ids) or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    # the onboarding's jobs return within seconds; give them the time, still looking
    settle = time.monotonic() + 5
    while time.monotonic() < settle:
        time.sleep(1)
        seen = look()
    return seen


def summarise(inventories: dict[str, Any], grains: dict[str, Any]) -> list[str]:
    """A short, readable fleet table: one row per minion, package counts per ecosystem."""
    ecosystems = sorted(
        {
            eco
            for inv in inventories.values()
            if isinstance(inv, dict)
            for eco in (inv.get("packages") or {})
        }
    )
    header = ["minion", "hostname", "os"] + ecosystems + ["digest"]
    rows = [header]
    for minion_id in sorted(set(inventories) | set(grains)):
        inv = inventories.get(minion_id)
        fleet = (grains.get(minion_id) or {}).get("fleet") or {}
        os_name = " ".join(str(fleet.get(k) or "") for k in ("os", "os_version")).strip()
        if not isinstance(inv, dict):
            rows.append(
                [minion_id, str(fleet.get("hostname") or "?"), os_name or "?"]
                + ["-"] * len(ecosystems)
                + [f"no inventory: {str(inv)[:60]}"]
            )
            continue
        packages = inv.get("packages") or {}
        counts = [str(len(packages.get(eco) or {})) for eco in ecosystems]
        rows.append(
            [minion_id, str(fleet.get("hostname") or "?"), os_name or "?"]
            + counts
            + [str(inv.get("digest", ""))[:12]]
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    return ["  ".join(cell.ljust(widths[i]) for i, cell in enumerate(row)).rstrip() for row in rows]


def run_demo(
    count: int = 3,
    root: str | None = None,
    once: bool = False,
    out: TextIO | None = None,
    timeout: float = 60,
) -> int:
    """Bring the demo fleet up, print its summary, and stay up until Ctrl-C (or not, ``once``)."""
    out = out or sys.stdout

    def say(message: str) -> None:
        print(message, file=out, flush=True)

    fleet = DemoFleet(root=root, count=count, say=say)
    failed = False

    def on_signal(signum, frame):
        raise KeyboardInterrupt

    # Install the handlers explicitly: a demo started from a script in the background inherits
    # an ignored SIGINT, and Ctrl-C must still stop everything.
    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        with fleet:
            venvs = {}
            for label, packages in DEMO_VENVS.items():
                venvs[label] = make_demo_venv(fleet.root / f"venv-{label}", packages)
            fleet.minion_pip = {
                index: [venvs[DEMO_VENV_OF.get(index, "good")]] for index in range(1, count + 1)
            }
            elapsed = fleet.start(timeout=timeout)
            say(f"{count} minions answering after {elapsed:.1f} s")
            # a node that answers is never shown offline: look whenever the demo does something
            offline_seen: set[str] = set()

            def look() -> dict[str, Any]:
                seen = fleet.health()
                offline_seen.update(m for m, st in seen["statuses"].items() if st == "offline")
                return seen

            look()
            inventories = fleet.run("fleet.inventory")
            grains = fleet.run("grains.item", ["fleet"])
            say("")
            for line in summarise(inventories, grains):
                say(line)
            say("")
            look()
            scores = drift_summary(fleet, say, timeout=timeout)
            say("")
            health = wait_onboarded(fleet, look, timeout=timeout)
            password = fleet.create_admin()
            fleet.wait_for_ui(timeout=timeout)
            fleet.check_login("admin", password)
            say(f"Web UI: {fleet.ui_url}  (user: admin, password: {password})")
            say("")
            counts = {
                mid: {eco: len(pkgs or {}) for eco, pkgs in (inv.get("packages") or {}).items()}
                for mid, inv in inventories.items()
                if isinstance(inv, dict)
            }
            say(
                json.dumps(
                    {
                        "minions_answering": count,
                        "seconds_to_answer": round(elapsed, 2),
                        "packages": counts,
                        "drift": scores,
                        "ui": fleet.ui_url,
                        "nodes": health["nodes"],
                        "onboarded": health["onboarded"],
                        "failed_jobs": health["failed_jobs"],
                        "offline_seen": sorted(offline_seen),
                    }
                )
            )
            if once:
                return 0
            salt_cli = Path(sys.executable).with_name("salt")
            say(
                f"The fleet stays up. Try:  {salt_cli} -c {fleet.master_conf_dir} '*' fleet.inventory"
            )
            say("Press Ctrl-C to stop every daemon the demo started.")
            while True:
                fleet._check_alive()
                time.sleep(1)
    except KeyboardInterrupt:
        say("interrupted")
    except DemoError as exc:
        say(f"demo failed: {exc}")
        failed = True
        return 1
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        if fleet.processes:
            fleet.stop()
        if fleet.own_root and not failed:
            shutil.rmtree(fleet.root, ignore_errors=True)
            say("stopped every daemon the demo started and removed its files")
        else:
            say(f"stopped every daemon the demo started; its files are under {fleet.root}")
    return 0


def _write_yaml(path: Path, data: dict[str, Any]) -> None:
    path.write_text(yaml.safe_dump(data, default_flow_style=False, sort_keys=True))


def _tail(path: Path, lines: int = 20) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no output)"
