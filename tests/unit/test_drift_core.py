"""The pure drift engine and baseline documents."""

import random

import pytest

from saltext_fleet import config
from saltext_fleet.core import baseline as core_baseline
from saltext_fleet.core import drift as core_drift
from saltext_fleet.output import fleet_drift as drift_output


def spec(packages, facts=None, **extra):
    return core_baseline.parse({"name": "t", "packages": packages, "facts": facts or {}, **extra})


def compute(base, packages, facts=None, pending=None, weights=None):
    return core_drift.CompiledBaseline(base, weights).compute(
        packages, core_drift.NodeInput(facts or {}, pending)
    )


def compute_keys(base, packages, facts=None, pending=None, details=True, known=None):
    """The fleet path: keys, and a package dictionary holding ``known`` too (other nodes)."""
    compiled = core_drift.CompiledBaseline(base)
    names = {}
    for eco, pkgs in list(packages.items()) + list((known or {}).items()):
        for name, version in pkgs.items():
            names[core_drift.package_key(eco, name, version)] = (eco, name, version)
    keys = core_drift.unpack_keys(core_drift.pack_keys(packages), compiled.scope)
    node = core_drift.NodeInput(facts or {}, pending)
    if not details:
        compiled.prepare_named((key, *info) for key, info in names.items())
        return compiled.summarise_keys(keys, node)
    unexpected, absent = compiled.unexpected_keys(keys)
    return compiled.compute_keys(unexpected, absent, names.get, node)


def summarise_vectorised(base, fleet, known=None):
    """The numpy path over several nodes at once: ``{index: (score, missing, extra, changed)}``."""
    compiled = core_drift.CompiledBaseline(base)
    rows = []
    for packages in list(fleet) + [known or {}]:
        for eco, pkgs in packages.items():
            for name, version in pkgs.items():
                rows.append((core_drift.package_key(eco, name, version), eco, name, version))
    compiled.prepare_named(rows)
    blobs = {str(i): core_drift.pack_keys(packages) for i, packages in enumerate(fleet)}
    return {int(d): v for d, v in compiled.summarise_snapshots(blobs).items()}


def test_aligned_node_scores_zero():
    base = spec({"pypi": {"a": "1.0", "b": "2.0"}}, {"os": "Debian"})
    result = compute(base, {"pypi": {"a": "1.0", "b": "2.0"}, "deb": {"x": "1"}}, {"os": "Debian"})
    assert result["score"] == 0
    assert result["missing"] == result["extra"] == result["changed"] == result["facts"] == []


def test_each_kind_of_finding_and_its_weight():
    base = spec(
        {"pypi": {"maj": "1.0.0", "min": "1.0.0", "pat": "1.0.0", "gone": "1.0", "same": "1.0"}},
        {"osrelease": "12"},
    )
    node = {"pypi": {"maj": "2.0.0", "min": "1.1.0", "pat": "1.0.1", "new": "0.1", "same": "1.0.0"}}
    result = compute(base, node, {"osrelease": "11"}, pending=3)
    kinds = {c["name"]: c["change"] for c in result["changed"]}
    assert kinds == {"maj": "major", "min": "minor", "pat": "patch"}  # "same": 1.0 == 1.0.0
    assert [m["name"] for m in result["missing"]] == ["gone"]
    assert [e["name"] for e in result["extra"]] == ["new"]
    assert result["facts"] == [{"fact": "osrelease", "expected": "12", "actual": "11"}]
    assert result["pending_states"] == 3
    assert result["score"] == 8 + 4 + 1 + 10 + 2 + 20 + 3
    heavier = compute(base, node, {"osrelease": "11"}, 3, core_drift.weights_from({"extra": 100}))
    assert heavier["score"] == result["score"] - 2 + 100


def test_downgrade_direction_and_deb_order():
    base = spec({"deb": {"openssl": "3.0.11-1~deb12u2"}})
    older = compute(base, {"deb": {"openssl": "3.0.9-1"}})["changed"][0]
    assert older["direction"] == "older" and older["change"] == "patch"
    newer = compute(base, {"deb": {"openssl": "1:3.0.11-1"}})["changed"][0]
    assert newer["direction"] == "newer" and newer["change"] == "major"  # an epoch


