"""The drift engine: how far a node is from its baseline, as lists and one score. Pure logic.

For a node (its inventory's packages and facts, and the number of changes its latest
``state.apply test=True`` would make) and its baseline (see :mod:`saltext_fleet.core.baseline`),
:meth:`CompiledBaseline.compute` returns::

    {
        "baseline": "macos-build",
        "score": 23.0,                      # 0 means aligned
        "missing": [{"ecosystem", "name", "expected"}],
        "extra":   [{"ecosystem", "name", "version"}],
        "changed": [{"ecosystem", "name", "expected", "actual",
                     "change": "major" | "minor" | "patch" | "other" | "below-minimum",
                     "direction": "newer" | "older" | "same"}],
        "facts":   [{"fact", "expected", "actual"}],
        "pending_states": 3,                # None when the node has no test run on record
    }

Package rules: ``exact`` (a different installed version is *changed*, an absent package
*missing*), ``min`` (installed below the minimum is *changed* with ``below-minimum``),
``any`` (only absence counts), ``ignore`` (never counted). Installed packages the baseline does
not name are *extra*, in the baseline's ecosystems only, unless the baseline says
``extras: false``. Versions are compared in the ecosystem's own order
(:mod:`saltext_fleet.core.versions`): ``1.0`` and ``1.0.0`` are the same PyPI version.
Facts are compared as strings.

Score
-----
Each finding adds its weight (``fleet:drift:weights``, defaults in :data:`DEFAULT_WEIGHTS`)::

    score = missing * n_missing + extra * n_extra
          + major/minor/patch/other/below_min per changed package (by its kind of change)
          + fact * n_fact_mismatches + pending_state * pending_states

Two ways in, one answer
-----------------------
:meth:`CompiledBaseline.compute` takes a node's packages as the inventory stores them
(``{ecosystem: {name: version}}``). For a whole fleet, :meth:`CompiledBaseline.compute_keys`
takes the node's packages as a set of 64-bit keys (:func:`package_key`, stored per inventory
snapshot by :func:`pack_keys`) and resolves only the keys that are not an exact match: set
arithmetic in C for the 95 % of packages that match. Both build their answer with the same
classification code, and the tests hold them equal.
"""

from __future__ import annotations

import dataclasses
import hashlib
import operator
import struct
from array import array
from collections.abc import Callable, Iterable, Mapping
from itertools import compress, repeat
from typing import Any

from saltext_fleet.core import versions

#: Default weight of each kind of finding.
DEFAULT_WEIGHTS = {
    "missing": 10.0,
    "extra": 2.0,
    "major": 8.0,
    "minor": 4.0,
    "patch": 1.0,
    "other": 4.0,
    "below_min": 8.0,
    "fact": 20.0,
    "pending_state": 1.0,
}

_EXTRA, _CHANGED, _SATISFIED = 0, 1, 2


def weights_from(raw: Mapping[str, Any] | None) -> dict[str, float]:
    """Defaults overlaid with ``raw``; raises ValueError naming an unknown or bad weight."""
    out = dict(DEFAULT_WEIGHTS)
    for key, value in (raw or {}).items():
        if key not in DEFAULT_WEIGHTS:
            raise ValueError(f"unknown weight {key!r} (known: {', '.join(DEFAULT_WEIGHTS)})")
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
            raise ValueError(f"weight {key}: {value!r} is not a number >= 0")
        out[key] = float(value)
    return out


# -- package keys ---------------------------------------------------------------------------


def package_key(ecosystem: str, name: str, version: str) -> int:
    """A signed 64-bit key of one installed package version (BLAKE2b of the three, NUL-joined)."""
    data = f"{ecosystem}\0{name}\0{version}".encode("utf-8", "surrogatepass")
    return int.from_bytes(hashlib.blake2b(data, digest_size=8).digest(), "little", signed=True)


