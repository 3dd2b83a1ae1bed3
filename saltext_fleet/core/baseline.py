"""Baselines: named desired states, parsed and validated. Pure logic, no Salt import.

A baseline says which packages (per ecosystem) and which facts a node should have. Written in
YAML (a file, the master config, pillar or ``fleet.baseline_set``) it looks like this:

.. code-block:: yaml

    name: macos-build            # [A-Za-z0-9._-], at most 128 characters
    description: Xcode 15 build hosts
    packages:
      pypi:
        requests: "2.31.0"       # a bare version: exactly this version
        urllib3: {min: "2.0"}    # at least this version (in the ecosystem's version order)
        certifi: any             # any version, but it must be installed
        setuptools: ignore       # never counted, whatever is installed
        wheel: {exact: "0.42.0"}
      brew:
        git: "2.44.0"
    facts:
      osrelease: "14.4.1"
      xcode: "15.4"
    extras: true                 # count installed packages the baseline does not name

Extras are counted only in the ecosystems the baseline names (its ``packages`` keys, plus
those of an explicit ``ecosystems:`` list): a baseline of Python packages says nothing about ``deb``.

:func:`parse` turns any such document into the normal form every other part uses::

    {"name", "description", "packages": {eco: {name: {"rule", "version"}}},
     "facts": {fact: str}, "ecosystems": [eco, ...], "extras": bool}

and raises :class:`BaselineError` naming the offending field for anything else.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping
from typing import Any

from saltext_fleet.core.errors import FleetError

RULES = ("exact", "min", "any", "ignore")
NAME_RE = re.compile(r"^[A-Za-z0-9._-]{1,128}$")
ECOSYSTEM_RE = re.compile(r"^[a-z0-9][a-z0-9._-]{0,31}$")
MAX_PACKAGE_NAME = 255
MAX_VERSION = 255
MAX_FACT_NAME = 64
MAX_FACT_VALUE = 1024
MAX_PACKAGES = 100_000
FIELDS = ("name", "description", "packages", "facts", "ecosystems", "extras")
#: Fields the store adds when it shows a baseline; accepted and ignored on the way back in.
METADATA = ("revision", "source", "created_at", "updated_at")


class BaselineError(FleetError, ValueError):
    """A baseline document is malformed; ``field`` says where (``packages:pypi:requests``)."""

    def __init__(self, field: str, message: str):
        self.field = field
        super().__init__(
            f"bad baseline {field}: {message}" if field else f"bad baseline: {message}"
        )


def check_name(name: Any) -> str:
    """A baseline name, validated (it appears in paths of the UI and in events)."""
    if not isinstance(name, str) or not NAME_RE.match(name):
        raise BaselineError(
            "name", f"{name!r} is not a baseline name ([A-Za-z0-9._-], 1 to 128 characters)"
        )
    return name


def normalise_package_name(ecosystem: str, name: str) -> str:
    """Names as the inventory files them: PyPI names per PEP 503, the rest as given."""
    if ecosystem == "pypi":
        return re.sub(r"[-_.]+", "-", name).lower()
    return name


def parse_rule(value: Any, field: str) -> dict[str, str | None]:
    """One package's rule from its YAML value (see the module docstring)."""
    if isinstance(value, bool) or value is None:
        raise BaselineError(field, f"{value!r} is not a version or a rule")
    if isinstance(value, (int, float)):
        value = str(value)
    if isinstance(value, str):
        if value in ("any", "ignore"):
            return {"rule": value, "version": None}
        return {"rule": "exact", "version": _version(value, field)}
    if isinstance(value, Mapping):
        if "rule" in value:  # the normal form itself
            rule = value.get("rule")
            if rule not in RULES:
                raise BaselineError(field, f"rule {rule!r} is not one of {', '.join(RULES)}")
            extra = set(value) - {"rule", "version"}
            if extra:
                raise BaselineError(field, f"unknown keys {sorted(extra)}")
            if rule in ("exact", "min"):
                return {"rule": rule, "version": _version(value.get("version"), field)}
            return {"rule": rule, "version": None}
        if len(value) != 1:
            raise BaselineError(field, "expected one of {exact: V}, {min: V}, any or ignore")
        ((rule, version),) = value.items()
        if rule in ("exact", "min"):
            return {"rule": rule, "version": _version(version, field)}
        if rule in ("any", "ignore") and version in (None, True, ""):
            return {"rule": rule, "version": None}
        raise BaselineError(field, f"{rule!r} is not one of {', '.join(RULES)}")
    raise BaselineError(field, f"expected a version or a rule, got {type(value).__name__}")


def _version(value: Any, field: str) -> str:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        value = str(value)
    if not isinstance(value, str) or not value.strip():
        raise BaselineError(field, f"{value!r} is not a version")
    if len(value) > MAX_VERSION or "\0" in value:
        raise BaselineError(field, "the version is too long or holds a NUL character")
    return value.strip()


