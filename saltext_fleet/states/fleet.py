"""
State ``fleet.baseline``: bring a node to its baseline.

The baseline comes from the ``fleet:baseline`` pillar (the ``fleet`` external pillar gives
each node its assigned baseline) or from the ``baseline`` argument (a baseline document, as
in :mod:`saltext_fleet.core.baseline`). The state takes a fresh ``fleet.inventory``, computes
the drift, and fixes it through Salt's own states:

- ``pypi``: ``pip.installed`` (``name==version``, ``name>=minimum``) and ``pip.removed``, in
  the interpreter given by ``bin_env`` (default: the first of ``fleet:inventory:pip``);
- the node's own package ecosystem (``deb``, ``rpm``, ``brew``...): ``pkg.installed`` with
  versions and ``pkg.removed``;
- other ecosystems (Nix, Homebrew casks) cannot be changed by a package state: they are
  reported and make the state fail;
- facts (an OS or Xcode version) are not a package's business: a mismatch is reported in
  the comment and does not fail the state.

Under ``test=True`` it lists what it would install and remove and changes nothing. After
changing packages it fires ``fleet/pkgset/changed``, so the master takes a fresh inventory
and records the node's new drift.

.. code-block:: yaml

    # /srv/salt/fleet_baseline.sls
    bring-to-baseline:
      fleet.baseline:
        - remove_extras: true
        - pip_options:
            index_url: https://pypi.internal.example/simple
"""

from __future__ import annotations

import json
import logging

from saltext_fleet.core import baseline as core_baseline
from saltext_fleet.core import drift as core_drift
from saltext_fleet.core.inventory import ecosystem_for

log = logging.getLogger(__name__)

__virtualname__ = "fleet"

PKGSET_TAG = "fleet/pkgset/changed"
#: pip.installed options passed through from ``pip_options``.
PIP_OPTIONS = (
    "index_url",
    "extra_index_url",
    "no_index",
    "find_links",
    "trusted_host",
    "proxy",
    "timeout",
    "user",
    "cwd",
    "pre_releases",
    "env_vars",
)


def __virtual__():
    if "fleet.inventory" not in __salt__:
        return False, "fleet.baseline needs the fleet execution module"
    return __virtualname__


def _ret(name, result, comment, changes=None):
    return {"name": name, "result": result, "comment": comment, "changes": changes or {}}


def _pip_bin(bin_env):
    if bin_env:
        return bin_env
    pythons = __salt__["config.get"]("fleet:inventory:pip") or []
    if isinstance(pythons, str):
        pythons = [pythons]
    return pythons[0] if pythons else None