class KeyMemo:
    """:func:`package_key` remembered, per ecosystem: ``{(name, version): key}`` and back.

    A fleet's inventories share most of their packages, so indexing 10,000 snapshots of 1,000
    packages hashes each distinct (ecosystem, name, version) once; the other 99 % are one
    dictionary look-up each, done in C (``map`` over the inventory's ``items()``, whose
    ``(name, version)`` tuples are the memo's keys). The key is a pure function of the three
    strings, so the memo is never wrong, only bounded: it starts again empty past ``limit``
    versions (:attr:`MAX` by default).
    """

    MAX = 2_000_000

    def __init__(self, limit: int | None = None) -> None:
        self.limit = self.MAX if limit is None else limit
        #: ecosystem -> ({(name, version): key}, {key: (name, version)}); replaced, never
        #: emptied in place, so that threads sharing the memo (the reactor's) see either
        #: the old pair of dictionaries or the new one
        self._ecos: dict[str, tuple[dict, dict]] = {}
        self.size = 0

    def snapshot_blob(
        self,
        packages: Mapping[str, Any],
        added: set[int],
        names: dict[int, tuple[str, str, str]],
    ) -> bytes:
        """:func:`pack_keys` of a stored inventory's ``packages`` (``{ecosystem: {name:
        version}}``; sections that are not a mapping, and versions that are None, are left
        out; other versions are taken as text). Every key not in ``added`` goes into
        ``names`` (key -> (ecosystem, name, version)) and ``added``."""
        if self.size > self.limit:
            self._ecos = {}
            self.size = 0
        ecos = self._ecos
        np = _numpy()
        out = bytearray()
        for eco in sorted(e for e in packages if isinstance(e, str)):
            pkgs = packages[eco]
            if not isinstance(pkgs, Mapping):
                continue
            pair = ecos.get(eco)
            if pair is None:
                pair = ecos.setdefault(eco, ({}, {}))
            memo, items = pair
            try:
                keys = list(map(memo.get, pkgs.items()))
            except TypeError:  # an unhashable version (stored data can be anything)
                keys = [None] * len(pkgs)
            if None in keys:
                keys = self._fill(eco, pkgs, keys, memo, items)
            found = set(keys)
            for key in found.difference(added):
                name, version = items[key]
                names[key] = (eco, name, version)
            added.update(found)
            array_ = np.array(keys, dtype="<i8")
            array_.sort()
            out += _section_head(eco, len(array_)) + array_.tobytes()
        return bytes(out)

    def _fill(self, eco: str, pkgs: Mapping, keys: list, memo: dict, items: dict) -> list:
        """``keys`` with the misses hashed and remembered (None versions left out)."""
        try:
            misses = list(compress(pkgs.items(), map(operator.is_, keys, repeat(None))))
        except TypeError:  # pragma: no cover - map() cannot raise here; keep the slow path
            misses = list(pkgs.items())
        odd = False
        for name, version in misses:
            if version is None:
                odd = True
                continue
            if type(version) is not str or type(name) is not str:
                odd = True
                continue
            key = package_key(eco, name, version)
            items[key] = (name, version)  # first: a thread that finds the key finds its name
            memo[(name, version)] = key
            self.size += 1
        if not odd:
            return list(map(memo.get, pkgs.items()))
        out = []  # versions that are not text (or unhashable), or None: the slow way
        for name, version in pkgs.items():
            if version is None:
                continue
            if type(version) is str and type(name) is str:
                out.append(memo[(name, version)])
                continue
            name, version = str(name), str(version)
            key = package_key(eco, name, version)
            items[key] = (name, version)
            out.append(key)
        return out


#: The process's memo for indexing a few snapshots at a time (the reactor's, one new inventory
#: after another): pure, so shared by every database, and small (a fleet's common packages,
#: some 30 MB), so that a long-lived process neither keeps much nor makes its garbage
#: collections slow. Indexing many snapshots at once uses a memo of its own, let go after.
KEY_MEMO = KeyMemo(limit=100_000)


def pack_keys(packages: Mapping[str, Mapping[str, str]]) -> bytes:
    """An inventory's packages as keys, one section per ecosystem.

    Layout (little endian): per ecosystem, sorted by name: ``u8`` length and the ecosystem's
    UTF-8 name, ``u32`` count, then ``count`` signed 64-bit keys.
    """
    return pack_package_keys(
        {
            eco: {n: package_key(eco, n, str(v)) for n, v in (pkgs or {}).items()}
            for eco, pkgs in packages.items()
        }
    )


def pack_package_keys(keyed: Mapping[str, Mapping[str, int]]) -> bytes:
    """:func:`pack_keys` from keys already computed: ``{ecosystem: {name: key}}``."""
    out = bytearray()
    for eco in sorted(keyed):
        keys = array("q", sorted(keyed[eco].values()))
        if keys.itemsize != 8:  # pragma: no cover - every CPython platform has 8-byte q
            raise RuntimeError("array('q') is not 64-bit here")
        out += _section_head(eco, len(keys))
        out += keys.tobytes() if _LITTLE else _swapped(keys)
    return bytes(out)


def _section_head(eco: str, count: int) -> bytes:
    """The head of one ecosystem's section of a :func:`pack_keys` blob."""
    raw = eco.encode()[:255]
    return struct.pack("<B", len(raw)) + raw + struct.pack("<I", count)


