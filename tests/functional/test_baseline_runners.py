"""The baseline runners through Salt's real runner loader (master opts, no daemon), on SQLite
and on real PostgreSQL. Drift with real daemons is in tests/integration/test_drift.py."""

import os

import pytest
import salt.cache
import salt.loader
import yaml
from salt.exceptions import SaltRunnerError

from saltext_fleet.core.inventory import inventory_digest
from saltext_fleet.store import engine as store_engine
from tests.support.runners import master_opts
from tests.support.store import write

PUBLIC_KEY = """-----BEGIN PUBLIC KEY-----
MIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8AMIIBCgKCAQEAu1SU1LfVLPHCozMxH2Mo
4lgOEePzNm0tRgeLezV6ffAt0gunVTLw7onLRnrq0/IzW7yWR7QkrmBL7jTKEn5u
+qKhbwKfBstIs+bMY2Zkp18gnTxKLxoS2tFczGkPLPgizskuemMghRniWaoLcyeh
kd3qqGElvW/VDL5AaWTg0nLVkjRo9z+40RQzuVaE8AkAFmxZzow3x+VJYKdjykkJ
0iT9wCS0DRTXu269V264Vf/3jvredZiKRkgwlL9xNAwxXFg0x/XFw005UWVRIkdg
cKWTjpBP2dPwVZ4WWC+9aGVd+Gyn1o0CLelf4rEjGoXbAAEgAqeGUxrcIlbjXfbc
mwIDAQAB
-----END PUBLIC KEY-----
"""


def _inventory(pypi):
    packages = {"pypi": pypi}
    facts = {"os": "Debian", "osrelease": "12"}
    digest = inventory_digest(packages, {}, facts)
    return {"packages": packages, "sources": {}, "facts": facts, "digest": digest}


@pytest.fixture
def runners(db_url, tmp_path):
    root = tmp_path / "master"
    opts = master_opts(root, db_url, nodegroups={"builders": "L@web-1,web-2"})
    # Pillar that gives baselines to builders only (targeted by a grain the master cached)
    pillar = root / "pillar"
    pillar.mkdir(parents=True)
    (pillar / "top.sls").write_text("base:\n  'role:builder':\n    - match: grain\n    - fleet\n")
    (pillar / "fleet.sls").write_text(
        yaml.safe_dump(
            {"fleet": {"baselines": {"builders": {"packages": {"pypi": {"rich": "13.0"}}}}}}
        )
    )
    opts["pillar_roots"] = {"base": [str(pillar)]}
    # Accepted keys: Salt's matcher (node groups, compound targets) only sees those.
    accepted = root / "pki" / "minions"
    accepted.mkdir(parents=True)
    for minion in ("web-1", "web-2"):
        (accepted / minion).write_text(PUBLIC_KEY)
    engine = store_engine.get_engine(db_url)
    store_engine.ensure_schema(engine)
    for minion, pypi in (
        ("web-1", {"requests": "2.31.0", "rich": "13.0"}),
        ("web-2", {"requests": "2.30.0"}),
    ):
        ret = {"id": minion, "jid": "20261128120000000000", "fun": "fleet.inventory"}
        ret.update(success=True, **{"return": _inventory(pypi)})
        write(engine, [{"kind": "return", "rid": f"inv-{minion}", "ret": ret}])
    return salt.loader.runner(opts)


