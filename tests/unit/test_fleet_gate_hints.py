"""fleet_gate.hint: the reactor's limit on the work an event that any minion could fire may
cause (one piece of work per node and window, the hints in between acted on once after)."""

import threading

import pytest

from saltext_fleet.core import gate as core_gate
from saltext_fleet.master import clients
from saltext_fleet.modules import fleet_gate


@pytest.fixture
def hints(monkeypatch, tmp_path):
    accepted = tmp_path / "pki" / "minions"
    accepted.mkdir(parents=True)
    for minion in ("web1", "web2", "x", "y"):
        (accepted / minion).write_text("a public key")
    state = {
        "limits": {
            kind: core_gate.HintLimiter(window, trailing=kind != "refuse")
            for kind, window in fleet_gate.HINT_WINDOWS.items()
        },
        "presence": {"new": set(), "lost": set()},
        "thread": None,
    }
    monkeypatch.setattr(fleet_gate, "_HINTS", state, raising=False)
    monkeypatch.setattr(fleet_gate, "_CLAIMS", {})  # the store under this test's cachedir
    opts = {"__role": "master", "pki_dir": str(tmp_path / "pki"), "cachedir": str(tmp_path)}
    monkeypatch.setattr(fleet_gate, "__opts__", opts, raising=False)
    return state


def test_pkgset_hints_for_a_node_are_acted_on_once_a_window(hints):
    assert fleet_gate.hint("pkgset", "web1")
    assert not fleet_gate.hint("pkgset", "web1")
    assert not fleet_gate.hint("pkgset", "web1")
    assert fleet_gate.hint("pkgset", "web2")
    # the two in between: once, when the window ends
    assert hints["limits"]["pkgset"].waiting() == 1
    assert hints["limits"]["pkgset"].due(now=10**9) == ["web1"]


def test_bad_ids_and_unknown_kinds_do_nothing(hints):
    for bad in ("../x", "-rf", "", None, "a" * 300, "web1\n"):
        assert not fleet_gate.hint("pkgset", bad)
        assert not fleet_gate.hint("onboard", bad, bad)
    assert not fleet_gate.hint("other", "web1")
    assert not fleet_gate.hint("presence", data="junk")
    assert not fleet_gate.hint("presence", data={"lost": ["../x"], "new": "web1"})


def test_a_start_from_another_sender_does_not_use_the_nodes_window(hints):
    # y claims x started: handed to the runner to be refused and recorded, once a minute,
    # whatever sender the claims name (a batch event names anyone)
    assert fleet_gate.hint("onboard", "x", "y")
    assert not fleet_gate.hint("onboard", "x", "y")
    assert not fleet_gate.hint("onboard", "x", "z-made-up")
    # ... and x's own start is still acted on at once
    assert fleet_gate.hint("onboard", "x", "x")
    assert not fleet_gate.hint("onboard", "x", "x")
    assert hints["limits"]["refuse"].due(now=10**9) == []
    assert hints["limits"]["onboard"].due(now=10**9) == ["x"]


def test_presence_claims_in_between_are_merged(hints):
    assert fleet_gate.hint("presence", data={"new": ["a"], "lost": []})
    assert not fleet_gate.hint("presence", data={"new": ["b"], "lost": ["c", "../d"]})
    assert not fleet_gate.hint("presence", data={"lost": ["e"]})
    assert hints["presence"] == {"new": {"b"}, "lost": {"c", "e"}}


def test_deferred_work_runs_by_exact_id(hints, monkeypatch):
    import salt.client
    import salt.runner

    sent, ran = [], []

    class Local:
        def cmd_async(self, tgt, fun, tgt_type):
            sent.append((tgt, fun, tgt_type))

    class Runner:
        def __init__(self, opts):
            pass

        def cmd(self, fun, kwarg, pub_data, print_event):
            ran.append((fun, kwarg))
            assert pub_data == {"user": "Reactor"}  # audited as the reactor's work

    monkeypatch.setattr(salt.client, "get_local_client", lambda mopts: Local())
    monkeypatch.setattr(salt.runner, "RunnerClient", Runner)
    monkeypatch.setattr(clients, "_HELD", threading.local())  # no client of another test
    for _ in range(2):
        fleet_gate.hint("pkgset", "web1")
        fleet_gate.hint("onboard", "x", "x")
        fleet_gate.hint("presence", data={"lost": ["gone"]})
    for limit in hints["limits"].values():
        limit.window = 0
    monkeypatch.setattr(fleet_gate, "PKGSET_FLEET_SECONDS", 0)
    fleet_gate._run_due({}, hints["limits"])
    assert sent == [(["web1"], "fleet.inventory", "list")]
    assert ran == [
        ("fleet.node_started", {"minion": "x", "sender": "x"}),
        ("fleet.presence", {"new": [], "lost": ["gone"]}),
    ]
    assert hints["presence"] == {"new": set(), "lost": set()}


