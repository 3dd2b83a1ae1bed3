"""``config.cached``: the ``fleet:`` options parsed once per loader, again when they change."""

import pytest

from saltext_fleet import config


@pytest.fixture
def parses(monkeypatch):
    """Count the calls of ``config.load``."""
    calls = []
    real = config.load

    def counting(opts):
        calls.append(opts)
        return real(opts)

    monkeypatch.setattr(config, "load", counting)
    return calls


def test_a_second_call_does_not_parse_again(parses):
    opts = {"cachedir": "/var/cache/salt/master", "fleet": {"ui": {"port": 8444}}}
    context: dict = {}
    first = config.cached(opts, context)
    again = config.cached(dict(opts), context)  # an equal copy, as Salt's loaders hand out
    assert again is first and first.ui.port == 8444
    assert len(parses) == 1 and config.CONTEXT_KEY in context


@pytest.mark.parametrize(
    "change",
    [
        lambda opts: opts.update(fleet={"ui": {"port": 8445}}),  # a new section
        lambda opts: opts["fleet"]["ui"].update(port=8445),  # the same section, edited in place
        lambda opts: opts.update(cachedir="/srv/cache"),  # where the default database lives
    ],
    ids=["new-section", "edited-in-place", "cachedir"],
)
def test_a_changed_section_is_parsed_again(parses, change):
    opts = {"cachedir": "/var/cache/salt/master", "fleet": {"ui": {"port": 8444}}}
    context: dict = {}
    before = config.cached(opts, context)
    change(opts)
    after = config.cached(opts, context)
    assert len(parses) == 2 and after is not before
    assert after == config.load(opts)
    assert config.cached(opts, context) is after and len(parses) == 3  # (the load just above)


def test_a_bad_section_is_not_kept(parses):
    opts = {"fleet": {"ui": {"port": 0}}}
    context: dict = {}
    for _ in range(2):
        with pytest.raises(config.FleetConfigError, match="fleet:ui:port"):
            config.cached(opts, context)
    assert len(parses) == 2 and config.CONTEXT_KEY not in context
    opts["fleet"]["ui"]["port"] = 8443  # fixed: parsed, then kept
    assert config.cached(opts, context).ui.port == 8443
    assert config.cached(opts, context).ui.port == 8443 and len(parses) == 3


def test_without_a_context_every_call_parses(parses):
    opts = {"fleet": {}}
    assert config.cached(opts, None) == config.cached(opts, None)
    assert len(parses) == 2


def test_a_loader_context_outside_its_loader_parses(parses):
    class OutsideTheLoader:
        """Salt's ``__context__`` proxy in a thread the loader did not start: no value."""

        def get(self, key, default=None):
            return None.get(key, default)

    assert config.cached({"fleet": {}}, OutsideTheLoader()).gate.mode == "enrolment"
    assert len(parses) == 1


def test_each_context_holds_its_own(parses):
    one, other = {}, {}
    assert config.cached({"fleet": {"gate": {"mode": "manual"}}}, one).gate.mode == "manual"
    assert config.cached({"fleet": {}}, other).gate.mode == "enrolment"
    assert config.cached({"fleet": {"gate": {"mode": "manual"}}}, one).gate.mode == "manual"
    assert len(parses) == 2


@pytest.mark.parametrize("adapter", ["returners", "pillar"])
def test_the_adapters_parse_once_per_loader(parses, monkeypatch, adapter):
    module = __import__(f"saltext_fleet.{adapter}.fleet", fromlist=["fleet"])
    opts = {"cachedir": "/var/cache/salt/master", "fleet": {}}
    monkeypatch.setattr(module, "__opts__", opts, raising=False)
    monkeypatch.setattr(module, "__context__", {}, raising=False)
    assert module.__virtual__() == "fleet"
    assert module._cfg() is module._cfg()
    assert len(parses) == 1