def key_sections(blob: bytes):
    """``(ecosystem, offset, count)`` of each section of a :func:`pack_keys` blob."""
    view = memoryview(blob)
    pos, end = 0, len(view)
    while pos < end:
        size = view[pos]
        eco = bytes(view[pos + 1 : pos + 1 + size]).decode()
        pos += 1 + size
        (count,) = struct.unpack_from("<I", view, pos)
        pos += 4
        yield eco, pos, count
        pos += 8 * count


def unpack_keys(blob: bytes, ecosystems: Iterable[str] | None = None) -> dict[str, array]:
    """``{ecosystem: array of keys}`` from :func:`pack_keys`, only ``ecosystems`` if given."""
    wanted = None if ecosystems is None else set(ecosystems)
    out: dict[str, array] = {}
    for eco, pos, count in key_sections(blob):
        if wanted is None or eco in wanted:
            keys = array("q")
            keys.frombytes(blob[pos : pos + 8 * count])
            if not _LITTLE:
                keys.byteswap()
            out[eco] = keys
    return out


_LITTLE = array("q", [1]).tobytes()[0] == 1


def _swapped(keys: array) -> bytes:  # pragma: no cover - big-endian hosts only
    copy = array("q", keys)
    copy.byteswap()
    return copy.tobytes()


# -- the engine --------------------------------------------------------------------------------


@dataclasses.dataclass
class NodeInput:
    """What one node brings: facts and its pending state count (None: no test run known)."""

    facts: Mapping[str, Any]
    pending_states: int | None = None
    #: a text that is the same for equal facts (their stored JSON, say): nodes with the same
    #: key share one comparison of their facts (see :meth:`CompiledBaseline.node_facts`)
    facts_key: str | None = None


