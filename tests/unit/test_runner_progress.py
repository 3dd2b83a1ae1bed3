"""``fleet._progress``: a runner's progress goes to the bus always, to the screen only for a
person (``salt-run`` with its default outputter)."""

import pytest
import salt.utils.event

from saltext_fleet.output import fleet_drift as drift_output
from saltext_fleet.runners import fleet as fleet_runner


class Bus:
    def __init__(self):
        self.fired = []

    def fire_event(self, data, tag):
        self.fired.append((tag, data))
        return True


class JidEvent(salt.utils.event.NamespacedEvent):
    """Salt's own NamespacedEvent (what salt-run injects), on a bus that records."""

    def __init__(self):
        self.printed = []
        super().__init__(Bus(), "salt/run/20261205060000000001", print_func=self._print)

    def _print(self, suffix, data):
        self.printed.append((suffix, data))


@pytest.fixture
def jid_event(monkeypatch):
    event = JidEvent()
    monkeypatch.setattr(fleet_runner, "__jid_event__", event, raising=False)
    return event


@pytest.mark.parametrize("output", [None, "fleet_drift"])
def test_a_person_sees_the_progress(monkeypatch, jid_event, output):
    monkeypatch.setattr(fleet_runner, "__opts__", {"output": output}, raising=False)
    fleet_runner._progress("computing drift of 2 nodes", 0, 2)
    data = {
        "message": "computing drift of 2 nodes",
        "outputter": "fleet_drift",
        "done": 0,
        "total": 2,
    }
    assert jid_event.event.fired == [("salt/run/20261205060000000001/progress", data)]
    assert jid_event.printed == [("progress", data)]


@pytest.mark.parametrize("output", ["json", "yaml", "txt", "nested"])
def test_a_script_gets_the_result_alone_and_the_bus_the_progress(monkeypatch, jid_event, output):
    monkeypatch.setattr(fleet_runner, "__opts__", {"output": output}, raising=False)
    fleet_runner._progress("re-encrypted 7 of 7", 7, 7)
    ((tag, data),) = jid_event.event.fired
    assert tag == "salt/run/20261205060000000001/progress"
    assert data["message"] == "re-encrypted 7 of 7" and data["done"] == data["total"] == 7
    assert jid_event.printed == []


def test_no_jid_event_no_progress_and_no_error(monkeypatch):
    """Called from Python with no Salt runner around it (the web UI's own calls, the tests)."""
    monkeypatch.delattr(fleet_runner, "__jid_event__", raising=False)
    fleet_runner._progress("nothing to see")


def test_a_bar_only_when_the_event_asks_for_one(monkeypatch, jid_event):
    """``fleet.cve_import`` asks for a text bar (salt-run prints each event on its own line:
    no outputter can redraw one); drift's lines stay as they were."""
    monkeypatch.setattr(fleet_runner, "__opts__", {"output": None}, raising=False)
    fleet_runner._progress("imported 1,400 of about 2,661", 1400, 2661, bar=True)
    fleet_runner._progress("computing drift of 2 nodes", 0, 2)
    (_, with_bar), (_, without) = jid_event.printed
    assert with_bar["bar"] is True and "bar" not in without
    render = drift_output.render
    assert render({"suffix": "progress", "event": with_bar}) == (
        "... [##########..........]  52% 1,400/2,661  imported 1,400 of about 2,661"
    )
    assert render({"suffix": "progress", "event": without}) == "... computing drift of 2 nodes"
    for done, total in ((None, 5), (3, 0), ("3", 5), (True, 5), (-1, 5)):
        assert drift_output.progress_bar(done, total) == ""
    assert drift_output.progress_bar(9, 5) == "[####################] 100% 5/5"
