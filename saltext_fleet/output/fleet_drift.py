"""
The table ``salt-run fleet.drift`` prints by default (``--out=json`` gives the data), and the
progress lines of every ``fleet`` runner (with a bar when the event asks for one: ``bar`` true,
and ``done`` and ``total`` counts, as ``fleet.cve_import`` sends).

One line per node, highest score first, with the counts and the first findings::

    NODE        BASELINE   SCORE  MISS  EXTRA  CHANGED  FACTS  PENDING  FINDINGS
    mini-02     macos      14.0      0      1        1      0        -  ~pypi/fleet-alpha 1.0.0->2.1.0 (major) ...
"""

from __future__ import annotations

from saltext_fleet.core.text import terminal_safe

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
    return terminal_safe(text + (f"  (+{more} more)" if more > 0 else ""))


def _score(value) -> str:
    try:
        return f"{float(value or 0):.1f}"
    except (TypeError, ValueError):
        return terminal_safe(value, 16)


#: Width of the progress bar, in cells.
BAR_CELLS = 20


def progress_bar(done, total) -> str:
    """``[##########..........]  52% 1,400/2,661``, or "" when ``done``/``total`` are not
    counts. salt-run prints each progress event on a line of its own (its outputters cannot
    redraw a line), so a long run prints one such bar per event."""
    if isinstance(done, bool) or isinstance(total, bool):
        return ""
    if not isinstance(done, int) or not isinstance(total, int) or total <= 0 or done < 0:
        return ""
    done = min(done, total)
    filled = done * BAR_CELLS // total
    percent = done * 100 // total
    return f"[{'#' * filled}{'.' * (BAR_CELLS - filled)}] {percent:3d}% {done:,}/{total:,}"


def render(data) -> str:
    """The table, as text (pure: used by the outputter and the tests)."""
    if isinstance(data, dict) and data.get("suffix") == "progress":  # salt-run progress events
        event = data.get("event") if isinstance(data.get("event"), dict) else {}
        bar = progress_bar(event.get("done"), event.get("total")) if event.get("bar") else ""
        message = terminal_safe(event.get("message", ""))
        return f"... {bar}  {message}" if bar else f"... {message}"
    if not isinstance(data, dict) or not all(isinstance(v, dict) for v in data.values()):
        # not a drift result (an error message, say): as it is, but inert in a terminal
        return "\n".join(terminal_safe(line) for line in str(data).splitlines())
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
            return terminal_safe(counts[kind] if kind in counts else len(result.get(kind) or ()))

        rows.append(
            (
                terminal_safe(minion),
                terminal_safe(result.get("baseline")),
                _score(result.get("score")),
                count("missing"),
                count("extra"),
                count("changed"),
                count("facts"),
                "-" if pending is None else terminal_safe(pending),
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


def output(data, **kwargs):
    return render(data)