class CompiledBaseline:
    """A baseline prepared for computing drift of many nodes against it."""

    def __init__(self, baseline: Mapping[str, Any], weights: Mapping[str, float] | None = None):
        self.baseline = baseline
        self.name = baseline["name"]
        self.weights = dict(DEFAULT_WEIGHTS, **(weights or {}))
        self.scope = frozenset(baseline.get("ecosystems") or ()) | frozenset(baseline["packages"])
        self.extras = bool(baseline.get("extras", True))
        self.rules: dict[tuple[str, str], dict] = {}
        #: key of each exact (ecosystem, name, version) -> (ecosystem, name)
        self.exact: dict[int, tuple[str, str]] = {}
        self.loose: list[tuple[str, str]] = []
        for eco, rules in baseline["packages"].items():
            for name, rule in rules.items():
                self.rules[(eco, name)] = rule
                if rule["rule"] == "exact":
                    key = package_key(eco, name, rule["version"])
                    self.exact[key] = (eco, name)
                elif rule["rule"] in ("min", "any"):
                    self.loose.append((eco, name))
        self.exact_keys = frozenset(self.exact)
        #: per ecosystem, the exact rules as (name, version) pairs
        self.exact_items: dict[str, frozenset] = {
            eco: frozenset(
                (name, rule["version"]) for name, rule in rules.items() if rule["rule"] == "exact"
            )
            for eco, rules in baseline["packages"].items()
        }
        self.facts = dict(baseline.get("facts") or {})
        #: classification of package keys (see prepare_named and compute_keys)
        self._cache: dict[int, tuple | None] = {}
        #: classification of (ecosystem, name, version), for compute
        self._by_version: dict[tuple[str, str, str], tuple | None] = {}
        #: keys of known versions of the packages the baseline names (see prepare_named)
        self.named_keys: set[int] = set()
        self.named_ready = False
        self._arrays = None
        self._fact_memo: dict[str, list] = {}
        self._missing: dict[tuple[str, str], dict[str, str]] = {}
        self._exact_table = None

    # A finding for an installed package that is not an exact match of its rule.
    def classify(self, eco: str, name: str, version: str) -> tuple | None:
        rule = self.rules.get((eco, name))
        if rule is None:
            if not self.extras or eco not in self.scope:
                return None
            entry = {"ecosystem": eco, "name": name, "version": version}
            return (_EXTRA, entry, self.weights["extra"])
        kind = rule["rule"]
        if kind == "ignore":
            return None
        if kind == "any":
            return (_SATISFIED, (eco, name))
        expected = rule["version"]
        if kind == "min":
            if versions.satisfies_min(eco, version, expected):
                return (_SATISFIED, (eco, name))
            entry = {
                "ecosystem": eco,
                "name": name,
                "expected": f">={expected}",
                "actual": version,
                "change": "below-minimum",
                "direction": "older",
            }
            return (_CHANGED, (eco, name), entry, self.weights["below_min"])
        change = versions.change_kind(eco, expected, version)
        if change == "same":  # "1.0" and "1.0.0" in PyPI's order
            return (_SATISFIED, (eco, name))
        entry = {
            "ecosystem": eco,
            "name": name,
            "expected": expected,
            "actual": version,
            "change": change,
            "direction": versions.direction(eco, expected, version),
        }
        return (_CHANGED, (eco, name), entry, self.weights[change])

    #: most (ecosystem, name, version) classifications :meth:`compute` remembers (a compiled
    #: baseline lives as long as its process - the reactor's - when nothing changes)
    CLASSIFY_MEMO_MAX = 100_000

    def classified_keys(self):
        """The package keys already classified (a set-like view: their names need not be
        read)."""
        return self._cache.keys()

    def _classify_cached(self, cache_key: Any, eco: str, name: str, version: str):
        try:
            return self._by_version[cache_key]
        except KeyError:
            if len(self._by_version) >= self.CLASSIFY_MEMO_MAX:
                self._by_version.clear()
            found = self._by_version[cache_key] = self.classify(eco, name, version)
            return found

    def compute(self, packages: Mapping[str, Mapping[str, str]], node: NodeInput) -> dict[str, Any]:
        """Drift of a node from its packages as the inventory stores them."""
        findings = []
        absent = []
        for eco in self.scope:
            pkgs = packages.get(eco) or {}
            exact = self.exact_items.get(eco, frozenset())
            items = pkgs.items()
            # set arithmetic in C: only what is not an exact match is looked at in Python
            for name, version in items - exact:
                version = str(version)
                findings.append(self._classify_cached((eco, name, version), eco, name, version))
            for name, _version in exact - items:
                absent.append((eco, name))
        return self._assemble(findings, absent, node, None)

    def unexpected_keys(self, keys_by_eco: Mapping[str, Iterable[int]]) -> tuple[set, set]:
        """``(installed keys that are not an exact match, exact keys not installed)``."""
        installed: set[int] = set()
        for eco in self.scope:
            keys = keys_by_eco.get(eco)
            if keys is not None:
                installed.update(keys)
        return installed - self.exact_keys, self.exact_keys - installed

    def unexpected_lists(
        self, blobs: Mapping[str, bytes] | Iterable[tuple[str, bytes]], chunk: int = 512
    ):
        """:meth:`unexpected_keys` of many snapshots at once, vectorised (numpy): yields
        ``(digest, unexpected keys, absent exact keys)``, both lists, per ``(digest, keys
        blob)`` of ``blobs`` (a mapping or a stream of pairs), ``chunk`` snapshots at a time."""
        for batch in _batches(blobs, chunk):
            yield from self._unexpected_chunk(batch)

    def _unexpected_chunk(self, batch: list[tuple[str, bytes]]):
        np = _numpy()
        if self._exact_table is None:
            self._exact_table = KeyTable(np, self.exact_keys)
        table = self._exact_table
        exact_sorted = table.keys
        count = len(batch)
        all_keys, sizes_ = _chunk_keys(batch, self.scope, np)
        in_exact = table.contains(all_keys)
        owner = np.repeat(np.arange(count), sizes_)
        hit_owner = owner[in_exact]
        present = np.zeros((count, len(exact_sorted)), dtype=bool)
        present[hit_owner, np.searchsorted(exact_sorted, all_keys[in_exact])] = True
        rest = all_keys[~in_exact]
        rest_sizes = sizes_ - np.bincount(hit_owner, minlength=count)
        ends = np.cumsum(rest_sizes)
        starts = ends - rest_sizes
        for i, (digest, _blob) in enumerate(batch):
            yield (
                digest,
                rest[starts[i] : ends[i]].tolist(),
                exact_sorted[~present[i]].tolist(),
            )

    def prepare_named(self, rows: Iterable[tuple[int, str, str, str]]) -> None:
        """Classify every known key ``(key, eco, name, version)`` of a package the baseline
        names: :meth:`summarise_keys` needs them all (call again when keys were added)."""
        self.named_keys = set()
        for key, eco, name, version in rows:
            if (eco, name) in self.rules and key not in self.exact:
                self._cache[key] = self.classify(eco, name, version)
                self.named_keys.add(key)
        self.named_ready = True
        self._arrays = None  # rebuilt by summarise_snapshots when needed

    def compute_keys(
        self,
        unexpected: set[int],
        absent: Iterable[int],
        resolve: Callable[[int], tuple[str, str, str] | None] | None,
        node: NodeInput,
    ) -> dict[str, Any]:
        """Drift from :meth:`unexpected_keys`; ``resolve(key)`` gives (eco, name, version)."""
        cache = self._cache
        findings = list(map(cache.get, unexpected, repeat(_UNKNOWN)))
        if _UNKNOWN in findings:
            findings = []
            for key in unexpected:
                try:
                    findings.append(cache[key])
                except KeyError as exc:
                    info = resolve(key) if resolve is not None else None
                    if info is None:
                        raise KeyError(
                            f"package key {key} is not in the package dictionary"
                        ) from exc
                    found = cache[key] = self.classify(*info)
                    findings.append(found)
        return self._assemble(findings, list(map(self.exact.__getitem__, absent)), node, None)

    def _named_arrays(self):
        """The exact keys as a hash table, and the named keys with what each one means, as
        numpy arrays (built once per :meth:`prepare_named`)."""
        if self._arrays is None:
            np = _numpy()
            named = sorted(self.named_keys)
            weight, changed, touched_exact, touched_loose = [], [], [], []
            for key in named:
                found = self._cache[key]
                rule = None if found is None else self.rules[found[1]]["rule"]
                is_changed = found is not None and found[0] == _CHANGED
                weight.append(found[3] if is_changed else 0.0)
                changed.append(1 if is_changed else 0)
                touched_exact.append(1 if rule == "exact" else 0)
                touched_loose.append(1 if rule in ("min", "any") else 0)
            self._arrays = (
                KeyTable(np, self.exact_keys),
                np.array(named, dtype=np.int64),
                np.array(weight, dtype=np.float64),
                np.array(changed, dtype=np.int64),
                np.array(touched_exact, dtype=np.int64),
                np.array(touched_loose, dtype=np.int64),
            )
        return self._arrays

    def summarise_snapshots(
        self, blobs: Mapping[str, bytes] | Iterable[tuple[str, bytes]], chunk: int = 512
    ) -> dict[str, tuple]:
        """The package part of many snapshots at once, vectorised (numpy), after
        :meth:`prepare_named`: ``{digest: (package_score, missing, extra, changed)}``.

        ``blobs`` is ``{digest: keys blob}`` or an iterable of ``(digest, blob)`` pairs (a
        stream: blobs are let go chunk by chunk). Same arithmetic as :meth:`summarise_keys`,
        ``chunk`` snapshots at a time (arrays that stay in the CPU's caches): their keys in
        one array; membership in the exact keys by one look-up in a collision-free hash table
        per key; the few keys left over by binary search in the sorted named keys; sums per
        snapshot by ``add.reduceat`` and ``bincount``.
        """
        if not self.named_ready:
            raise RuntimeError("summarise_snapshots() needs prepare_named() first")
        out: dict[str, tuple] = {}
        for batch in _batches(blobs, chunk):
            self._summarise_chunk(batch, out)
        return out

    def _summarise_chunk(self, batch: list[tuple[str, bytes]], out: dict) -> None:
        np = _numpy()
        count = len(batch)
        all_keys, installed = _chunk_keys(batch, self.scope, np)
        exact, named, weight, changed, touched_exact, touched_loose = self._named_arrays()
        in_exact = exact.contains(all_keys)
        matched = _segment_sums(np, in_exact, installed)
        absent = len(exact) - matched
        unexpected = installed - matched
        rest_at = np.flatnonzero(~in_exact)
        rest = all_keys[rest_at]
        rest_owner = np.searchsorted(np.cumsum(installed), rest_at, side="right")
        hit = _member(np, named, rest)
        index = np.searchsorted(named, rest[hit])
        who = rest_owner[hit]
        n_named = np.bincount(who, minlength=count)
        score = np.bincount(who, weights=weight[index], minlength=count)
        n_changed = np.bincount(who, weights=changed[index], minlength=count)
        exact_touched = np.bincount(who, weights=touched_exact[index], minlength=count)
        loose_touched = np.bincount(who, weights=touched_loose[index], minlength=count)
        missing = absent - exact_touched + (len(self.loose) - loose_touched)
        extra = (unexpected - n_named) if self.extras else np.zeros(count, dtype=np.int64)
        score = score + self.weights["extra"] * extra + self.weights["missing"] * missing
        for i, (digest, _blob) in enumerate(batch):
            out[digest] = (
                round(float(score[i]), 3),
                int(missing[i]),
                int(extra[i]),
                int(n_changed[i]),
            )

    def summarise_keys(self, keys_by_eco: Mapping[str, Iterable[int]], node: NodeInput) -> dict:
        """Score and counts only, after :meth:`prepare_named`: nothing is resolved or listed.

        The per-node, pure-Python form of :meth:`summarise_snapshots` (which the fleet-wide
        recompute uses); the tests hold the two equal.

        The keys not in the baseline's dictionary of named packages are extras (counted); the
        exact keys not installed are missing unless that package is installed at another
        version (then it is changed) - so the missing count is arithmetic, not a list.
        """
        if not self.named_ready:
            raise RuntimeError("summarise_keys() needs prepare_named() first")
        installed: set[int] = set()
        for eco in self.scope:
            keys = keys_by_eco.get(eco)
            if keys is not None:
                installed.update(keys)
        unexpected = installed - self.exact_keys
        absent = len(self.exact_keys) - (len(installed) - len(unexpected))
        named = unexpected & self.named_keys
        cache = self._cache
        weights = self.weights
        score = 0.0
        changed = 0
        touched: set[tuple[str, str]] = set()
        for key in named:
            found = cache[key]
            if found is None:
                continue
            touched.add(found[1])
            if found[0] == _CHANGED:
                changed += 1
                score += found[3]
        touched_exact = sum(1 for name in touched if self.rules[name]["rule"] == "exact")
        missing = absent - touched_exact
        missing += sum(1 for name in self.loose if name not in touched)
        extra = len(unexpected) - len(named) if self.extras else 0
        score += weights["extra"] * extra + weights["missing"] * missing
        return self.summary(round(score, 3), missing, extra, changed, node)

    def summary(
        self, package_score: float, missing: int, extra: int, changed: int, node: NodeInput
    ) -> dict[str, Any]:
        """A result without package lists, from a known package part and counts: the node's
        facts and pending states are compared now."""
        total, facts = self.rescore(package_score, node)
        return {
            "baseline": self.name,
            "score": total,
            "missing": None,
            "extra": None,
            "changed": None,
            "facts": facts,
            "pending_states": node.pending_states,
            "counts": {"missing": missing, "extra": extra, "changed": changed, "facts": len(facts)},
            "package_score": package_score,
        }

    def _assemble(
        self, findings: list, absent: list, node: NodeInput, extra_count: int | None
    ) -> dict[str, Any]:
        weights = self.weights
        extra, changed = [], []
        touched: set[tuple[str, str]] = set()
        score = 0.0
        add_touched, add_extra, add_changed = touched.add, extra.append, changed.append
        for found in findings:
            if found is None:
                continue
            kind = found[0]
            if kind == _SATISFIED:
                add_touched(found[1])
            elif kind == _EXTRA:
                add_extra(found[1])
                score += found[2]
            else:
                add_changed(found[2])
                add_touched(found[1])
                score += found[3]
        if extra_count is not None:
            score += weights["extra"] * extra_count
        entry = self._missing_entry
        missing = [entry(pair) for pair in absent if pair not in touched]
        missing += [entry(pair) for pair in self.loose if pair not in touched]
        score += weights["missing"] * len(missing)
        package_score = score
        facts = self.node_facts(node)
        score += weights["fact"] * len(facts)
        pending = node.pending_states
        if pending:
            score += weights["pending_state"] * pending
        missing.sort(key=_ENTRY_ORDER)
        changed.sort(key=_ENTRY_ORDER)
        if extra_count is None:
            extra.sort(key=_ENTRY_ORDER)
        return {
            "baseline": self.name,
            "score": round(score, 3),
            "missing": missing,
            "extra": None if extra_count is not None else extra,
            "changed": changed,
            "facts": facts,
            "pending_states": pending,
            "counts": {
                "missing": len(missing),
                "extra": len(extra) if extra_count is None else extra_count,
                "changed": len(changed),
                "facts": len(facts),
            },
            "package_score": round(package_score, 3),
        }

    def _missing_entry(self, pair: tuple[str, str]) -> dict[str, str]:
        """The finding of a named package that is not installed (one dict per package, shared
        by every node that misses it: treat results as read-only, as their other entries)."""
        try:
            return self._missing[pair]
        except KeyError:
            eco, name = pair
            rule = self.rules[pair]
            if rule["rule"] == "exact":
                expected = rule["version"]
            elif rule["rule"] == "any":
                expected = "any"
            else:
                expected = f">={rule['version']}"
            found = self._missing[pair] = {"ecosystem": eco, "name": name, "expected": expected}
            return found

    def fact_mismatches(self, node_facts: Mapping[str, Any] | None) -> list[dict[str, Any]]:
        out = []
        node_facts = node_facts or {}
        for fact, expected in self.facts.items():
            actual = node_facts.get(fact)
            actual = None if actual is None else _fact_text(actual)
            if actual != expected:
                out.append({"fact": fact, "expected": expected, "actual": actual})
        return out

    #: most distinct facts keys remembered by :meth:`node_facts`
    FACT_MEMO_MAX = 4096

    def node_facts(self, node: NodeInput) -> list[dict[str, Any]]:
        """:meth:`fact_mismatches` of a node, remembered by its ``facts_key`` (a fleet has
        few distinct combinations of the facts a baseline names). Treat the list as read-only:
        nodes with the same key share it."""
        key = node.facts_key
        if key is None:
            return self.fact_mismatches(node.facts)
        found = self._fact_memo.get(key)
        if found is None:
            if len(self._fact_memo) >= self.FACT_MEMO_MAX:
                self._fact_memo.clear()
            found = self._fact_memo[key] = self.fact_mismatches(node.facts)
        return found

    def rescore(self, package_score: float, node: NodeInput) -> tuple[float, list]:
        """The score of a node whose package part is known: ``(score, fact mismatches)``."""
        facts = self.node_facts(node)
        score = package_score + self.weights["fact"] * len(facts)
        if node.pending_states:
            score += self.weights["pending_state"] * node.pending_states
        return round(score, 3), facts