def test_extras_only_in_the_baselines_ecosystems_and_can_be_switched_off():
    base = spec({"pypi": {"a": "1"}})
    assert compute(base, {"pypi": {"a": "1"}, "deb": {"zsh": "5"}})["extra"] == []
    base = spec({"pypi": {"a": "1"}}, ecosystems=["deb"])
    assert [
        e["name"] for e in compute(base, {"pypi": {"a": "1"}, "deb": {"zsh": "5"}})["extra"]
    ] == ["zsh"]
    base = spec({"pypi": {"a": "1"}}, extras=False)
    assert compute(base, {"pypi": {"a": "1", "b": "2"}})["score"] == 0


def test_both_paths_agree_on_random_fleets():
    rng = random.Random(7)
    names = [f"p{i}" for i in range(60)]
    versions = ["1.0", "1.0.1", "1.2", "2.0", "1:1.0", "1.0~rc1"]
    rules = ["exact", "exact", "exact", "min", "any", "ignore"]
    for _ in range(200):
        packages = {}
        for name in rng.sample(names, 30):
            rule = rng.choice(rules)
            if rule in ("exact", "min"):
                packages[name] = {rule: rng.choice(versions)}
            else:
                packages[name] = rule
        base = spec({"deb": packages}, extras=rng.random() < 0.8)
        node = {"deb": {n: rng.choice(versions) for n in rng.sample(names, 35)}}
        one, many = compute(base, node), compute_keys(base, node)
        assert one == many
        other = {"deb": {n: rng.choice(versions) for n in rng.sample(names, 35)}}
        summary = compute_keys(base, node, facts={"os": "x"}, pending=2, details=False, known=other)
        assert summary["extra"] is summary["missing"] is summary["changed"] is None
        one = compute(base, node, facts={"os": "x"}, pending=2)
        for key in ("score", "counts", "package_score", "facts", "pending_states"):
            assert summary[key] == one[key], key
        fleet = [node, other, {}]
        vectorised = summarise_vectorised(base, fleet)
        for i, packages in enumerate(fleet):
            want = compute(base, packages)
            counts = want["counts"]
            assert vectorised[i] == (
                want["package_score"],
                counts["missing"],
                counts["extra"],
                counts["changed"],
            ), i


def test_vectorised_path_in_chunks_and_as_a_stream():
    """Chunk boundaries, empty snapshots anywhere, and (digest, blob) pairs as input."""
    rng = random.Random(11)
    names = [f"p{i}" for i in range(40)]
    base = spec({"deb": {n: {"exact": "1.0"} for n in names[:20]}, "pypi": {"q": "any"}})
    fleet = []
    for i in range(9):
        if i in (0, 4, 8):
            fleet.append({})  # no packages at all: first, middle and last
            continue
        fleet.append(
            {
                "deb": {n: rng.choice(["1.0", "1.1", "2.0"]) for n in rng.sample(names, 25)},
                "other": {"ignored": "1"},  # outside the baseline's scope
            }
        )
    compiled = core_drift.CompiledBaseline(base)
    rows = [
        (core_drift.package_key(eco, n, v), eco, n, v)
        for packages in fleet
        for eco, pkgs in packages.items()
        for n, v in pkgs.items()
    ]
    compiled.prepare_named(rows)
    blobs = [(str(i), core_drift.pack_keys(p)) for i, p in enumerate(fleet)]
    whole = compiled.summarise_snapshots(dict(blobs))
    for chunk in (1, 2, 4, 100):
        assert compiled.summarise_snapshots(iter(blobs), chunk=chunk) == whole, chunk
    for i, packages in enumerate(fleet):
        want = compute(base, packages)
        assert whole[str(i)] == (
            want["package_score"],
            want["counts"]["missing"],
            want["counts"]["extra"],
            want["counts"]["changed"],
        ), i
    missing_weight = core_drift.DEFAULT_WEIGHTS["missing"]
    assert whole["0"] == (21 * missing_weight, 21, 0, 0)  # an empty node misses everything