def test_pin_show_set_diff_and_delete(runners):
    pinned = runners["fleet.baseline_pin"]("web-1", name="web", facts="osrelease")
    assert pinned["packages"] == {"pypi": 2} and pinned["facts"] == {"osrelease": "12"}
    with pytest.raises(SaltRunnerError, match="exists"):
        runners["fleet.baseline_pin"]("web-1", name="web")
    with pytest.raises(SaltRunnerError, match="no inventory of 'web-9'"):
        runners["fleet.baseline_pin"]("web-9", name="other")
    with pytest.raises(SaltRunnerError, match="not a minion id: minion: .*characters other than"):
        runners["fleet.baseline_pin"]("../../etc/passwd", name="x")

    shown = runners["fleet.baseline_show"]("web")
    assert shown["packages"]["pypi"]["rich"] == {"rule": "exact", "version": "13.0"}
    assert shown["source"] == "pin:web-1"
    as_yaml = yaml.safe_load(runners["fleet.baseline_show"]("web", yaml=True))
    assert as_yaml["packages"]["pypi"] == {"requests": "2.31.0", "rich": "13.0"}

    changed = runners["fleet.baseline_set"](
        "web", package="pypi:requests", rule="min", version="2.30"
    )
    assert changed["packages"]["changed"][0]["to"] == {"rule": "min", "version": "2.30"}
    runners["fleet.baseline_set"]("web", package="pypi:rich", rule="ignore")
    runners["fleet.baseline_set"]("web", fact="xcode", value="15.4")
    with pytest.raises(
        SaltRunnerError, match="bad baseline packages:pypi:x: rule 'sometimes' is not one of"
    ):
        runners["fleet.baseline_set"]("web", package="pypi:x", rule="sometimes")
    with pytest.raises(SaltRunnerError, match="create=True"):
        runners["fleet.baseline_set"]("nope", package="pypi:x", version="1")
    runners["fleet.baseline_set"]("empty", create=True, description="starts empty")

    diff = runners["fleet.baseline_diff"]("web", "empty")
    assert {r["name"] for r in diff["packages"]["removed"]} == {"requests", "rich"}
    listed = {b["name"]: b for b in runners["fleet.baseline_list"]()}
    assert listed["web"]["packages"] == 2 and listed["empty"]["description"] == "starts empty"

    assert runners["fleet.baseline_delete"]("empty") == {"deleted": "empty"}
    with pytest.raises(SaltRunnerError, match="no baseline named 'empty'"):
        runners["fleet.baseline_delete"]("empty")
    with pytest.raises(SaltRunnerError, match="not a baseline name"):
        runners["fleet.baseline_show"]("../x")


def test_import_from_a_yaml_file_validates_everything_first(runners, tmp_path):
    good = tmp_path / "baselines.yaml"
    good.write_text(
        yaml.safe_dump(
            {
                "baselines": {
                    "py": {"packages": {"pypi": {"requests": {"min": "2.31"}}}},
                    "py-strict": {"packages": {"pypi": {"requests": "2.31.0"}}, "extras": False},
                }
            }
        )
    )
    assert runners["fleet.baseline_import"](str(good)) == {"py": "created", "py-strict": "created"}
    assert runners["fleet.baseline_import"](str(good))["py"] == "replaced"

    bad = tmp_path / "bad.yaml"
    bad.write_text(
        yaml.safe_dump(
            {
                "baselines": {
                    "fine": {"packages": {"pypi": {"a": "1"}}},
                    "broken": {"packages": {"pypi": {"a": {"max": "1"}}}},
                }
            }
        )
    )
    with pytest.raises(SaltRunnerError, match="broken: bad baseline packages:pypi:a"):
        runners["fleet.baseline_import"](str(bad))
    assert "fine" not in {b["name"] for b in runners["fleet.baseline_list"]()}
    (tmp_path / "junk.yaml").write_text("packages: [unclosed")
    with pytest.raises(SaltRunnerError, match="is not valid YAML"):
        runners["fleet.baseline_import"](str(tmp_path / "junk.yaml"))
    with pytest.raises(SaltRunnerError, match="cannot read"):
        runners["fleet.baseline_import"](str(tmp_path / "missing.yaml"))
    with pytest.raises(SaltRunnerError, match="absolute path"):
        runners["fleet.baseline_import"]("relative.yaml")


def test_import_from_a_minions_pillar_compiled_with_its_cached_grains(runners):
    """``pillar=<minion>`` compiles that minion's pillar on the master with the grains Salt
    cached for it (the ``grains`` bank in Salt 3008): a top file targeting by grain gives the
    builder its baselines and the other node none."""
    cache = salt.cache.factory(runners.opts)
    cache.store("grains", "web-1", {"id": "web-1", "role": "builder"})
    cache.store("grains", "web-2", {"id": "web-2", "role": "web"})
    assert runners["fleet.baseline_import"](pillar="web-1") == {"builders": "created"}
    shown = runners["fleet.baseline_show"]("builders")
    assert shown["source"] == "pillar:web-1"
    assert shown["packages"]["pypi"]["rich"] == {"rule": "exact", "version": "13.0"}
    with pytest.raises(SaltRunnerError, match="the pillar of web-2 has no fleet:baselines"):
        runners["fleet.baseline_import"](pillar="web-2")