def _batches(blobs: Mapping[str, bytes] | Iterable[tuple[str, bytes]], size: int):
    """Lists of at most ``size`` ``(digest, blob)`` pairs of ``blobs`` (a mapping or a stream
    of pairs, let go batch by batch)."""
    batch: list[tuple[str, bytes]] = []
    for pair in blobs.items() if isinstance(blobs, Mapping) else blobs:
        batch.append(pair)
        if len(batch) >= size:
            yield batch
            batch = []
    if batch:
        yield batch


def _chunk_keys(batch: list[tuple[str, bytes]], scope, np):
    """The keys of ``batch``'s blobs in ``scope``'s ecosystems as one int64 array, and how
    many each blob has (in order)."""
    parts, sizes = [], []
    for _digest, blob in batch:
        size = 0
        for keys in _key_sections(blob or b"", scope, np):
            parts.append(keys)
            size += len(keys)
        sizes.append(size)
    all_keys = np.concatenate(parts) if parts else np.empty(0, dtype=np.int64)
    return all_keys, np.array(sizes, dtype=np.int64)


def _numpy():
    # Heavy (0.15 s to import): only the fleet-wide recompute needs it, and minions import this
    # module for the fleet.baseline state.
    import numpy

    return numpy


def _member(np, sorted_keys, keys):
    """Boolean mask: which of ``keys`` are in the sorted array ``sorted_keys``."""
    if not len(sorted_keys) or not len(keys):
        return np.zeros(len(keys), dtype=bool)
    pos = np.searchsorted(sorted_keys, keys)
    pos[pos == len(sorted_keys)] = 0
    return sorted_keys[pos] == keys


