"""Charts drawn on the server as SVG: no JavaScript library, nothing from a CDN, and the same
picture in a browser, a screenshot or a test.

:func:`line_chart` draws a time series (a node's drift score over time) with its axes, a
few labelled ticks and one circle per point carrying a ``<title>`` (the browser shows it on
hover); :func:`bar_chart` stacked horizontal bars (the packages that drift on the most
nodes, by kind of finding); :func:`column_chart` stacked columns over time (alert deliveries
per hour by status). Everything put into the SVG is escaped.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from html import escape
from typing import Any

WIDTH, HEIGHT = 720, 240
PAD_LEFT, PAD_RIGHT, PAD_TOP, PAD_BOTTOM = 48, 16, 16, 36


def _parse(at: Any) -> dt.datetime:
    if isinstance(at, dt.datetime):
        return at if at.tzinfo else at.replace(tzinfo=dt.timezone.utc)
    parsed = dt.datetime.fromisoformat(str(at))
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=dt.timezone.utc)


def _nice_max(value: float) -> float:
    """The top of the value axis: at least ``value``, and a quarter of it a round number (the
    axis has five labelled lines)."""
    if value <= 0:
        return 4.0
    scale = 1.0
    while value > 100 * scale:
        scale *= 10
    for top in (4, 8, 12, 20, 40, 60, 80, 100):
        if value <= top * scale:
            return float(top * scale)
    return float(value)


def line_chart(
    points: Sequence[dict[str, Any]],
    value: str = "score",
    title: str = "drift score",
    threshold: float | None = None,
) -> str:
    """An SVG line chart of ``points`` (``{"at": ISO time, value: number}``, oldest first).
    With no points, an SVG that says so."""
    head = (
        f'<svg xmlns="http://www.w3.org/2000/svg" class="chart" role="img" '
        f'viewBox="0 0 {WIDTH} {HEIGHT}" width="{WIDTH}" height="{HEIGHT}" '
        f'aria-label="{escape(title)}">'
    )
    if not points:
        return (
            head + f'<text x="{WIDTH / 2}" y="{HEIGHT / 2}" text-anchor="middle" '
            f'class="chart-empty">no {escape(title)} yet</text></svg>'
        )
    times = [_parse(p["at"]) for p in points]
    values = [float(p.get(value) or 0) for p in points]
    t0, t1 = min(times), max(times)
    span = (t1 - t0).total_seconds() or 1.0
    top = _nice_max(max(values + ([threshold] if threshold is not None else [])))
    plot_w = WIDTH - PAD_LEFT - PAD_RIGHT
    plot_h = HEIGHT - PAD_TOP - PAD_BOTTOM

    def x(at: dt.datetime) -> float:
        if len(points) == 1:
            return PAD_LEFT + plot_w / 2
        return PAD_LEFT + plot_w * (at - t0).total_seconds() / span

    def y(v: float) -> float:
        return PAD_TOP + plot_h * (1 - v / top)

    parts = [head, f"<title>{escape(title)}</title>"]
    # axes and horizontal grid lines with labels
    for i in range(5):
        v = top * i / 4
        yy = y(v)
        parts.append(
            f'<line class="grid" x1="{PAD_LEFT}" x2="{WIDTH - PAD_RIGHT}" '
            f'y1="{yy:.1f}" y2="{yy:.1f}"/>'
            f'<text class="tick" x="{PAD_LEFT - 6}" y="{yy + 4:.1f}" '
            f'text-anchor="end">{v:g}</text>'
        )
    for at, anchor in ((t0, "start"), (t1, "end")) if len(points) > 1 else ((t0, "middle"),):
        parts.append(
            f'<text class="tick" x="{x(at):.1f}" y="{HEIGHT - 12}" text-anchor="{anchor}">'
            f"{escape(at.strftime('%Y-%m-%d %H:%M'))}</text>"
        )
    if threshold is not None:
        parts.append(
            f'<line class="threshold" x1="{PAD_LEFT}" x2="{WIDTH - PAD_RIGHT}" '
            f'y1="{y(threshold):.1f}" y2="{y(threshold):.1f}"/>'
        )
    coords = " ".join(f"{x(t):.1f},{y(v):.1f}" for t, v in zip(times, values, strict=True))
    parts.append(f'<polyline class="line" fill="none" points="{coords}"/>')
    for t, v in zip(times, values, strict=True):
        parts.append(
            f'<circle class="point" cx="{x(t):.1f}" cy="{y(v):.1f}" r="3">'
            f"<title>{escape(t.isoformat())}: {v:g}</title></circle>"
        )
    parts.append("</svg>")
    return "".join(parts)


#: Bar chart geometry: label column, one bar row, bar height.
BAR_LABEL_W, BAR_ROW_H, BAR_H = 220, 24, 16


def bar_chart(
    rows: Sequence[dict[str, Any]],
    parts: Sequence[str] = ("missing", "changed", "extra"),
    title: str = "nodes per package",
) -> str:
    """An SVG chart of horizontal stacked bars, one per row (``{"label", part: number}``),
    the parts in the order given (each bar ``<rect class="bar bar-<part>">`` with a
    ``<title>``), and a legend. With no rows, an SVG that says so."""
    height = PAD_TOP + max(1, len(rows)) * BAR_ROW_H + PAD_BOTTOM
    head = (
        f'<svg xmlns="http://www.w3.org/2000/svg" class="chart bar-chart" role="img" '
        f'viewBox="0 0 {WIDTH} {height}" width="{WIDTH}" height="{height}" '
        f'aria-label="{escape(title)}">'
    )
    if not rows:
        return (
            head + f'<text x="{WIDTH / 2}" y="{height / 2}" text-anchor="middle" '
            f'class="chart-empty">no {escape(title)}</text></svg>'
        )
    totals = [sum(float(r.get(p) or 0) for p in parts) for r in rows]
    top = _nice_max(max(totals))
    plot_w = WIDTH - BAR_LABEL_W - PAD_RIGHT
    out = [head, f"<title>{escape(title)}</title>"]
    for i in range(5):
        xx = BAR_LABEL_W + plot_w * i / 4
        out.append(
            f'<line class="grid" x1="{xx:.1f}" x2="{xx:.1f}" y1="{PAD_TOP}" '
            f'y2="{height - PAD_BOTTOM}"/><text class="tick" x="{xx:.1f}" '
            f'y="{height - PAD_BOTTOM + 14}" text-anchor="middle">{top * i / 4:g}</text>'
        )
    for index, row in enumerate(rows):
        y = PAD_TOP + index * BAR_ROW_H + (BAR_ROW_H - BAR_H) / 2
        label = str(row.get("label", ""))
        shown = label if len(label) <= 32 else label[:31] + "…"
        out.append(
            f'<text class="bar-label" x="{BAR_LABEL_W - 8}" y="{y + BAR_H - 4:.1f}" '
            f'text-anchor="end"><title>{escape(label)}</title>{escape(shown)}</text>'
        )
        x = float(BAR_LABEL_W)
        for part in parts:
            value = float(row.get(part) or 0)
            if value <= 0:
                continue
            w = plot_w * value / top
            out.append(
                f'<rect class="bar bar-{escape(part)}" x="{x:.1f}" y="{y:.1f}" '
                f'width="{w:.1f}" height="{BAR_H}"><title>{escape(label)}: {value:g} '
                f"{escape(part)}</title></rect>"
            )
            x += w
    legend_y = height - 10
    x = float(BAR_LABEL_W)
    for part in parts:
        out.append(
            f'<rect class="bar bar-{escape(part)}" x="{x:.1f}" y="{legend_y - 9}" width="10" '
            f'height="10"/><text class="tick" x="{x + 14:.1f}" y="{legend_y}">'
            f"{escape(part)}</text>"
        )
        x += 90
    out.append("</svg>")
    return "".join(out)


def column_chart(
    buckets: Sequence[dict[str, Any]],
    parts: Sequence[str],
    title: str = "per hour",
    label: str = "at",
) -> str:
    """An SVG chart of vertical stacked columns, one per bucket (``{label: text, part:
    number}``, oldest first), the parts stacked in the order given (each piece ``<rect
    class="bar bar-<part>">`` with a ``<title>``), the first, middle and last labels under
    the axis, and a legend. With no bucket holding anything, an SVG that says so."""
    height = HEIGHT
    head = (
        f'<svg xmlns="http://www.w3.org/2000/svg" class="chart column-chart" role="img" '
        f'viewBox="0 0 {WIDTH} {height}" width="{WIDTH}" height="{height}" '
        f'aria-label="{escape(title)}">'
    )
    totals = [sum(float(b.get(p) or 0) for p in parts) for b in buckets]
    if not buckets or not any(totals):
        return (
            head + f'<text x="{WIDTH / 2}" y="{height / 2}" text-anchor="middle" '
            f'class="chart-empty">no {escape(title)}</text></svg>'
        )
    top = _nice_max(max(totals))
    plot_w = WIDTH - PAD_LEFT - PAD_RIGHT
    plot_h = height - PAD_TOP - PAD_BOTTOM - 14  # room for the legend
    base = PAD_TOP + plot_h
    slot = plot_w / len(buckets)
    bar_w = max(1.0, slot * 0.8)
    out = [head, f"<title>{escape(title)}</title>"]
    for i in range(5):
        v = top * i / 4
        yy = base - plot_h * i / 4
        out.append(
            f'<line class="grid" x1="{PAD_LEFT}" x2="{WIDTH - PAD_RIGHT}" '
            f'y1="{yy:.1f}" y2="{yy:.1f}"/><text class="tick" x="{PAD_LEFT - 6}" '
            f'y="{yy + 4:.1f}" text-anchor="end">{v:g}</text>'
        )
    for index, bucket in enumerate(buckets):
        x = PAD_LEFT + index * slot + (slot - bar_w) / 2
        y = float(base)
        name = str(bucket.get(label, ""))
        for part in parts:
            value = float(bucket.get(part) or 0)
            if value <= 0:
                continue
            h = plot_h * value / top
            y -= h
            out.append(
                f'<rect class="bar bar-{escape(part)}" x="{x:.1f}" y="{y:.1f}" '
                f'width="{bar_w:.1f}" height="{h:.1f}"><title>{escape(name)}: {value:g} '
                f"{escape(part)}</title></rect>"
            )
    shown = {0: "start", len(buckets) // 2: "middle", len(buckets) - 1: "end"}
    for index, anchor in sorted(shown.items()):
        x = PAD_LEFT + index * slot + slot / 2
        if anchor == "start":
            x = PAD_LEFT
        elif anchor == "end":
            x = WIDTH - PAD_RIGHT
        out.append(
            f'<text class="tick" x="{x:.1f}" y="{base + 14}" text-anchor="{anchor}">'
            f"{escape(str(buckets[index].get(label, '')))}</text>"
        )
    legend_y = height - 6
    x = float(PAD_LEFT)
    for part in parts:
        out.append(
            f'<rect class="bar bar-{escape(part)}" x="{x:.1f}" y="{legend_y - 9}" width="10" '
            f'height="10"/><text class="tick" x="{x + 14:.1f}" y="{legend_y}">'
            f"{escape(part)}</text>"
        )
        x += 100
    out.append("</svg>")
    return "".join(out)