def baseline(
    name,
    baseline=None,
    remove_extras=True,
    bin_env=None,
    pip_options=None,
    ecosystems=None,
    expect=None,
):
    """
    Bring this node to its baseline.

    name
        The state's id.
    baseline
        A baseline document; default: the ``fleet:baseline`` pillar.
    remove_extras
        Remove installed packages the baseline does not name (in its ecosystems). Default
        True.
    bin_env
        The Python interpreter (or virtualenv) whose PyPI packages are managed; default the
        first of ``fleet:inventory:pip``.
    pip_options
        Options for ``pip.installed`` (``index_url``, ``find_links``, ``no_index``...).
    ecosystems
        Only remediate these ecosystems (default: all the baseline names).
    expect
        The baseline name this state is written for: a node assigned another baseline fails
        instead of being changed to it.
    """
    spec = baseline if baseline is not None else _pillar_baseline()
    if not spec:
        return _ret(
            name, False, "no baseline: give baseline= or assign one (fleet.baseline_assign)"
        )
    try:
        spec = core_baseline.parse(spec, name=spec.get("name") if isinstance(spec, dict) else None)
    except core_baseline.BaselineError as exc:
        return _ret(name, False, f"the baseline is not valid: {exc}")
    if expect is not None and spec["name"] != expect:
        return _ret(name, False, f"this node's baseline is {spec['name']!r}, not {expect!r}")
    pip_options = dict(pip_options or {})
    bad = sorted(set(pip_options) - set(PIP_OPTIONS))
    if bad:
        return _ret(
            name, False, f"pip_options: unknown options {bad} (known: {', '.join(PIP_OPTIONS)})"
        )

    inventory = __salt__["fleet.inventory"]()
    drift = core_drift.CompiledBaseline(spec).compute(
        inventory.get("packages") or {}, core_drift.NodeInput(facts=inventory.get("facts") or {})
    )
    plan = core_drift.remediation_plan(drift, remove_extras=remove_extras)
    if ecosystems:
        wanted = set(ecosystems.split(",") if isinstance(ecosystems, str) else ecosystems)
        plan = {eco: p for eco, p in plan.items() if eco in wanted}
    os_eco = ecosystem_for(__grains__.get("os_family"))
    fixable = {"pypi", os_eco}
    unfixable = {eco: p for eco, p in plan.items() if eco not in fixable}
    plan = {eco: p for eco, p in plan.items() if eco in fixable and (p["install"] or p["remove"])}
    notes = []
    for eco, p in sorted(unfixable.items()):
        notes.append(
            f"{eco}: {len(p['install'])} to install and {len(p['remove'])} to remove, "
            "which no package state here can do"
        )
    for fact in drift["facts"]:
        notes.append(
            f"fact {fact['fact']} is {fact['actual']!r}, the baseline wants {fact['expected']!r}"
        )

    if not plan:
        if unfixable:
            return _ret(name, False, "; ".join(notes))
        comment = f"the node matches baseline {spec['name']}"
        return _ret(name, True, comment + ("; " + "; ".join(notes) if notes else ""))

    if __opts__["test"]:
        changes = {eco: {k: v for k, v in p.items() if v} for eco, p in plan.items()}
        comment = f"would bring the node to baseline {spec['name']}: " + _describe(plan)
        return _ret(name, None, comment + ("; " + "; ".join(notes) if notes else ""), changes)

    changes, failures = {}, []
    for eco, p in plan.items():
        if eco == "pypi":
            sub = _pip(p, _pip_bin(bin_env), pip_options)
        else:
            sub = _pkg(p)
        for label, ret in sub:
            if ret.get("changes"):
                changes.setdefault(eco, {})[label] = ret["changes"]
            if ret.get("result") is False:
                failures.append(f"{eco} {label}: {ret.get('comment')}")
    if changes:
        try:
            __salt__["event.send"](
                PKGSET_TAG, {"reason": "fleet.baseline", "baseline": spec["name"]}
            )
        except Exception:  # the next inventory run will catch up anyway
            log.warning("fleet.baseline: could not announce the package change", exc_info=True)
    if failures or unfixable:
        return _ret(name, False, "; ".join(failures + notes), changes)
    comment = f"brought the node to baseline {spec['name']}: " + _describe(plan)
    return _ret(name, True, comment + ("; " + "; ".join(notes) if notes else ""), changes)


def _pillar_baseline():
    """``fleet:baseline`` from this node's pillar, as plain data.

    Read from ``__pillar__`` (plain values), not ``pillar.get``: Salt 3008 masks pillar values
    that ``pillar.get`` hands out.
    """
    fleet = __pillar__.get("fleet") if hasattr(__pillar__, "get") else None
    found = fleet.get("baseline") if isinstance(fleet, dict) else None
    return json.loads(json.dumps(found)) if found else None


def _describe(plan):
    parts = []
    for eco, p in plan.items():
        if p["install"]:
            parts.append(
                f"{eco} install " + ", ".join(f"{n}{v}" for n, v in sorted(p["install"].items()))
            )
        if p["remove"]:
            parts.append(f"{eco} remove " + ", ".join(sorted(p["remove"])))
    return "; ".join(parts)


def _pip(plan, bin_env, options):
    out = []
    if plan["install"]:
        pkgs = [f"{n}{v}" for n, v in sorted(plan["install"].items())]
        ret = __states__["pip.installed"](
            name="fleet-baseline", pkgs=pkgs, bin_env=bin_env, **options
        )
        out.append(("install", ret))
    for pkg in sorted(plan["remove"]):
        out.append((f"remove {pkg}", __states__["pip.removed"](name=pkg, bin_env=bin_env)))
    return out


def _pkg(plan):
    out = []
    if plan["install"]:
        pkgs = []
        for pkg, version in sorted(plan["install"].items()):
            version = version[2:] if version.startswith("==") else version
            pkgs.append({pkg: version} if version else pkg)
        out.append(("install", __states__["pkg.installed"](name="fleet-baseline", pkgs=pkgs)))
    if plan["remove"]:
        out.append(
            (
                "remove",
                __states__["pkg.removed"](name="fleet-baseline", pkgs=sorted(plan["remove"])),
            )
        )
    return out