def _segment_sums(np, flags, sizes):
    """Per segment (consecutive runs of ``sizes`` elements), how many ``flags`` are set."""
    # one element more, so that every start (an empty last segment's too) is an index
    padded = np.zeros(len(flags) + 1, dtype=np.int8)
    padded[:-1] = flags
    starts = np.cumsum(sizes) - sizes
    sums = np.add.reduceat(padded, starts, dtype=np.int64)
    return np.where(sizes > 0, sums, 0)  # reduceat gives an empty segment its next element


class KeyTable:
    """Set membership of 64-bit package keys by one array look-up per key.

    Package keys are BLAKE2b digests, so their low bits are uniform: the table has 16 slots
    per key (at most 2**22) indexed by those bits, each slot holding the first key that
    lands there; the few keys that find their slot taken go to a small sorted overflow,
    searched only for keys that missed the table. Every slot holds some key of the set (an
    empty one the smallest), so a match in the table always means membership.
    """

    MAX_BITS = 22

    def __init__(self, np, keys: Iterable[int]):
        self.np = np
        self.keys = np.array(sorted(keys), dtype=np.int64)
        n = len(self.keys)
        bits = min(self.MAX_BITS, max(10, (n * 16 - 1).bit_length()))
        self.mask = (1 << bits) - 1
        self.table = None
        self.overflow = self.keys[:0]
        if not n:
            return
        slots = self.keys & self.mask
        _, first = np.unique(slots, return_index=True)
        primary = np.zeros(n, dtype=bool)
        primary[first] = True
        self.table = np.full(1 << bits, self.keys[0], dtype=np.int64)
        self.table[slots[primary]] = self.keys[primary]
        self.overflow = self.keys[~primary]  # sorted, as keys are

    def __len__(self) -> int:
        return len(self.keys)

    def contains(self, keys):
        """Boolean mask: which of ``keys`` (an int64 array) are in the set."""
        np = self.np
        if self.table is None:
            return np.zeros(len(keys), dtype=bool)
        found = self.table[keys & self.mask] == keys
        if len(self.overflow):
            missed = np.flatnonzero(~found)
            found[missed] = _member(np, self.overflow, keys[missed])
        return found


