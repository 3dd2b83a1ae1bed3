"""The pieces of bench/kvm.py that decide its figures, run without timing anything: the
latency bookkeeping, the poll checks, the verdict, and the key client through the web UI's
console bridge it measures (each key reaches the fake kvmd, on both paths, in order)."""

from __future__ import annotations

import importlib.util
import os
import time

import pytest

from tests.kvm.conftest import options_for

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location(
        "bench_kvm", os.path.join(ROOT, "bench", "kvm.py")
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_percentile_and_split(bench):
    assert bench.percentile([5, 1, 4, 2, 3], 50) == 3
    assert bench.percentile(list(range(1, 101)), 95) == 95
    assert bench.percentile([7.0], 95) == 7.0
    with pytest.raises(ValueError):
        bench.percentile([], 95)
    assert bench.split_counts(200, 3) == [67, 67, 66]
    assert bench.split_counts(2, 5) == [1, 1]


def test_key_events_release_each_key_before_the_next(bench):
    events = bench.key_events(6)
    assert events == [
        ("KeyA", True),
        ("KeyA", False),
        ("KeyS", True),
        ("KeyS", False),
        ("KeyD", True),
        ("KeyD", False),
    ]


def test_latencies_need_exactly_the_events_sent(bench):
    plan = bench.key_events(2)
    got = [{"key": "KeyA", "state": True}, {"key": "KeyA", "state": False}]
    assert bench.latencies_ms([1.0, 2.0], [1.003, 2.010], got, plan) == pytest.approx([3.0, 10.0])
    with pytest.raises(ValueError, match="not the 2 events sent"):
        bench.latencies_ms([1.0, 2.0], [1.003, 2.010], got[:1], plan)
    with pytest.raises(ValueError, match="not the 2 events sent"):
        bench.latencies_ms([1.0, 2.0], [1.0, 2.0], list(reversed(got)), plan)


def test_added_latency_is_per_pair(bench):
    assert bench.added_latency_ms([3.0, 5.0, 12.0], [1.0, 2.0, 9.0]) == [2.0, 3.0, 3.0]
    assert bench.added_latency_ms([1.0], [2.0]) == [-1.0]
    with pytest.raises(ValueError):
        bench.added_latency_ms([1.0, 2.0], [1.0])


def test_poll_checks_catch_a_device_answering_for_another(bench):
    good = {"online": True, "temperature": bench.device_temperature(0)}
    results = {
        bench.device_name(0): {"poll": good},
        bench.device_name(1): {"poll": dict(good)},  # device 0's temperature: wrong device
        bench.device_name(2): {"poll": {"online": False, "error": "kvm 127.0.0.1: timed out"}},
    }
    failed = bench.check_polls(results, range(4))
    assert [f["device"] for f in failed] == ["pikvm-001", "pikvm-002", "pikvm-003"]
    assert "temperature" in failed[0]["why"] and failed[1]["why"] == "kvm 127.0.0.1: timed out"
    assert failed[2]["why"] == "not polled"
    assert bench.device_temperature(1) != bench.device_temperature(0)


def test_verdict_and_figures(bench):
    assert bench.verdict(4.9, 19.0, 0) is True
    assert bench.verdict(5.1, 1.0, 0) is False
    assert bench.verdict(1.0, 20.5, 0) is False
    assert bench.verdict(1.0, 1.0, 1) is False
    assert bench.verdict(1.0, None, 0) is False
    figures = bench.cycle_figures([1.0, 3.0, 2.0], [0.2, 0.4, 0.3], 100)
    assert figures["cycle_s"] == 3.0 and figures["cycle_s_median"] == 2.0
    assert figures["cpu_ms_per_device"] == 3.0


def wait_for_events(fake, count: int) -> list[dict]:
    deadline = time.monotonic() + 10
    while len(fake.hid_record()[0]) < count:
        assert time.monotonic() < deadline, f"only {fake.hid_events} reached the fake"
        time.sleep(0.02)
    return fake.hid_record()[0]


def test_a_group_of_fakes_serves_each_device_on_its_own(bench):
    from saltext_fleet.kvm.client import KvmClient
    from tests.support.fakekvmd import FakeKvmdGroup

    with FakeKvmdGroup(3, password=bench.PASSWORD) as group:
        for index, fake in enumerate(group.fakes):
            fake.cpu_temp = bench.device_temperature(index)
        devices = [{"port": f.port, "fingerprint": f.fingerprint} for f in group.fakes]
        assert len({d["port"] for d in devices}) == len({d["fingerprint"] for d in devices}) == 3
        for index, device in enumerate(devices):
            with KvmClient(bench.device_options(device)) as kvm:
                health = kvm.info(["health"])["health"]
            assert health["temp"]["cpu"] == bench.device_temperature(index)
        assert [len(f.seen("/api/info")) for f in group.fakes] == [1, 1, 1]


def test_the_key_client_sends_through_the_web_ui_bridge_and_waits_before_closing(
    bench, fake, tmp_path
):
    from saltext_fleet import config
    from saltext_fleet.core import secrets as core_secrets
    from saltext_fleet.store import engine as store_engine
    from saltext_fleet.store import kvm as store_kvm

    opts = bench.master_opts(str(tmp_path), f"sqlite:///{tmp_path / 'fleet.db'}")
    cfg = config.load(opts)
    engine = store_engine.get_engine(cfg.db_url)
    store_engine.ensure_schema(engine)
    with engine.begin() as conn:
        store_kvm.add_device(
            conn, core_secrets.Vault.open(cfg.key_file), "pikvm-1", options_for(fake)
        )
    seen_before_close = []
    bridge = bench.WebUiBridge(opts).start()
    try:
        assert "webui" in bridge.name and "Cookie" in bridge.headers
        sent = bench.send_keys(
            options_for(fake),
            bridge.port,
            bridge.url_path("pikvm-1"),
            events=6,
            interval_s=0.001,
            before_close=lambda sent: seen_before_close.append(wait_for_events(fake, 12)),
            bridge_headers=bridge.headers,
        )
    finally:
        bridge.stop()
        store_engine.dispose_all()
    assert len(sent["direct_sent"]) == len(sent["bridge_sent"]) == 6
    # each bridged event is sent right after its direct twin
    assert all(d <= b for d, b in zip(sent["direct_sent"], sent["bridge_sent"], strict=True))
    # every event had arrived before the client closed its connections
    events = seen_before_close[0]
    assert len(events) == 12
    direct = [(e["key"], e["state"]) for e in events if e["via"] == "ws-bin"]
    bridged = [(e["key"], e["state"]) for e in events if e["via"] == "ws"]
    assert direct == bench.key_events(6)  # kvmd's binary events, straight from the client
    assert bridged == bench.key_events(6)  # kvmd's JSON events, in order, through the bridge