@pytest.mark.parametrize("size", [0, 1, 2, 1000, 70_000])
def test_key_table_membership(size, monkeypatch):
    np = core_drift._numpy()
    rng = random.Random(size)
    members = {rng.getrandbits(64) - 2**63 for _ in range(size)}
    if size >= 1000:
        # keys that share their low bits, so that some must go to the overflow
        members |= {(rng.getrandbits(40) << 22) - 2**61 for _ in range(50)}
    monkeypatch.setattr(core_drift.KeyTable, "MAX_BITS", 16)
    table = core_drift.KeyTable(np, members)
    assert len(table) == len(members)
    if size >= 1000:
        assert len(table.overflow) > 0
    probes = list(members) + [rng.getrandbits(64) - 2**63 for _ in range(5000)]
    probes += [min(members, default=0), 0, -1, 2**63 - 1, -(2**63)]
    found = table.contains(np.array(probes, dtype=np.int64))
    assert [bool(x) for x in found] == [p in members for p in probes]


def test_facts_shared_by_key_and_memos_stay_bounded(monkeypatch):
    base = spec({"pypi": {"a": "1.0"}}, {"os": "Debian", "osrelease": "12"})
    compiled = core_drift.CompiledBaseline(base)
    debian = core_drift.NodeInput({"os": "Debian", "osrelease": "12"}, facts_key="d12")
    ubuntu = core_drift.NodeInput({"os": "Ubuntu", "osrelease": "22.04"}, facts_key="u22")
    assert compiled.node_facts(debian) == []
    first = compiled.node_facts(ubuntu)
    assert [m["fact"] for m in first] == ["os", "osrelease"]
    assert compiled.node_facts(ubuntu) is first  # compared once per key
    score, facts = compiled.rescore(1.0, ubuntu)
    assert (score, facts) == (1.0 + 2 * compiled.weights["fact"], first)
    # without a key: compared every time, same answer
    assert compiled.node_facts(core_drift.NodeInput(ubuntu.facts)) == first
    monkeypatch.setattr(core_drift.CompiledBaseline, "FACT_MEMO_MAX", 3)
    monkeypatch.setattr(core_drift.CompiledBaseline, "CLASSIFY_MEMO_MAX", 5)
    for i in range(10):
        node = core_drift.NodeInput({"os": f"os{i}"}, facts_key=f"k{i}")
        assert compiled.node_facts(node)[0]["actual"] == f"os{i}"
        assert len(compiled._fact_memo) <= 3
        result = compiled.compute({"pypi": {"a": f"2.{i}"}}, node)
        assert result["changed"][0]["actual"] == f"2.{i}"
        assert len(compiled._by_version) <= 5


def test_pack_and_unpack_keys():
    packages = {"pypi": {"a": "1", "b": "2"}, "deb": {"c": "3"}, "empty": {}}
    keys = core_drift.unpack_keys(core_drift.pack_keys(packages))
    assert sorted(keys) == ["deb", "empty", "pypi"]
    assert sorted(keys["pypi"]) == sorted(
        [core_drift.package_key("pypi", "a", "1"), core_drift.package_key("pypi", "b", "2")]
    )
    assert list(core_drift.unpack_keys(core_drift.pack_keys(packages), ["deb"])) == ["deb"]
    assert core_drift.unpack_keys(b"") == {}


def test_the_key_memo_packs_what_pack_keys_packs_and_names_each_new_key_once():
    memo = core_drift.KeyMemo()
    odd = {
        "pypi": {"a": "1", "b": "2", "gone": None, "number": 3, "listed": [1, 2]},
        "deb": {"c": "3"},
        "empty": {},
        "not-a-mapping": ["x"],
        7: {"z": "1"},  # a key that is not text: not an ecosystem
    }
    # what a stored inventory means: None versions dropped, other versions as text
    meant = {
        "pypi": {"a": "1", "b": "2", "number": "3", "listed": "[1, 2]"},
        "deb": {"c": "3"},
        "empty": {},
    }
    added: set[int] = set()
    names: dict[int, tuple] = {}
    assert memo.snapshot_blob(odd, added, names) == core_drift.pack_keys(meant)
    assert sorted(names.values()) == sorted(
        (eco, name, version) for eco, pkgs in meant.items() for name, version in pkgs.items()
    )
    assert all(core_drift.package_key(*names[key]) == key for key in names)
    # the same again (memo hits): the same blob, nothing named twice
    again: dict[int, tuple] = {}
    assert memo.snapshot_blob(odd, added, again) == core_drift.pack_keys(meant)
    assert again == {}
    # a version that moved: only its key is new
    moved = {"pypi": {"a": "1", "b": "2.1"}}
    assert memo.snapshot_blob(moved, added, again) == core_drift.pack_keys(moved)
    assert list(again.values()) == [("pypi", "b", "2.1")]