def _key_sections(blob: bytes, ecosystems, np):
    """The int64 key arrays of the sections in ``ecosystems`` (views, no copies)."""
    for eco, pos, count in key_sections(blob):
        if eco in ecosystems:
            yield np.frombuffer(blob, dtype="<i8", count=count, offset=pos)


#: the order of a node's findings: by ecosystem, then name
_ENTRY_ORDER = operator.itemgetter("ecosystem", "name")
#: what a classification cache holds for a key it has not seen
_UNKNOWN = object()


def _fact_text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (list, tuple)):
        return ",".join(str(v) for v in value)
    return str(value)


def counts(result: Mapping[str, Any]) -> dict[str, int]:
    """How many findings of each kind a result holds (for summaries and history)."""
    if isinstance(result.get("counts"), Mapping):
        return dict(result["counts"])
    return {
        "missing": len(result.get("missing") or ()),
        "extra": len(result.get("extra") or ()),
        "changed": len(result.get("changed") or ()),
        "facts": len(result.get("facts") or ()),
    }


def crossing(previous: float | None, score: float, threshold: float) -> str | None:
    """``"above"`` when the score rises to the threshold, ``"below"`` when it falls back."""
    was_above = previous is not None and previous >= threshold
    is_above = score >= threshold
    if is_above and not was_above:
        return "above"
    if was_above and not is_above:
        return "below"
    return None


