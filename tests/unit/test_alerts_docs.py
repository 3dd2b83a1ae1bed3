"""The alerting page's configuration example is a configuration that loads."""

import pathlib
import re

import yaml

from saltext_fleet import config

DOC = pathlib.Path(__file__).resolve().parents[2] / "docs" / "alerts.rst"


def test_the_alerting_pages_yaml_example_loads():
    text = DOC.read_text()
    blocks = re.findall(r"\.\. code-block:: yaml\n\n((?:    .*\n|\n)+)", text)
    assert blocks, "no YAML example on the alerting page"
    for block in blocks:
        raw = yaml.safe_load("\n".join(line[4:] for line in block.splitlines()))
        cfg = config.load({"cachedir": "/tmp/x", "pki_dir": "/tmp/x", **raw})
        assert [r.key for r in cfg.alerts.routes] == ["config:oncall", "config:audit-hook"]
        assert cfg.alerts.routes[0].group == "macs" and cfg.alerts.ui_url


def test_the_config_snippet_mentions_alert_routes():
    from saltext_fleet import snippet

    text = snippet.render()
    assert "fleet:alerts:routes" in text and "fleet.alert_secret" in text
    assert snippet.master_snippet()["fleet"]["alerts"]["routes"] == []