def test_the_key_memo_is_bounded(monkeypatch):
    monkeypatch.setattr(core_drift.KeyMemo, "MAX", 10)
    memo = core_drift.KeyMemo()
    for i in range(50):
        packages = {"pypi": {f"p{j}": f"{i}.{j}" for j in range(5)}}
        assert memo.snapshot_blob(packages, set(), {}) == core_drift.pack_keys(packages)
        assert memo.size <= 15


def test_the_key_memo_is_shared_by_threads_while_it_starts_again():
    """The reactor's threads share the process's memo: however their calls interleave with
    the memo starting again (a tiny limit here), each gets pack_keys' blob and its names."""
    import threading

    memo = core_drift.KeyMemo(limit=50)
    errors = []

    def work(n):
        try:
            for i in range(200):
                packages = {"pypi": {f"p{j}": f"{(i + n) % 7}.{j}" for j in range(30)}}
                names: dict[int, tuple] = {}
                blob = memo.snapshot_blob(packages, set(), names)
                assert blob == core_drift.pack_keys(packages)
                assert len(names) == 30
        except Exception as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []


def test_remediation_plan():
    base = spec({"pypi": {"a": "1.0", "b": {"min": "2.0"}, "c": "any", "d": "1"}})
    result = compute(base, {"pypi": {"a": "2.0", "b": "1.0", "d": "1", "x": "9"}})
    assert core_drift.remediation_plan(result) == {
        "pypi": {"install": {"a": "==1.0", "b": ">=2.0", "c": ""}, "remove": ["x"]}
    }
    assert core_drift.remediation_plan(result, remove_extras=False)["pypi"]["remove"] == []


@pytest.mark.parametrize(
    "fun,args,expected",
    [
        ("state.apply", ["test=True"], "test"),
        ("state.highstate", [{"test": True}], "test"),
        ("state.sls", ["web", "test=true"], "test"),
        ("state.apply", [], "real"),
        ("state.apply", ["test=False"], "real"),
        ("cmd.run", ["test=True"], None),
        (None, None, None),
    ],
)
def test_state_run_kind(fun, args, expected):
    assert core_drift.state_run(fun, args) == expected


def test_pending_states_counts_what_would_change():
    ret = {
        "a": {"result": None, "changes": {}},
        "b": {"result": True, "changes": {}},
        "c": {"result": True, "changes": {"x": 1}},
        "d": {"result": False, "changes": {}},
    }
    assert core_drift.pending_states(ret) == 3
    assert core_drift.pending_states(ret, test=False) == 1  # a real run: only the failure
    assert core_drift.pending_states(["Rendering SLS 'x' failed"]) == 1
    assert core_drift.pending_states("no states") is None
    assert core_drift.pending_states({"a": "not a state"}) is None


@pytest.mark.parametrize(
    "doc,field",
    [
        ({"name": "../etc"}, "name"),
        ({"name": "x" * 200}, "name"),
        ({"name": "ok", "packages": ["a"]}, "packages"),
        ({"name": "ok", "packages": {"PyPI!": {}}}, "packages:PyPI!"),
        ({"name": "ok", "packages": {"pypi": {"a": {"max": "1"}}}}, "packages:pypi:a"),
        ({"name": "ok", "packages": {"pypi": {"a": None}}}, "packages:pypi:a"),
        ({"name": "ok", "packages": {"pypi": {"a": {"rule": "exact"}}}}, "packages:pypi:a"),
        ({"name": "ok", "facts": {"os": {"nested": 1}}}, "facts:os"),
        ({"name": "ok", "extras": "yes"}, "extras"),
        ({"name": "ok", "colour": "red"}, "colour"),
    ],
)
def test_bad_baselines_name_the_field(doc, field):
    with pytest.raises(core_baseline.BaselineError) as info:
        core_baseline.parse(doc)
    assert info.value.field == field