def pending_states(ret: Any, test: bool = True) -> int | None:
    """What a state run's return says is still to do on the node (None: not a state return).

    A test run (``test=True``): every state that would change (``result`` None, or changes)
    or that failed. A real run: every state that failed (what succeeded is now applied). A
    list (render errors) counts each error.
    """
    if isinstance(ret, list):
        return len(ret)
    if not isinstance(ret, Mapping):
        return None
    pending = 0
    for chunk in ret.values():
        if not isinstance(chunk, Mapping) or "result" not in chunk:
            return None
        result = chunk.get("result")
        if result is False or (test and (result is not True or chunk.get("changes"))):
            pending += 1
    return pending


STATE_FUNS = ("state.apply", "state.highstate", "state.sls")


def state_run(fun: Any, fun_args: Any) -> str | None:
    """``"test"`` or ``"real"`` for a ``state.apply``/``highstate``/``sls`` job, else None."""
    if fun not in STATE_FUNS:
        return None
    for arg in fun_args or ():
        if isinstance(arg, str) and arg.replace(" ", "").lower() == "test=true":
            return "test"
        if isinstance(arg, Mapping) and arg.get("test") in (True, "True", "true", 1):
            return "test"
    return "real"


def remediation_plan(result: Mapping[str, Any], remove_extras: bool = True) -> dict[str, dict]:
    """What to install and remove, per ecosystem, to bring a node to its baseline.

    ``{ecosystem: {"install": {name: "==1.0" | ">=1.0" | ""}, "remove": [name]}}``: an exact
    rule installs that version, a ``min`` rule at least that version, ``any`` whatever the
    package source offers. Extras are removed only with ``remove_extras``.
    """
    plan: dict[str, dict] = {}

    def eco_plan(eco: str) -> dict:
        return plan.setdefault(eco, {"install": {}, "remove": []})

    def spec(expected: str) -> str:
        if expected == "any":
            return ""
        if expected.startswith(">="):
            return expected
        return f"=={expected}"

    for entry in result.get("missing") or ():
        eco_plan(entry["ecosystem"])["install"][entry["name"]] = spec(entry["expected"])
    for entry in result.get("changed") or ():
        eco_plan(entry["ecosystem"])["install"][entry["name"]] = spec(entry["expected"])
    if remove_extras:
        for entry in result.get("extra") or ():
            eco_plan(entry["ecosystem"])["remove"].append(entry["name"])
    return dict(sorted(plan.items()))
