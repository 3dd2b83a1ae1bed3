"""The fleet drift chart: stacked bars drawn on the server, every part in it, nothing
unescaped."""

import xml.etree.ElementTree as ET

from saltext_fleet.webui import charts

SVG = "{http://www.w3.org/2000/svg}"


def test_one_stacked_bar_per_row_scaled_to_the_largest():
    rows = [
        {"label": "pypi/requests", "missing": 0, "changed": 30, "extra": 0},
        {"label": "deb/<script>", "missing": 5, "changed": 5, "extra": 5},
    ]
    svg = charts.bar_chart(rows)
    assert "<script>" not in svg
    root = ET.fromstring(svg)
    bars = [r for r in root.findall(f"{SVG}rect") if r.find(f"{SVG}title") is not None]
    assert [b.get("class") for b in bars] == [
        "bar bar-changed",
        "bar bar-missing",
        "bar bar-changed",
        "bar bar-extra",
    ]
    widths = [float(b.get("width")) for b in bars]
    # 30 nodes on a 40-node axis; the second row's three parts together are half as long
    plot = charts.WIDTH - charts.BAR_LABEL_W - charts.PAD_RIGHT
    assert abs(widths[0] - plot * 30 / 40) < 0.2
    assert abs(sum(widths[1:]) - widths[0] / 2) < 0.3
    assert float(bars[2].get("x")) > float(bars[1].get("x"))  # stacked, left to right
    labels = [t.find(f"{SVG}title").text for t in root.findall(f"{SVG}text[@class='bar-label']")]
    assert labels == ["pypi/requests", "deb/<script>"]


def test_no_rows_says_so():
    root = ET.fromstring(charts.bar_chart([], title="drifting packages"))
    assert root.find(f"{SVG}text").text == "no drifting packages"
