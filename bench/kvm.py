#!/usr/bin/env python
"""PiKVM fleet benchmark: 200 fake devices polled by one master, and the console's added
latency per key event.

**The devices.** ``--devices`` fake kvmds (``tests/support/fakekvmd.py``: real HTTPS servers
on loopback, each with its own self-signed certificate, session auth) run in ``--fake-procs``
child processes (one event loop each, :class:`~tests.support.fakekvmd.FakeKvmdGroup`), never
in the process that polls, so the poller's CPU and the devices' are measured apart. Device
*i* reports a CPU temperature of its own (:func:`device_temperature`), so each poll is checked
to have read the device it names.

**Polling.** The devices are registered in a fresh PostgreSQL database (created and dropped by
the script: credentials encrypted by the vault as ``fleet.kvm_add`` does) and polled by
:func:`saltext_fleet.master.kvmpoll.poll_once` with the real
:class:`~saltext_fleet.kvm.poller.Poller`, which keeps its clients: the first cycle opens
every connection (TCP, TLS handshake, ``/api/auth/login``) and is reported on its own
(``first_cycle_s``); then ``--cycles`` cycles on the kept-open connections, the way the engine
polls every 15 s. ``cycle_s`` is the slowest of those (median beside it); ``cpu_ms_per_device``
is the polling process's CPU (user + system, every thread: ``resource.getrusage``) per device
per warm cycle, the store's writes included (PostgreSQL's own CPU is not). A device whose poll
failed or whose temperature is not its own is listed in ``failed``.

**Key latency.** From a client sending a key event (a press or a release) until the fake kvmd
receives it on ``/api/ws``, both read from ``CLOCK_MONOTONIC`` (one clock for every process of
the machine). The client is a process of its own, as a browser is. Two paths are measured in
the same run, event by event in turn, to two devices of the same fake process: *direct* (the
client speaks kvmd's ``/api/ws`` itself, through
:class:`~saltext_fleet.kvm.client.KvmEvents`) and *bridge* (the client speaks to the console
bridge's websocket in the polling process, which forwards to kvmd). Each bridged event's added
latency is its latency minus that of its direct twin, sent just before it
(:func:`added_latency_ms`: delays on the device's side hit both alike and cancel out), and the
figures are the 95th percentile of that, under three loads of the polling process:

* ``key_ms_p95``: the engine as deployed, its own poll loop
  (:class:`~saltext_fleet.master.kvmpoll.PollLoop`) polling all devices every
  ``--poll-interval`` seconds (15, the default of ``fleet:kvm:poll_interval``): once its first
  cycle (which opens every connection again) is over, keys are sent for one whole interval,
  which holds the start of its next cycle;
* ``key_ms_p95_idle``: no polling;
* ``key_ms_p95_saturated``: poll cycles back to back, every key sent during one. On a small
  machine this is an overload of the bench's own making: the 200 fake devices (about as much
  CPU as the poller) then share its cores with the engine full time.

The bridge measured is the web UI's console bridge (``saltext_fleet.webui.console``,
:class:`WebUiBridge`: the engine's own web server in the polling process, an operator logged
in through the login form, keys sent once the bridge says ``ready``), named in the output
(``bridge``). ``loadavg`` is the machine's load at the end.

Targets, and what ``ok`` (and the exit status) means: ``cycle_s`` at most 5 s, ``key_ms_p95``
at most 20 ms and no failed device. ``key_ms_p95_idle`` and ``key_ms_p95_saturated`` are
printed but not part of ``ok``. The last line of the output is one JSON object with
``devices``, ``cycle_s``, ``key_ms_p95`` and ``ok``.

Usage (from the repository root)::

    .venv/bin/python bench/kvm.py                  # 200 devices, 40-70 s here
    .venv/bin/python bench/kvm.py --quick          # 20 devices, 2 s poll interval: a smoke run
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import resource
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Sequence

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

DEFAULT_PG_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
TARGET_CYCLE_S = 5.0
TARGET_KEY_MS_P95 = 20.0
PASSWORD = "bench-kvm-pw-7730"
KEYS = ("KeyA", "KeyS", "KeyD", "KeyF")

# ----- pure pieces (tests/kvm/test_bench_kvm.py) ---------------------------------------------


def device_name(index: int) -> str:
    return f"pikvm-{index:03d}"


def device_temperature(index: int) -> float:
    """The CPU temperature fake ``index`` reports: one of its own, below any alert."""
    return round(40.0 + (index % 300) / 10.0, 1)


def split_counts(total: int, parts: int) -> list[int]:
    """``total`` devices over ``parts`` processes, as evenly as can be (none empty)."""
    parts = max(1, min(parts, total))
    base, extra = divmod(total, parts)
    return [base + (1 if i < extra else 0) for i in range(parts)]


def percentile(values: Sequence[float], pct: float) -> float:
    """Nearest-rank percentile (``pct`` 0..100) of a non-empty sequence."""
    if not values:
        raise ValueError("percentile of no values")
    ordered = sorted(values)
    rank = max(1, -(-len(ordered) * pct // 100))  # ceil(n * pct / 100), at least 1
    return ordered[min(len(ordered), int(rank)) - 1]


def key_events(count: int) -> list[tuple[str, bool]]:
    """``count`` key events, presses and releases in turn (a key is released before the next
    is pressed, so the device never holds a key down between events)."""
    return [(KEYS[(i // 2) % len(KEYS)], i % 2 == 0) for i in range(count)]


def latencies_ms(
    sent: Sequence[float], received: Sequence[float], events: Sequence[dict], expected
) -> list[float]:
    """Per event, received minus sent in ms. ``events`` are what the device recorded, in
    order, and must be exactly ``expected`` (``[(key, state)]``): a lost, extra or reordered
    event is an error, never a latency."""
    got = [(e.get("key"), e.get("state")) for e in events]
    if got != list(expected):
        raise ValueError(f"the device received {got[:6]}... not the {len(expected)} events sent")
    if not len(sent) == len(received) == len(expected):
        raise ValueError(f"{len(sent)} sent, {len(received)} arrival times")
    return [(r - s) * 1000.0 for s, r in zip(sent, received, strict=True)]


def added_latency_ms(bridge_ms: Sequence[float], direct_ms: Sequence[float]) -> list[float]:
    """Per pair of events (the bridged one sent right after its direct twin, to a device of
    the same fake process), the bridged latency minus the direct one: what the bridge added,
    with the device side's own delays (the same for both) taken out."""
    if len(bridge_ms) != len(direct_ms):
        raise ValueError(f"{len(bridge_ms)} bridged events, {len(direct_ms)} direct ones")
    return [b - d for b, d in zip(bridge_ms, direct_ms, strict=True)]


