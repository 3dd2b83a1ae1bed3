"""Names and versions that minions report print inert: the ``fleet_drift`` outputter (through
Salt's own outputter loader, as ``salt-run fleet.drift`` calls it) and the log lines."""

from __future__ import annotations

import logging

import pytest
import salt.config
import salt.loader
import salt.output

from saltext_fleet.core import baseline as core_baseline
from saltext_fleet.core import drift as core_drift
from saltext_fleet.core import text as core_text

HOSTILE = "\x1b]0;pwned\x07evil\x1b[2J"


@pytest.mark.parametrize(
    ("raw", "shown"),
    [
        (HOSTILE, "evil"),  # window title (OSC ... BEL) and screen clear (CSI)
        ("a\x1b[31mred\x1b[0m", "ared"),  # colours
        ("\x1b]8;;http://x.invalid\x1b\\link\x1b]8;;\x1b\\", "link"),  # hyperlink (OSC ... ST)
        ("\x9b2Jq", "q"),  # 8-bit CSI
        ("\x1bPdcs\x1b\\ok", "ok"),  # DCS string
        ("tail\x1b", "tail"),  # a lone ESC at the end
        ("two\nlines\tand\rcr\x00\x7f", "two?lines?and?cr??"),
        ("ok\u202eevil", "ok?evil"),  # bidi override
        ("plain-1.2.3+build~1", "plain-1.2.3+build~1"),
        ("ünïcödé 名前", "ünïcödé 名前"),
        (42, "42"),
    ],
)
def test_terminal_safe(raw, shown):
    assert core_text.terminal_safe(raw) == shown


def test_terminal_safe_limit():
    assert core_text.terminal_safe("x" * 50, 10) == "xxxxxxx..."


def _spec(packages):
    return core_baseline.parse({"name": "b", "packages": packages, "facts": {}})


def compute(base, packages):
    return core_drift.CompiledBaseline(base).compute(packages, core_drift.NodeInput({}, None))


@pytest.fixture
def opts(tmp_path):
    opts = salt.config.master_config(None)
    opts.update(cachedir=str(tmp_path), extension_modules=str(tmp_path / "ext"), color=False)
    return opts


def test_drift_table_prints_hostile_names_inert_through_salts_loader(opts):
    base = _spec({"pypi": {"ok": "1.0.0", "gone": "1.0.0"}})
    inventory = {"pypi": {"ok": "2.0.0" + HOSTILE, HOSTILE: "6.6.6\x1b[1m", "p\x07": "1"}}
    data = {
        "node-1": dict(compute(base, inventory), computed_at="now"),
        "node\x1b[2J": dict(compute(base, {"pypi": {}}), computed_at="now", baseline=HOSTILE),
    }
    assert "fleet_drift" in salt.loader.outputters(opts)
    text = salt.output.out_format(data, "fleet_drift", opts)
    assert "\x1b" not in text and "\x07" not in text and "\x9b" not in text
    assert "~pypi/ok 1.0.0->2.0.0evil" in text  # the text stays, its escapes go
    assert "+pypi/evil 6.6.6" in text
    assert "nodes," in text.splitlines()[-1]
    # A result that is not a table (an error message) is inert too.
    error = salt.output.out_format("fleet.drift: no baseline named " + HOSTILE, "fleet_drift", opts)
    assert error == "fleet.drift: no baseline named evil"
    progress = {"suffix": "progress", "event": {"message": "node " + HOSTILE}}
    assert salt.output.out_format(progress, "fleet_drift", opts) == "... node evil"


def test_problem_notes_are_logged_inert(caplog):
    problems = []
    with caplog.at_level(logging.WARNING):
        core_text.note(problems, "pip: bad name " + HOSTILE)
    assert problems == ["pip: bad name evil"]
    assert all("\x1b" not in r.getMessage() for r in caplog.records)