def test_baseline_yaml_round_trip_edit_and_diff():
    base = core_baseline.parse(
        {
            "name": "b",
            "packages": {"pypi": {"Requests": "2.31.0", "urllib3": {"min": 2}, "x": "ignore"}},
            "facts": {"osrelease": 12},
        }
    )
    assert base["packages"]["pypi"]["requests"] == {"rule": "exact", "version": "2.31.0"}
    assert base["facts"] == {"osrelease": "12"}
    assert core_baseline.parse(core_baseline.to_yaml_doc(base)) == base
    edited = core_baseline.edit(base, package="pypi:rich", version="13.0")
    edited = core_baseline.edit(edited, package="pypi:x", remove=True)
    diff = core_baseline.diff(base, edited)
    assert [a["name"] for a in diff["packages"]["added"]] == ["rich"]
    assert [r["name"] for r in diff["packages"]["removed"]] == ["x"]
    assert core_baseline.revision(base) != core_baseline.revision(edited)
    with pytest.raises(core_baseline.BaselineError, match="not in baseline b"):
        core_baseline.edit(base, package="pypi:nope", remove=True)
    with pytest.raises(core_baseline.BaselineError, match="rule"):
        core_baseline.edit(base, package="pypi:y")


def test_pin_from_inventory():
    inv = {
        "packages": {"pypi": {"a": "1"}, "deb": {"b": "2"}},
        "facts": {"os": "Debian", "osrelease": "12", "pip_python": {"/x": "3.11"}},
    }
    pinned = core_baseline.from_inventory("p", inv)
    assert pinned["facts"] == {"os": "Debian", "osrelease": "12"}
    assert pinned["ecosystems"] == ["deb", "pypi"]
    only = core_baseline.from_inventory("p", inv, facts=[], ecosystems=["pypi"])
    assert list(only["packages"]) == ["pypi"] and only["facts"] == {}
    with pytest.raises(core_baseline.BaselineError, match="facts:xcode"):
        core_baseline.from_inventory("p", inv, facts=["xcode"])


def test_drift_options_are_validated():
    cfg = config.load({"fleet": {"drift": {"weights": {"extra": 5}, "history_days": 90}}})
    assert cfg.drift.weight_map()["extra"] == 5.0 and cfg.drift.history_days == 90
    for bad, option in [
        ({"weights": {"bogus": 1}}, "fleet:drift:weights"),
        ({"weights": {"extra": -1}}, "fleet:drift:weights"),
        ({"history_days": "long"}, "fleet:drift:history_days"),
        ({"alert_score": "high"}, "fleet:drift:alert_score"),
    ]:
        with pytest.raises(config.FleetConfigError) as info:
            config.load({"fleet": {"drift": bad}})
        assert info.value.option == option


def test_the_table_outputter():
    base = spec({"pypi": {"a": "1.0.0"}})
    data = {
        "ok-node": dict(compute(base, {"pypi": {"a": "1.0.0"}}), computed_at="now"),
        "bad-node": dict(compute(base, {"pypi": {"a": "2.0.0", "z": "1"}}), computed_at="now"),
    }
    text = drift_output.render(data)
    lines = text.splitlines()
    assert lines[0].split() == [
        "NODE", "BASELINE", "SCORE", "MISS", "EXTRA", "CHANGED", "FACTS", "PENDING", "FINDINGS"
    ]  # fmt: skip
    assert lines[1].startswith("bad-node") and "~pypi/a 1.0.0->2.0.0 (major)" in lines[1]
    assert "+pypi/z 1" in lines[1]
    assert lines[2].startswith("ok-node") and " 0.0 " in lines[2]
    assert lines[-1] == "2 nodes, 1 aligned, 1 drifting"
    assert "No node has a baseline" in drift_output.render({})
    progress = {"suffix": "progress", "event": {"message": "computing drift of 2 nodes"}}
    assert drift_output.render(progress) == "... computing drift of 2 nodes"
    assert drift_output.render("fleet.drift: no baseline named 'x'") == (
        "fleet.drift: no baseline named 'x'"
    )