def test_assignments_resolve_by_priority_and_node_group(runners):
    runners["fleet.baseline_pin"]("web-1", name="one")
    runners["fleet.baseline_pin"]("web-2", name="two")
    runners["fleet.baseline_assign"]("one", "web-*")
    runners["fleet.baseline_assign"]("two", "builders", tgt_type="nodegroup", priority=5)
    with pytest.raises(SaltRunnerError, match="no node group 'nope'"):
        runners["fleet.baseline_assign"]("one", "nope", tgt_type="nodegroup")
    with pytest.raises(SaltRunnerError, match="tgt_type 'magic'"):
        runners["fleet.baseline_assign"]("one", "*", tgt_type="magic")
    drift = runners["fleet.drift"]()
    if set(drift) == {"outputter", "data"}:
        drift = drift["data"]
    # the node group assignment has the higher priority: both nodes are scored against "two"
    assert {m: r["baseline"] for m, r in drift.items()} == {"web-1": "two", "web-2": "two"}
    assert drift["web-2"]["score"] == 0
    assert runners["fleet.baseline_unassign"]("two") == {"removed": 1}
    drift = runners["fleet.drift"](baseline=None)
    drift = drift.get("data", drift)
    assert {m: r["baseline"] for m, r in drift.items()} == {"web-1": "one", "web-2": "one"}
    assert drift["web-1"]["score"] == 0
    # an explicit baseline overrides assignments; a bad one is a clear error
    explicit = runners["fleet.drift"]("web-1", baseline="two")
    explicit = explicit.get("data", explicit)
    assert list(explicit) == ["web-1"] and explicit["web-1"]["baseline"] == "two"
    assert explicit["web-1"]["score"] == 4 + 2  # requests 2.30.0 -> 2.31.0 minor, rich extra
    with pytest.raises(SaltRunnerError, match="no baseline named 'ghost'"):
        runners["fleet.drift"](baseline="ghost")
    history = runners["fleet.drift_history"]("web-1")
    assert [p["baseline"] for p in history][:2] == ["two", "one"]
    with pytest.raises(SaltRunnerError, match="days"):
        runners["fleet.drift_history"]("web-1", days="soon")


def test_drift_node_acts_only_on_events_this_master_signed(runners):
    """The drift reactor passes its event: minions can fire fleet/inventory/changed too."""
    from saltext_fleet.master import eventsig

    opts = runners.opts
    runners["fleet.baseline_pin"]("web-1", name="one")
    runners["fleet.baseline_assign"]("one", "web-*")
    before = len(runners["fleet.drift_history"]("web-2"))
    data = {"id": "web-2", "digest": "0" * 64, "previous": None}
    tag = "fleet/inventory/changed"
    # forged: unsigned, signed with another key, a signed event about another node
    assert (
        "not signed"
        in runners["fleet.drift_node"]("web-2", event={"tag": tag, "data": data})["refused"]
    )
    bogus = {**data, "sig": "ab" * 32}
    assert (
        "not this master's"
        in runners["fleet.drift_node"]("web-2", event={"tag": tag, "data": bogus})["refused"]
    )
    about_web1 = eventsig.sign(opts, tag, {**data, "id": "web-1"})
    assert (
        "about 'web-1'"
        in runners["fleet.drift_node"]("web-2", event={"tag": tag, "data": about_web1})["refused"]
    )
    # the same data under another tag does not pass either
    states = eventsig.sign(opts, "fleet/states/ran", data)
    assert "refused" in runners["fleet.drift_node"]("web-2", event={"tag": tag, "data": states})
    assert len(runners["fleet.drift_history"]("web-2")) == before
    # signed by this master (as the returner does), with Salt's _stamp added on the way
    good = {**eventsig.sign(opts, tag, data), "_stamp": "2026-12-05T03:00:00.000000"}
    result = runners["fleet.drift_node"]("web-2", event={"tag": tag, "data": good})
    assert result["web-2"]["baseline"] == "one"
    assert len(runners["fleet.drift_history"]("web-2")) == before + 1
    key = eventsig.key_path(opts)
    assert os.stat(key).st_mode & 0o777 == 0o600 and os.path.getsize(key) == 32
