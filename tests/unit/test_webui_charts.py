"""The drift history chart: an SVG drawn on the server, every point in it, nothing unescaped."""

import re
import xml.etree.ElementTree as ET

from saltext_fleet.webui import charts

SVG = "{http://www.w3.org/2000/svg}"


def points(*scores):
    return [
        {"at": f"2026-11-{10 + i:02d}T12:00:00+00:00", "score": s} for i, s in enumerate(scores)
    ]


def test_one_circle_per_point_scaled_into_the_plot():
    svg = charts.line_chart(points(0, 5, 40, 12))
    root = ET.fromstring(svg)  # well-formed XML
    circles = root.findall(f"{SVG}circle")
    assert len(circles) == 4
    ys = [float(c.get("cy")) for c in circles]
    xs = [float(c.get("cx")) for c in circles]
    assert xs == sorted(xs) and xs[0] == charts.PAD_LEFT
    assert xs[-1] == charts.WIDTH - charts.PAD_RIGHT
    # higher scores are drawn higher (smaller y); 0 sits on the bottom of the plot
    assert ys[2] < ys[3] < ys[1] < ys[0]
    assert ys[0] == charts.HEIGHT - charts.PAD_BOTTOM
    assert ys[2] >= charts.PAD_TOP
    assert [c.find(f"{SVG}title").text.split(": ")[1] for c in circles] == ["0", "5", "40", "12"]
    assert root.find(f"{SVG}polyline").get("points").count(",") == 4


def test_threshold_and_single_point_and_empty():
    svg = charts.line_chart(points(3), threshold=50)
    root = ET.fromstring(svg)
    assert len(root.findall(f"{SVG}circle")) == 1
    assert root.find(f"{SVG}line[@class='threshold']") is not None
    # the axis reaches the threshold even when every point is below it, in round steps
    ticks = [float(t.text) for t in root.findall(f"{SVG}text[@class='tick']")[:5]]
    assert ticks == [0, 15, 30, 45, 60]
    line = root.find(f"{SVG}line[@class='threshold']")
    assert charts.PAD_TOP <= float(line.get("y1")) <= charts.HEIGHT - charts.PAD_BOTTOM
    empty = charts.line_chart([], title="drift <score>")
    assert "no drift &lt;score&gt; yet" in empty and "<circle" not in empty
    ET.fromstring(empty)


def test_text_is_escaped():
    svg = charts.line_chart(points(1, 2), title='"><script>alert(1)</script>')
    assert "<script>" not in svg
    ET.fromstring(svg)
    assert re.search(r"&lt;script&gt;", svg)


def test_axis_tops_are_round():
    assert [charts._nice_max(v) for v in (0, 3, 9, 22, 25, 99, 101, 730, 12_345)] == [
        4,
        4,
        12,
        40,
        40,
        100,
        120,
        800,
        20_000,
    ]