def test_deferred_work_keeps_its_clients(hints, monkeypatch):
    """The hints thread keeps one LocalClient and one RunnerClient (each costs loaders, a
    RunnerClient a MasterMinion with its grains), not one per second of work."""
    import salt.client
    import salt.runner

    made = []

    class Local:
        def __init__(self):
            made.append("local")

        def cmd_async(self, tgt, fun, tgt_type):
            pass

    class Runner:
        def __init__(self, opts):
            made.append("runner")

        def cmd(self, fun, kwarg, pub_data, print_event):
            pass

    monkeypatch.setattr(salt.client, "get_local_client", lambda mopts: Local())
    monkeypatch.setattr(salt.runner, "RunnerClient", Runner)
    monkeypatch.setattr(clients, "_HELD", threading.local())
    monkeypatch.setattr(fleet_gate, "PKGSET_FLEET_SECONDS", 0)

    def work(pkgset, onboard):
        for limit in hints["limits"].values():
            limit.window = 3600
        for _ in range(2):  # the first passes at once, the second is left for the thread
            fleet_gate.hint("pkgset", pkgset)
            fleet_gate.hint("onboard", onboard, onboard)
        for limit in hints["limits"].values():
            limit.window = 0

    for pkgset, onboard in (("web1", "x"), ("web2", "y"), ("web1", "x")):
        work(pkgset, onboard)
        fleet_gate._run_due({}, hints["limits"])
    assert made == ["local", "runner"]
    # in another thread, its own
    work("web2", "y")
    worker = threading.Thread(target=lambda: fleet_gate._run_due({}, hints["limits"]))
    worker.start()
    worker.join()
    assert made == ["local", "runner", "local", "runner"]


def test_an_inventory_hint_is_taken_once_for_the_fleet(hints, tmp_path):
    """Two masters (two ids, one store) hear the same beacon: one takes the inventory, and
    the fleet's claim holds for PKGSET_FLEET_SECONDS whichever master asks."""
    m1 = dict(fleet_gate.__opts__, id="m1")
    m2 = dict(fleet_gate.__opts__, id="m2")
    assert fleet_gate._claim_pkgset(m1, "web1")
    assert not fleet_gate._claim_pkgset(m2, "web1")
    assert not fleet_gate._claim_pkgset(m1, "web1")
    assert fleet_gate._claim_pkgset(m2, "web2")  # another node
    # through the reactor's hint: this master's limiter lets it through, the fleet does not
    assert not fleet_gate.hint("pkgset", "web1")
    assert fleet_gate.hint("pkgset", "x")


def test_ids_without_an_accepted_key_cost_nothing(hints):
    """A batch of made-up ids: no inventory job, no runner, no audit row."""
    for n in range(1000):
        assert not fleet_gate.hint("pkgset", f"made-up-{n}")
        assert not fleet_gate.hint("onboard", f"made-up-{n}", f"made-up-{n}")
        assert not fleet_gate.hint("onboard", f"made-up-{n}", "y")
    for limit in hints["limits"].values():
        assert limit.waiting() == 0 and limit.due(now=10**9) == []


def test_only_events_this_master_signed_pass(hints):
    from saltext_fleet.master import eventsig

    data = {"id": "web1", "digest": "d" * 64, "previous": None}
    tag = "fleet/inventory/changed"
    assert not fleet_gate.signed(tag, data)
    assert not fleet_gate.signed(tag, {**data, "sig": "00" * 32})
    assert not fleet_gate.signed(tag, "junk")
    good = eventsig.sign(fleet_gate.__opts__, tag, data)
    assert fleet_gate.signed(tag, good)
    assert not fleet_gate.signed("fleet/states/ran", good)


def test_keys_with_a_token_are_decided_in_parallel_one_id_in_order(monkeypatch, tmp_path):
    """The recorder decides a batch's keys with a token on its deciders: different ids at
    the same time (a decision mostly waits), the keys of one id one after the other."""
    import concurrent.futures

    both = threading.Barrier(2, timeout=10)  # two ids at once, or this times out
    seen = []

    def fake_decide(opts, held, minion_id, pub, grains, fire=None):
        if pub == "first":
            both.wait()
        seen.append((minion_id, pub, threading.current_thread().name))

    monkeypatch.setattr(fleet_gate, "_decide", fake_decide)
    monkeypatch.setattr(fleet_gate, "_store", lambda opts, held: None)
    tokened = {
        ("web1", "first"): {"t": 1},
        ("web2", "first"): {"t": 2},
        ("web1", "second"): {"t": 1},
    }
    with concurrent.futures.ThreadPoolExecutor(max_workers=4) as pool:
        fleet_gate._decide_all({}, {}, tokened, None, pool)
    # both firsts passed the barrier together; web1's second came after its first
    assert {(m, pub) for m, pub, _t in seen[:2]} == {("web1", "first"), ("web2", "first")}
    web1 = [(pub, thread) for m, pub, thread in seen if m == "web1"]
    assert [pub for pub, _ in web1] == ["first", "second"]
    assert web1[0][1] == web1[1][1]  # one id: one thread, in order
    assert len(seen) == 3


def test_a_store_that_is_away_does_not_end_the_recorder(monkeypatch):
    """The deciders' store cannot be made (the database is away): the batch is logged and
    its keys forgotten by the filter, so their next attempt is handed over again; nothing
    raises into the recorder's loop."""
    import concurrent.futures

    forgotten = []

    class Filter:
        def forget(self, minion_id):
            forgotten.append(minion_id)

    def away(opts, held):
        raise OSError("connection refused")

    monkeypatch.setattr(fleet_gate, "_store", away)
    monkeypatch.setitem(fleet_gate._STATE, "filter", Filter())
    with concurrent.futures.ThreadPoolExecutor(max_workers=2) as pool:
        fleet_gate._decide_all({}, {}, {("web1", "pub"): {}, ("web2", "pub"): {}}, None, pool)
    assert sorted(forgotten) == ["web1", "web2"]
