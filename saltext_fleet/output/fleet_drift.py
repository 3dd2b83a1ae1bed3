"""
The table ``salt-run fleet.drift`` prints by default (``--out=json`` gives the data).

One line per node, highest score first, with the counts and the first findings::

    NODE        BASELINE   SCORE  MISS  EXTRA  CHANGED  FACTS  PENDING  FINDINGS
    mini-02     macos      14.0      0      1        1      0        -  ~pypi/fleet-alpha 1.0.0->2.1.0 (major) ...
"""

from __future__ import annotations

__virtualname__ = "fleet_drift"

MAX_FINDINGS = 3


def __virtual__():
    return __virtualname__


def _findings(result: dict) -> str:
    parts = []
    for entry in result.get("changed") or ():
        parts.append(
            f"~{entry['ecosystem']}/{entry['name']} {entry['expected']}->{entry['actual']}"
            f" ({entry['change']})"
        )
    for entry in result.get("missing") or ():
        parts.append(f"-{entry['ecosystem']}/{entry['name']} {entry['expected']}")
    for entry in result.get("extra") or ():
        parts.append(f"+{entry['ecosystem']}/{entry['name']} {entry['version']}")
    for entry in result.get("facts") or ():
        parts.append(f"!{entry['fact']}={entry['actual']} (want {entry['expected']})")
    more = len(parts) - MAX_FINDINGS
    text = "  ".join(parts[:MAX_FINDINGS])
    return text + (f"  (+{more} more)" if more > 0 else "")


def render(data) -> str:
    """The table, as text (pure: used by the outputter and the tests)."""
    if isinstance(data, dict) and data.get("suffix") == "progress":  # salt-run progress events
        event = data.get("event") if isinstance(data.get("event"), dict) else {}
        return f"... {event.get('message', '')}"
    if not isinstance(data, dict) or not all(isinstance(v, dict) for v in data.values()):
        return str(data)  # not a drift result (an error message, say): as it is
    if not data:
        return "No node has a baseline (see salt-run fleet.baseline_assign)."
    header = (
        "NODE",
        "BASELINE",
        "SCORE",
        "MISS",
        "EXTRA",
        "CHANGED",
        "FACTS",
        "PENDING",
        "FINDINGS",
    )
    rows = []
    for minion, result in sorted(
        data.items(), key=lambda item: (-(item[1].get("score") or 0), item[0])
    ):
        pending = result.get("pending_states")
        counts = result.get("counts") if isinstance(result.get("counts"), dict) else {}

        def count(kind, result=result, counts=counts):
            return str(counts[kind] if kind in counts else len(result.get(kind) or ()))

        rows.append(
            (
                minion,
                str(result.get("baseline")),
                f"{result.get('score', 0):.1f}",
                count("missing"),
                count("extra"),
                count("changed"),
                count("facts"),
                "-" if pending is None else str(pending),
                _findings(result),
            )
        )
    widths = [max(len(r[i]) for r in rows + [header]) for i in range(len(header) - 1)]
    lines = []
    for row in [header] + rows:
        cells = [
            cell.rjust(widths[i]) if 2 <= i <= 7 else cell.ljust(widths[i])
            for i, cell in enumerate(row[:-1])
        ]
        lines.append("  ".join(cells + [row[-1]]).rstrip())
    aligned = sum(1 for r in data.values() if not r.get("score"))
    lines.append("")
    lines.append(f"{len(data)} nodes, {aligned} aligned, {len(data) - aligned} drifting")
    return "\n".join(lines)


def output(data, **kwargs):  # pylint: disable=unused-argument
    return render(data)
