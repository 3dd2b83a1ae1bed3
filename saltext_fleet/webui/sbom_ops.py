"""What the SBOM download does, for the API view and the node page's button: check the
format (``400`` naming a bad one), read the node's stored inventory (``404`` for an unknown
node, ``409`` for one that has reported no inventory) and build its CycloneDX document with
:mod:`saltext_fleet.core.sbom`.
"""

from __future__ import annotations

from flask import abort, request

from saltext_fleet.core import sbom as core_sbom
from saltext_fleet.store import sbom as store_sbom
from saltext_fleet.webui.base import ctx

#: Package components shared by this process's downloads (nodes share most packages): a
#: few tens of megabytes at most.
_CACHE = core_sbom.ComponentCache(limit=50_000)


def requested_format() -> str:
    """The ``?format=`` of the request (default ``cyclonedx-json``); 400 naming a bad one."""
    fmt = request.args.get("format") or "cyclonedx-json"
    try:
        return core_sbom.check_format(fmt)
    except core_sbom.SbomError as exc:
        abort(400, description=str(exc))


def requested_vex() -> bool:
    """``?vex=1``: include the node's triage decisions as CycloneDX VEX."""
    value = (request.args.get("vex") or "0").strip().lower()
    if value not in ("0", "1", "true", "false", "yes", "no"):
        abort(400, description=f"vex: expected 1 or 0, got {value[:40]!r}")
    return value in ("1", "true", "yes")


def node_document(minion_id: str, fmt: str, vex: bool = False) -> tuple[str, str, str]:
    """``(document, media type, file name)`` of a node's SBOM in ``fmt``, with the node's
    triage decisions as VEX when ``vex``."""
    with ctx().engine.connect() as conn:
        known, inventory, grains = store_sbom.node_input(conn, minion_id)
        entries = store_sbom.node_vex(conn, minion_id, inventory) if vex and inventory else None
    if not known:
        abort(404, description=f"no node {minion_id!r}")
    if inventory is None:
        abort(409, description=f"node {minion_id!r} has reported no inventory yet")
    try:
        text, _count = core_sbom.node_document(
            minion_id, inventory, grains, entries, fmt, cache=_CACHE
        )
    except core_sbom.SbomError as exc:
        abort(500, description=f"the SBOM of {minion_id!r} could not be built: {exc}")
    return text, core_sbom.MEDIA_TYPES[fmt], core_sbom.file_name(minion_id, fmt)
