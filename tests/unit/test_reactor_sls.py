"""The shipped reactor SLS files, rendered by Salt's own renderer pipeline (the ``py``
renderer the files declare, as the reactor renders them), with the ``fleet_gate`` filter
functions recorded. What each file reacts with must be what the runners expect, and an event
that the filters turn down, or that is malformed, must render to nothing."""

import json

import pytest
import salt.config
import salt.loader
import salt.template

from saltext_fleet.reactors import REACTORS
from saltext_fleet.snippet import PACKAGE_DIR

SLS = {name: str(PACKAGE_DIR / "reactors" / name) for files in REACTORS.values() for name in files}


@pytest.fixture(scope="module")
def opts(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("reactor-sls"))
    opts = salt.config.master_config(None)
    opts.update(cachedir=root, pki_dir=root, sock_dir=root, root_dir=root)
    return opts


class Gate:
    """The ``fleet_gate`` functions the SLS files call: record the call, answer ``allow``."""

    def __init__(self, allow=True):
        self.allow = allow
        self.calls = []

    def funcs(self):
        def record(name):
            def call(*args, **kwargs):
                self.calls.append((name, args, kwargs))
                return self.allow

            return call

        return {f"fleet_gate.{n}": record(n) for n in ("wanted", "key_changed", "hint", "signed")}


def render(opts, name, tag, data, gate):
    rend = salt.loader.render(opts, gate.funcs())
    return salt.template.compile_template(
        SLS[name], rend, opts["renderer"], [], [], tag=tag, data=data
    )


def test_every_shipped_sls_is_a_py_file():
    assert set(SLS) == {
        f"{n}.sls"
        for n in (
            "keys",
            "key_change",
            "onboard",
            "presence",
            "drift",
            "vulns",
            "certs",
            "inventory",
        )
    }
    for path in SLS.values():
        with open(path, encoding="utf-8") as handle:
            assert handle.readline().strip() == "#!py", path


def test_keys(opts):
    gate = Gate()
    pend = {"act": "pend", "id": "web1", "pub": "PUB"}
    assert render(opts, "keys.sls", "salt/auth", pend, gate) == {"fleet_key_gate": {"test.nop": []}}
    assert gate.calls == [("wanted", (pend,), {})]
    # accepted keys, junk and a filter that says no: nothing, and the filter not asked for junk
    gate = Gate()
    for data in ({"act": "accept", "id": "web1"}, "junk", None, ["act", "pend"]):
        assert render(opts, "keys.sls", "salt/auth", data, gate) == {}
    assert gate.calls == []
    assert render(opts, "keys.sls", "salt/auth", pend, Gate(allow=False)) == {}


def test_key_change(opts):
    gate = Gate()
    data = {"act": "delete", "id": "web1", "result": True}
    assert render(opts, "key_change.sls", "salt/key", data, gate) == {
        "fleet_key_change": {"test.nop": []}
    }
    assert gate.calls == [("key_changed", (data,), {})]
    assert render(opts, "key_change.sls", "salt/key", "junk", Gate()) == {}


def test_onboard_passes_the_tags_id_and_the_sender_as_data(opts):
    gate = Gate()
    out = render(opts, "onboard.sls", "salt/minion/web1/start", {"id": "mallory"}, gate)
    assert out == {
        "fleet_onboard": {
            "runner.fleet.node_started": [{"args": [{"minion": "web1"}, {"sender": "mallory"}]}]
        }
    }
    assert gate.calls == [("hint", ("onboard", "web1", "mallory"), {})]
    for tag in ("salt/minion/web1/stop", "salt/minion/start", "salt/minion//start/x"):
        assert render(opts, "onboard.sls", tag, {"id": "web1"}, Gate()) == {}
    assert render(opts, "onboard.sls", "salt/minion/web1/start", {"id": "web1"}, Gate(False)) == {}


def test_presence_caps_the_claims(opts):
    gate = Gate()
    many = [f"n{i}" for i in range(12_000)]
    out = render(opts, "presence.sls", "salt/presence/change", {"new": many, "lost": "x"}, gate)
    args = out["fleet_presence"]["runner.fleet.presence"][0]["args"]
    assert args[0]["new"] == many[:10_000] and args[1] == {"lost": []}
    assert [c[0] for c in gate.calls] == ["hint"]
    assert render(opts, "presence.sls", "salt/presence/change", {"new": []}, Gate()) == {}
    assert render(opts, "presence.sls", "salt/presence/change", "junk", Gate()) == {}


@pytest.mark.parametrize(
    "name,tag,fun,node_arg,extra",
    [
        (
            "drift.sls",
            "fleet/inventory/changed",
            "fleet.drift_node",
            "minion",
            {"trigger": "inventory"},
        ),
        ("drift.sls", "fleet/states/ran", "fleet.drift_node", "minion", {"trigger": "states"}),
        ("vulns.sls", "fleet/inventory/changed", "fleet.cve_node", "minion", {}),
        ("certs.sls", "fleet/certs/changed", "fleet.cert_check", "node", {}),
    ],
)
def test_signed_node_reactions(opts, name, tag, fun, node_arg, extra):
    gate = Gate()
    data = {"id": "web1", "sig": "s", "_stamp": "2026-12-06T00:00:00", "n": (1, 2)}
    out = render(opts, name, tag, data, gate)
    ((state_id, body),) = out.items()
    ((low_fun, low),) = body.items()
    assert low_fun == f"runner.{fun}"
    args = low[0]["args"]
    assert args[0] == {node_arg: "web1"}
    assert args[1:-1] == [{k: v} for k, v in extra.items()]
    # the event as JSON carries it (what the runner checks the signature over)
    assert args[-1] == {"event": json.loads(json.dumps({"tag": tag, "data": data}))}
    assert gate.calls == [("signed", (tag, data), {})]
    # unsigned (the filter says no), no id, a non-string id: nothing
    assert render(opts, name, tag, data, Gate(allow=False)) == {}
    for bad in ({"sig": "s"}, {"id": ["web1"]}, {"id": ""}, "junk"):
        assert render(opts, name, tag, bad, Gate()) == {}


def test_inventory_targets_one_id_by_list(opts):
    gate = Gate()
    out = render(opts, "inventory.sls", "fleet/pkgset/changed", {"id": "web*"}, gate)
    assert out == {
        "fleet_inventory_refresh": {
            "local.fleet.inventory": [{"tgt": ["web*"]}, {"tgt_type": "list"}]
        }
    }
    assert gate.calls == [("hint", ("pkgset", "web*"), {})]
    assert render(opts, "inventory.sls", "fleet/pkgset/changed", {"id": 7}, Gate()) == {}