def check_polls(results: dict, expected: Iterable[int]) -> list[dict]:
    """The devices of one :func:`poll_once` answer that failed: not online, or a temperature
    that is not the one their fake reports (the poll read another device)."""
    failed = []
    for index in expected:
        name = device_name(index)
        poll = (results.get(name) or {}).get("poll")
        if poll is None:
            failed.append({"device": name, "why": "not polled"})
        elif not poll.get("online"):
            failed.append({"device": name, "why": poll.get("error") or "offline"})
        elif poll.get("temperature") != device_temperature(index):
            failed.append(
                {
                    "device": name,
                    "why": f"temperature {poll.get('temperature')}, "
                    f"its fake reports {device_temperature(index)}",
                }
            )
    return failed


def cycle_figures(walls: Sequence[float], cpus: Sequence[float], devices: int) -> dict:
    """Wall times and CPU seconds of the warm cycles as the figures reported."""
    return {
        "cycle_s": round(max(walls), 3),
        "cycle_s_median": round(statistics.median(walls), 3),
        "cycles": [round(w, 3) for w in walls],
        "cpu_ms_per_device": round(1000.0 * statistics.median(cpus) / devices, 3),
        "cpu_s_per_cycle": round(statistics.median(cpus), 3),
    }


def verdict(cycle_s: float, key_ms_p95: float | None, failed: int) -> bool:
    return (
        cycle_s <= TARGET_CYCLE_S
        and key_ms_p95 is not None
        and key_ms_p95 <= TARGET_KEY_MS_P95
        and failed == 0
    )