def parse(doc: Any, name: str | None = None) -> dict[str, Any]:
    """Validate a baseline document into its normal form; ``name`` overrides ``doc["name"]``."""
    if not isinstance(doc, Mapping):
        raise BaselineError("", f"expected a mapping, got {type(doc).__name__}")
    unknown = set(doc) - set(FIELDS) - set(METADATA)
    if unknown:
        raise BaselineError(sorted(unknown)[0], f"unknown field (known: {', '.join(FIELDS)})")
    name = check_name(name if name is not None else doc.get("name"))
    description = doc.get("description") or ""
    if not isinstance(description, str) or len(description) > 4096:
        raise BaselineError("description", "expected a string of at most 4096 characters")

    raw_packages = doc.get("packages") or {}
    if not isinstance(raw_packages, Mapping):
        raise BaselineError("packages", "expected a mapping of ecosystem -> packages")
    packages: dict[str, dict[str, dict]] = {}
    total = 0
    for eco, pkgs in raw_packages.items():
        check_ecosystem(eco, f"packages:{eco}")
        if pkgs is None:
            pkgs = {}
        if not isinstance(pkgs, Mapping):
            raise BaselineError(f"packages:{eco}", "expected a mapping of package -> rule")
        rules = {}
        for pkg, value in pkgs.items():
            field = f"packages:{eco}:{pkg}"
            if not isinstance(pkg, str) or not pkg or len(pkg) > MAX_PACKAGE_NAME or "\0" in pkg:
                raise BaselineError(field, "not a package name")
            rules[normalise_package_name(eco, pkg)] = parse_rule(value, field)
        total += len(rules)
        packages[eco] = dict(sorted(rules.items()))
    if total > MAX_PACKAGES:
        raise BaselineError("packages", f"{total} packages, at most {MAX_PACKAGES}")

    raw_facts = doc.get("facts") or {}
    if not isinstance(raw_facts, Mapping):
        raise BaselineError("facts", "expected a mapping of fact -> value")
    facts = {}
    for fact, value in raw_facts.items():
        field = f"facts:{fact}"
        if not isinstance(fact, str) or not re.match(r"^[A-Za-z0-9_.-]{1,64}$", fact):
            raise BaselineError(field, "not a fact name ([A-Za-z0-9_.-], 1 to 64 characters)")
        if isinstance(value, bool) or value is None or isinstance(value, (dict, list)):
            raise BaselineError(field, f"{value!r} is not a scalar value")
        value = str(value)
        if len(value) > MAX_FACT_VALUE:
            raise BaselineError(field, "the value is too long")
        facts[fact] = value

    ecosystems = doc.get("ecosystems")
    if ecosystems is None:
        ecosystems = list(packages)
    if not isinstance(ecosystems, list):
        raise BaselineError("ecosystems", "expected a list of ecosystems")
    for eco in ecosystems:
        check_ecosystem(eco, "ecosystems")

    extras = doc.get("extras", True)
    if not isinstance(extras, bool):
        raise BaselineError("extras", f"{extras!r} is not true or false")
    return {
        "name": name,
        "description": description,
        "packages": dict(sorted(packages.items())),
        "facts": dict(sorted(facts.items())),
        "ecosystems": sorted(set(ecosystems) | set(packages)),
        "extras": extras,
    }


def check_ecosystem(eco: Any, field: str) -> str:
    if not isinstance(eco, str) or not ECOSYSTEM_RE.match(eco):
        raise BaselineError(field, f"{eco!r} is not an ecosystem name (e.g. pypi, deb, brew)")
    return eco


def to_yaml_doc(baseline: Mapping[str, Any]) -> dict[str, Any]:
    """The normal form written back in the short YAML style people type."""
    packages = {}
    for eco, rules in baseline["packages"].items():
        out = {}
        for name, rule in rules.items():
            if rule["rule"] == "exact":
                out[name] = rule["version"]
            elif rule["rule"] == "min":
                out[name] = {"min": rule["version"]}
            else:
                out[name] = rule["rule"]
        packages[eco] = out
    doc = {"name": baseline["name"]}
    if baseline.get("description"):
        doc["description"] = baseline["description"]
    doc["packages"] = packages
    doc["facts"] = dict(baseline.get("facts") or {})
    if sorted(baseline.get("ecosystems") or []) != sorted(packages):
        doc["ecosystems"] = list(baseline["ecosystems"])
    if not baseline.get("extras", True):
        doc["extras"] = False
    return doc


def revision(baseline: Mapping[str, Any]) -> str:
    """A digest of what the baseline asks for (name and description excluded)."""
    return digest_of({k: baseline.get(k) for k in ("packages", "facts", "ecosystems", "extras")})


def digest_of(value: Any) -> str:
    """SHA-256 of the canonical JSON of ``value``."""
    data = json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(data.encode()).hexdigest()