def process_cpu_s() -> float:
    """CPU seconds (user + system) of this process so far, all its threads."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


# ----- the fake devices, in child processes ----------------------------------------------------


def serve_fakes(first: int, count: int) -> int:
    """Child process: fakes ``first``..``first+count-1`` on one loop. Prints one JSON line
    ``{"devices": [{"index", "port", "fingerprint"}]}``, then answers one JSON line per
    command line on stdin (``hid <index>``, ``counts``, ``cpu``) until stdin closes."""
    from tests.support.fakekvmd import FakeKvmdGroup

    # no protocol pings on /api/ws: the bench's direct client never reads, and would not
    # answer them (kvmd pings every 15 s; a bridge reads and answers)
    group = FakeKvmdGroup(count, password=PASSWORD, ws_heartbeat=3600.0)
    for offset, fake in enumerate(group.fakes):
        fake.cpu_temp = device_temperature(first + offset)
    with group:
        devices = [
            {"index": first + offset, "port": fake.port, "fingerprint": fake.fingerprint}
            for offset, fake in enumerate(group.fakes)
        ]
        print(json.dumps({"devices": devices}), flush=True)
        for line in sys.stdin:
            words = line.split()
            if not words:
                continue
            if words[0] == "hid":
                events, times = group.fakes[int(words[1]) - first].hid_record()
                answer = {"events": events, "times": times}
            elif words[0] == "counts":
                answer = {
                    str(first + offset): len(fake.seen("/api/info"))
                    for offset, fake in enumerate(group.fakes)
                }
            elif words[0] == "cpu":
                answer = {"cpu_s": process_cpu_s()}
            else:
                answer = {"error": f"unknown command {words[0]!r}"}
            print(json.dumps(answer), flush=True)
    return 0


class FakeFleet:
    """The child processes serving the fake devices; :attr:`devices` ``{index: {port,
    fingerprint}}``; :meth:`ask` sends one command to the process serving a device."""

    def __init__(self, devices: int, procs: int) -> None:
        self.devices: dict[int, dict] = {}
        self._procs: list[tuple[range, subprocess.Popen]] = []
        first = 0
        script = os.path.abspath(__file__)
        try:
            for count in split_counts(devices, procs):
                proc = subprocess.Popen(
                    [sys.executable, script, "--serve-fakes", f"{first}:{count}"],
                    stdin=subprocess.PIPE,
                    stdout=subprocess.PIPE,
                    text=True,
                )
                self._procs.append((range(first, first + count), proc))
                first += count
            for _, proc in self._procs:
                line = proc.stdout.readline()
                if not line:
                    raise RuntimeError(f"fake kvmd process {proc.pid} died while starting")
                for device in json.loads(line)["devices"]:
                    self.devices[device["index"]] = device
        except BaseException:
            self.close()
            raise

    def _proc(self, index: int) -> subprocess.Popen:
        for indexes, proc in self._procs:
            if index in indexes:
                return proc
        raise KeyError(index)

    def ask(self, index: int, command: str) -> dict:
        proc = self._proc(index)
        proc.stdin.write(command + "\n")
        proc.stdin.flush()
        return json.loads(proc.stdout.readline())

    def info_counts(self) -> dict[int, int]:
        out = {}
        for indexes, _ in self._procs:
            out.update({int(k): v for k, v in self.ask(indexes[0], "counts").items()})
        return out

    def cpu_s(self) -> float:
        return sum(self.ask(indexes[0], "cpu")["cpu_s"] for indexes, _ in self._procs)

    def close(self) -> None:
        for _, proc in self._procs:
            with contextlib.suppress(OSError):
                proc.stdin.close()
        for _, proc in self._procs:
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        self._procs = []


def device_options(device: dict) -> dict:
    """What ``fleet.kvm_add`` would register for a fake: pinned by its fingerprint."""
    return {
        "host": "127.0.0.1",
        "port": device["port"],
        "password": PASSWORD,
        "fingerprint": device["fingerprint"],
        "connect_timeout": 5,
        "timeout": 10,
    }


# ----- the store -------------------------------------------------------------------------------


def make_store(pg_url: str):
    """A fresh PostgreSQL database: ``(url, cleanup)`` (the tests' own helper)."""
    from tests.support import pgdb

    stack = contextlib.ExitStack()
    url = stack.enter_context(pgdb.fresh_database(pg_url, "fleet_bench_kvm"))
    return url, stack.close


def master_opts(root: str, db_url: str) -> dict:
    import salt.config

    opts = salt.config.master_config(None)
    opts.update(
        {
            "cachedir": os.path.join(root, "cache"),
            "pki_dir": os.path.join(root, "pki"),
            "sock_dir": os.path.join(root, "sock"),
            "fleet": {"db_url": db_url},
        }
    )
    return opts


def register(opts: dict, fleet: FakeFleet) -> None:
    from saltext_fleet import config
    from saltext_fleet.core import secrets as core_secrets
    from saltext_fleet.store import engine as store_engine
    from saltext_fleet.store import kvm as store_kvm

    cfg = config.load(opts)
    engine = store_engine.get_engine(cfg.db_url)
    store_engine.ensure_schema(engine)
    vault = core_secrets.Vault.open(cfg.key_file)
    with engine.begin() as conn:
        for index, device in sorted(fleet.devices.items()):
            store_kvm.add_device(
                conn, vault, device_name(index), device_options(device), node=f"node-{index:03d}"
            )


# ----- key latency: the console bridge -------------------------------------------------------


def bridge_key_message(key: str, state: bool) -> str:
    """What a browser sends the web UI's console bridge for one key event: kvmd's own JSON
    event, which the bridge checks and sends on to the device's ``/api/ws``."""
    return json.dumps({"event_type": "key", "event": {"key": key, "state": state}})


class WebUiBridge:
    """The web UI's console bridge (``saltext_fleet.webui.console``, ``/kvm/<name>/console/ws``)
    served by the engine's own web server (``saltext_fleet.webui.server.serve``) on its event
    loop in a thread of this process, reading the bench's store; the browser is an operator
    logged in through the login form (its session cookie and the page's origin go with the
    websocket, and it waits for the bridge's ``ready`` before typing)."""

    name = "webui console bridge (saltext_fleet.webui.console)"
    USER, PASSWORD = "bench-oper", "bench operator password 5521"

    def __init__(self, opts: dict) -> None:
        self.opts = opts
        self.port: int | None = None
        self.headers: dict[str, str] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> WebUiBridge:
        from saltext_fleet import config
        from saltext_fleet.store import engine as store_engine
        from saltext_fleet.store import users as store_users
        from saltext_fleet.webui import server
        from tests.support.kvmconsole import Session

        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = probe.getsockname()[1]
        fleet = dict(self.opts["fleet"])
        fleet["ui"] = {**dict(fleet.get("ui") or {}), "host": "127.0.0.1", "port": self.port}
        opts = {**self.opts, "fleet": fleet}
        engine = store_engine.get_engine(config.load(opts).db_url)
        with engine.begin() as conn:
            store_users.create_user(conn, self.USER, "operator", self.PASSWORD, rounds=4)
        ready, failed = threading.Event(), []
        self._loop = asyncio.new_event_loop()

        def run() -> None:
            asyncio.set_event_loop(self._loop)
            self._stop = asyncio.Event()
            try:
                self._loop.run_until_complete(server.serve(opts, ready=ready, stop=self._stop))
            except BaseException as exc:  # noqa: BLE001 - raised by start()
                failed.append(exc)
                ready.set()

        self._thread = threading.Thread(target=run, name="bench-webui", daemon=True)
        self._thread.start()
        if not ready.wait(60) or failed:
            raise RuntimeError(f"the engine's web server did not start: {failed!r}")
        session = Session(self.port).login(self.USER, self.PASSWORD)
        self.headers = {"Cookie": session.cookie, "Origin": f"http://127.0.0.1:{self.port}"}
        return self

    def url_path(self, name: str) -> str:
        return f"/kvm/{name}/console/ws"

    def stop(self) -> None:
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
            self._thread.join(30)
            self._loop = None


def open_browser_ws(port: int, path: str, headers: dict[str, str] | None = None):
    """A browser's websocket to the bridge, as :class:`saltext_fleet.kvm.ws.WebSocket` (the
    client the direct path uses too, so both paths send with the same code)."""
    from saltext_fleet.kvm.ws import WebSocket

    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return WebSocket.connect(sock, "bridge", f"127.0.0.1:{port}", path, headers or {})


def wait_for_ready(browser, timeout: float = 30.0) -> None:
    """Read the bridge's messages until ``{"type": "ready"}`` (the device is connected)."""
    from saltext_fleet.kvm.ws import OP_TEXT

    deadline = time.monotonic() + timeout
    while True:
        opcode, payload = browser.recv(timeout=max(0.0, deadline - time.monotonic()))
        if opcode != OP_TEXT:
            continue
        doc = json.loads(payload)
        if doc.get("type") == "ready":
            if not doc.get("input"):
                raise RuntimeError(f"the bridge will not take input: {doc}")
            return
        if doc.get("type") in ("error", "refused"):
            raise RuntimeError(f"the bridge refused the console: {doc}")


def send_keys(
    direct_options: dict,
    bridge_port: int,
    bridge_path: str,
    events: int,
    interval_s: float,
    before_close: Callable[[dict], object] = lambda sent: None,
    bridge_headers: dict[str, str] | None = None,
) -> dict:
    """The client's side: ``events`` key events on each path, in turn, ``interval_s`` apart:
    straight to kvmd's ``/api/ws`` (``direct_options``) and to the web UI's console bridge
    (``bridge_headers``: the logged-in browser's cookie and origin), once the bridge says it is
    ready. ``{"direct_sent", "bridge_sent"}``: the ``time.monotonic()`` just before each send.

    ``before_close(sent)`` runs before the connections close: until the device has every
    event. (This client never reads kvmd's state messages; closing a socket with unread data
    sends a reset, and a reset can make the device's kernel drop frames it had not handed to
    kvmd yet.)"""
    from saltext_fleet.kvm.client import KvmClient

    direct_sent, bridge_sent = [], []
    client = KvmClient(direct_options)
    direct = client.events()
    browser = open_browser_ws(bridge_port, bridge_path, bridge_headers)
    try:
        wait_for_ready(browser)
        next_at = time.monotonic()
        for key, state in key_events(events):
            direct_sent.append(time.monotonic())
            direct.send_key(key, state)
            bridge_sent.append(time.monotonic())
            browser.send_text(bridge_key_message(key, state))
            next_at += interval_s
            time.sleep(max(0.0, next_at - time.monotonic()))
        sent = {"direct_sent": direct_sent, "bridge_sent": bridge_sent}
        before_close(sent)
    finally:
        browser.close()
        direct.close()
        client.close()
    return sent


def key_client() -> int:
    """Child process: :func:`send_keys` with the JSON arguments of stdin's first line; prints
    the send times as one JSON line and closes its connections when stdin closes. The client
    is a process of its own, as a browser is: it must not share the engine's interpreter (and
    its GIL) with the bridge it measures."""

    def report(sent: dict) -> None:
        print(json.dumps(sent), flush=True)
        sys.stdin.read()  # the bench closes stdin once the device has every event

    send_keys(**json.loads(sys.stdin.readline()), before_close=report)
    return 0


def measure_keys(
    fleet: FakeFleet,
    direct_index: int,
    bridge_index: int,
    bridge,
    events: int,
    interval_s: float,
) -> dict:
    """Key latency of both paths (:func:`send_keys` in a client process): the direct path
    to device ``direct_index``, the bridge to device ``bridge_index`` (both served by one
    fake process). Latencies in ms per path and the bridge's added latency."""
    before = {i: len(fleet.ask(i, f"hid {i}")["events"]) for i in (direct_index, bridge_index)}
    plan = key_events(events)
    request = {
        "direct_options": device_options(fleet.devices[direct_index]),
        "bridge_port": bridge.port,
        "bridge_path": bridge.url_path(device_name(bridge_index)),
        "bridge_headers": bridge.headers,
        "events": events,
        "interval_s": interval_s,
    }
    proc = subprocess.Popen(
        [sys.executable, os.path.abspath(__file__), "--key-client"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        proc.stdin.write(json.dumps(request) + "\n")
        proc.stdin.flush()
        line = proc.stdout.readline()
        if not line:
            raise RuntimeError(f"the key client (pid {proc.pid}) ended without an answer")
        sent = json.loads(line)
        # the last events may still be on their way: wait until both devices have them all
        deadline = time.monotonic() + 30
        while True:
            got = {i: fleet.ask(i, f"hid {i}") for i in (direct_index, bridge_index)}
            if all(len(got[i]["events"]) - before[i] >= len(plan) for i in got):
                break
            if time.monotonic() > deadline:
                counts = {i: len(got[i]["events"]) - before[i] for i in got}
                raise RuntimeError(f"key events lost: {counts} of {len(plan)} arrived")
            time.sleep(0.05)
    finally:
        proc.stdin.close()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()

    def path_ms(index: int, sent: list[float]) -> list[float]:
        start = before[index]
        return latencies_ms(sent, got[index]["times"][start:], got[index]["events"][start:], plan)

    direct_ms = path_ms(direct_index, sent["direct_sent"])
    bridge_ms = path_ms(bridge_index, sent["bridge_sent"])
    added = added_latency_ms(bridge_ms, direct_ms)
    return {
        "events": len(plan),
        "direct_ms_p50": round(statistics.median(direct_ms), 3),
        "direct_ms_p95": round(percentile(direct_ms, 95), 3),
        "bridge_ms_p50": round(statistics.median(bridge_ms), 3),
        "bridge_ms_p95": round(percentile(bridge_ms, 95), 3),
        "added_ms_p50": round(statistics.median(added), 3),
        "added_ms_p95": round(percentile(added, 95), 3),
        "added_ms_max": round(max(added), 3),
    }


# ----- the run ---------------------------------------------------------------------------------


class BackgroundPolling:
    """Poll cycles back to back in a thread (the engine busy polling while a console types)."""

    def __init__(self, run_cycle: Callable[[], object]) -> None:
        self.cycles = 0
        self._run_cycle = run_cycle
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="bench-polling", daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self._run_cycle()
            self.cycles += 1

    def __enter__(self) -> BackgroundPolling:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        self._thread.join(120)


def run(args) -> dict:
    from saltext_fleet.kvm.poller import Poller
    from saltext_fleet.master import kvmpoll

    workdir = tempfile.mkdtemp(prefix="bench-kvm-")
    url, cleanup = make_store(args.pg_url)
    fleet = None
    try:
        began = time.monotonic()
        fleet = FakeFleet(args.devices, args.fake_procs)
        print(
            f"{args.devices} fake kvmds in {args.fake_procs} processes: "
            f"{time.monotonic() - began:.1f} s",
            flush=True,
        )
        opts = master_opts(workdir, url)
        register(opts, fleet)
        everyone = range(args.devices)
        failed: dict[str, str] = {}

        def note(results: dict) -> None:
            for bad in check_polls(results, everyone):
                failed.setdefault(bad["device"], bad["why"])

        with Poller(max_workers=args.workers) as poller:
            cpu0, t0 = process_cpu_s(), time.perf_counter()
            note(kvmpoll.poll_once(opts, poller))
            first_s, first_cpu = time.perf_counter() - t0, process_cpu_s() - cpu0
            print(f"first cycle (TLS handshakes, logins): {first_s:.2f} s", flush=True)
            walls, cpus = [], []
            fakes_cpu0 = fleet.cpu_s()
            for _ in range(args.cycles):
                cpu0, t0 = process_cpu_s(), time.perf_counter()
                note(kvmpoll.poll_once(opts, poller))
                walls.append(time.perf_counter() - t0)
                cpus.append(process_cpu_s() - cpu0)
                print(f"cycle: {walls[-1]:.2f} s, {cpus[-1]:.2f} s CPU", flush=True)
            fakes_cpu = (fleet.cpu_s() - fakes_cpu0) / args.cycles
            counts = fleet.info_counts()
            for index in everyone:
                if counts.get(index) != 1 + args.cycles:
                    failed.setdefault(
                        device_name(index),
                        f"its fake saw {counts.get(index)} polls, not {1 + args.cycles}",
                    )

            # the two key paths go to devices served by the same fake process
            direct_index, bridge_index = 0, 1
            bridge = WebUiBridge(opts).start()
            try:
                print(f"bridge measured: {bridge.name}", flush=True)
                idle = measure_keys(
                    fleet, direct_index, bridge_index, bridge, args.key_events, args.key_interval
                )
                print(f"keys, idle engine: {idle}", flush=True)

                def background_cycle() -> None:
                    kvmpoll.poll_once(opts, poller)

                with BackgroundPolling(background_cycle) as polling:
                    saturated = measure_keys(
                        fleet,
                        direct_index,
                        bridge_index,
                        bridge,
                        args.key_events,
                        args.key_interval,
                    )
                print(
                    f"keys, poll cycles back to back ({polling.cycles} cycles): {saturated}",
                    flush=True,
                )

                # the engine as deployed: its own poll loop every poll_interval seconds; once
                # its first cycle (which opens every connection again) is over, keys are sent
                # for one whole interval, which holds the start of its next cycle
                scheduled_opts = {
                    **opts,
                    "fleet": {**opts["fleet"], "kvm": {"poll_interval": args.poll_interval}},
                }
                loop = kvmpoll.PollLoop(scheduled_opts)
                loop_thread = threading.Thread(target=loop.run, name="bench-poll-loop")
                loop_thread.start()
                try:
                    deadline = time.monotonic() + 120
                    while loop.cycles < 1:
                        if time.monotonic() > deadline or not loop_thread.is_alive():
                            raise RuntimeError("the engine's poll loop did not finish a cycle")
                        time.sleep(0.05)
                    cycles_before = loop.cycles
                    scheduled = measure_keys(
                        fleet,
                        direct_index,
                        bridge_index,
                        bridge,
                        max(2, round(args.poll_interval / args.key_interval)),
                        args.key_interval,
                    )
                finally:
                    loop.stop()
                    loop_thread.join(120)
                print(
                    f"keys, engine polling every {args.poll_interval:g} s "
                    f"({loop.cycles - cycles_before} cycles began meanwhile): {scheduled}",
                    flush=True,
                )
            finally:
                bridge.stop()

        figures = cycle_figures(walls, cpus, args.devices)
        key_ms_p95 = scheduled["added_ms_p95"]
        return {
            "devices": args.devices,
            "fake_procs": args.fake_procs,
            "poller_threads": args.workers,
            "first_cycle_s": round(first_s, 3),
            "first_cycle_cpu_ms_per_device": round(1000.0 * first_cpu / args.devices, 3),
            **figures,
            "fakes_cpu_ms_per_device": round(1000.0 * fakes_cpu / args.devices, 3),
            "key_ms_p95": key_ms_p95,
            "key_ms_p95_idle": idle["added_ms_p95"],
            "key_ms_p95_saturated": saturated["added_ms_p95"],
            "poll_interval_s": args.poll_interval,
            "keys_scheduled": scheduled,
            "keys_idle": idle,
            "keys_saturated": saturated,
            "loadavg": [round(x, 2) for x in os.getloadavg()],
            "bridge": bridge.name,
            "failed": [{"device": k, "why": v} for k, v in sorted(failed.items())],
            "ok": verdict(figures["cycle_s"], key_ms_p95, len(failed)),
        }
    finally:
        if fleet is not None:
            fleet.close()
        cleanup()
        shutil.rmtree(workdir, ignore_errors=True)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--devices", type=int, default=None, help="default 200; --quick 20")
    parser.add_argument("--cycles", type=int, default=None, help="warm cycles (default 5)")
    parser.add_argument(
        "--workers", type=int, default=None, help="the poller's threads (default: its own)"
    )
    parser.add_argument("--fake-procs", type=int, default=2, help="processes serving the fakes")
    parser.add_argument("--key-events", type=int, default=None, help="per path (default 400)")
    parser.add_argument("--key-interval", type=float, default=0.01, help="seconds between")
    parser.add_argument(
        "--poll-interval",
        type=float,
        default=None,
        help="the engine's poll interval while keys are measured (default 15, as deployed)",
    )
    parser.add_argument("--quick", action="store_true", help="20 devices, 2 cycles: a smoke run")
    parser.add_argument("--pg-url", default=DEFAULT_PG_URL, help="a role that may create databases")
    parser.add_argument("--serve-fakes", metavar="FIRST:COUNT", help=argparse.SUPPRESS)
    parser.add_argument("--key-client", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.key_client:
        return key_client()
    if args.serve_fakes:
        first, count = (int(x) for x in args.serve_fakes.split(":"))
        return serve_fakes(first, count)
    if args.workers is None:
        from saltext_fleet.kvm.poller import MAX_WORKERS

        args.workers = MAX_WORKERS
    if args.devices is None:
        args.devices = 20 if args.quick else 200
    if args.cycles is None:
        args.cycles = 2 if args.quick else 5
    if args.poll_interval is None:
        args.poll_interval = 2.0 if args.quick else 15.0
    if args.key_events is None:
        args.key_events = 60 if args.quick else 400
    if args.devices < 2 or args.cycles < 1 or args.key_events < 2:
        parser.error("--devices at least 2, --cycles at least 1, --key-events at least 2")
    summary = {"quick": args.quick, **run(args)}
    summary["target_cycle_s"], summary["target_key_ms_p95"] = TARGET_CYCLE_S, TARGET_KEY_MS_P95
    print(json.dumps(summary))
    return 0 if summary["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