def from_inventory(
    name: str,
    inventory: Mapping[str, Any],
    facts: list[str] | None = None,
    ecosystems: list[str] | None = None,
    description: str = "",
) -> dict[str, Any]:
    """A baseline pinned from a node: every package at exactly its installed version."""
    packages = inventory.get("packages") or {}
    node_facts = inventory.get("facts") or {}
    chosen = ecosystems if ecosystems else sorted(packages)
    doc_packages = {
        eco: {
            pkg: {"rule": "exact", "version": ver} for pkg, ver in (packages.get(eco) or {}).items()
        }
        for eco in chosen
    }
    fact_names = facts if facts is not None else [f for f in PIN_FACTS if f in node_facts]
    doc_facts = {}
    for fact in fact_names:
        if fact not in node_facts:
            raise BaselineError(f"facts:{fact}", "the node does not report this fact")
        value = node_facts[fact]
        if isinstance(value, (dict, list)) or value is None:
            raise BaselineError(f"facts:{fact}", "only scalar facts can be pinned")
        doc_facts[fact] = value
    return parse(
        {
            "name": name,
            "description": description,
            "packages": doc_packages,
            "facts": doc_facts,
            "ecosystems": list(chosen),
        }
    )


#: Facts a pin records by default, when the node reports them.
PIN_FACTS = ("os", "osrelease", "osarch", "xcode")


def diff(a: Mapping[str, Any], b: Mapping[str, Any]) -> dict[str, Any]:
    """What changes from baseline ``a`` to baseline ``b``: packages and facts."""
    out: dict[str, Any] = {"packages": {"added": [], "removed": [], "changed": []}, "facts": {}}
    for eco in sorted(set(a["packages"]) | set(b["packages"])):
        old = a["packages"].get(eco, {})
        new = b["packages"].get(eco, {})
        for pkg in sorted(set(old) | set(new)):
            if pkg not in old:
                out["packages"]["added"].append({"ecosystem": eco, "name": pkg, **new[pkg]})
            elif pkg not in new:
                out["packages"]["removed"].append({"ecosystem": eco, "name": pkg, **old[pkg]})
            elif old[pkg] != new[pkg]:
                out["packages"]["changed"].append(
                    {"ecosystem": eco, "name": pkg, "from": old[pkg], "to": new[pkg]}
                )
    for fact in sorted(set(a["facts"]) | set(b["facts"])):
        if a["facts"].get(fact) != b["facts"].get(fact):
            out["facts"][fact] = {"from": a["facts"].get(fact), "to": b["facts"].get(fact)}
    for key in ("ecosystems", "extras"):
        if a.get(key) != b.get(key):
            out[key] = {"from": a.get(key), "to": b.get(key)}
    return out


def edit(
    baseline: Mapping[str, Any],
    package: str | None = None,
    rule: str | None = None,
    version: str | None = None,
    remove: bool = False,
    fact: str | None = None,
    value: Any = None,
    description: str | None = None,
    extras: bool | None = None,
) -> dict[str, Any]:
    """A copy of ``baseline`` with one edit applied, validated.

    ``package`` is ``<ecosystem>:<name>``; with ``remove`` it leaves the baseline, otherwise it
    gets ``rule`` (``exact``/``min`` with ``version``; ``any``; ``ignore``). A bare ``version``
    means ``exact``. ``fact`` with ``value`` sets a fact, with ``remove`` drops it.
    """
    doc = {
        "name": baseline["name"],
        "description": baseline.get("description") or "",
        "packages": {eco: dict(rules) for eco, rules in baseline["packages"].items()},
        "facts": dict(baseline.get("facts") or {}),
        "ecosystems": list(baseline.get("ecosystems") or []),
        "extras": baseline.get("extras", True),
    }
    if package is not None:
        if not isinstance(package, str) or ":" not in package:
            raise BaselineError("package", f"{package!r} is not <ecosystem>:<name>")
        eco, pkg = package.split(":", 1)
        check_ecosystem(eco, "package")
        pkg = normalise_package_name(eco, pkg)
        if remove:
            if pkg not in doc["packages"].get(eco, {}):
                raise BaselineError("package", f"{package} is not in baseline {doc['name']}")
            del doc["packages"][eco][pkg]
        else:
            if rule is None:
                rule = "exact" if version is not None else None
            if rule is None:
                raise BaselineError("rule", "give rule= (exact, min, any, ignore) or version=")
            doc["packages"].setdefault(eco, {})[pkg] = parse_rule(
                {"rule": rule, "version": version}, f"packages:{eco}:{pkg}"
            )
            if eco not in doc["ecosystems"]:
                doc["ecosystems"].append(eco)
    if fact is not None:
        if remove:
            doc["facts"].pop(fact, None)
        else:
            doc["facts"][fact] = value
    if description is not None:
        doc["description"] = description
    if extras is not None:
        doc["extras"] = extras
    return parse(doc)
