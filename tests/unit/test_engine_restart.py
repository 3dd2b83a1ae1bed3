"""The ``fleet`` engine logs a crash with its reason and starts the server again."""

import contextlib
import logging

from saltext_fleet.engines import fleet as engine
from saltext_fleet.webui import server


@contextlib.contextmanager
def logged():
    """The engine's log records (without pytest's caplog, which the suite may turn off)."""
    records = []
    handler = logging.Handler(logging.ERROR)
    handler.emit = records.append
    logger = logging.getLogger(engine.__name__)
    logger.addHandler(handler)
    try:
        yield records
    finally:
        logger.removeHandler(handler)


def test_a_crash_is_logged_and_the_server_comes_back(monkeypatch):
    calls = []

    async def serve(opts):
        calls.append(opts)
        if len(calls) < 3:
            raise RuntimeError(f"boom {len(calls)}")

    pauses = []
    monkeypatch.setattr(server, "serve", serve)
    monkeypatch.setattr(engine.time, "sleep", pauses.append)
    monkeypatch.setattr(engine, "__opts__", {"cachedir": "/tmp"}, raising=False)
    monkeypatch.setattr(engine, "__context__", {}, raising=False)
    with logged() as records:
        engine.start()
    assert len(calls) == 3  # crashed twice, then served until it was stopped
    messages = [r.getMessage() for r in records]
    assert any("RuntimeError: boom 1" in m for m in messages)
    assert any("RuntimeError: boom 2" in m for m in messages)
    assert pauses == [engine.RESTART_MIN, engine.RESTART_MIN * 2]


def test_a_configuration_error_is_named_and_retried_slowly(monkeypatch):
    seen = []

    async def serve(opts):
        seen.append(opts)

    monkeypatch.setattr(server, "serve", serve)
    pauses = []

    def sleep(seconds):
        pauses.append(seconds)
        engine.__opts__["fleet"] = {"ui": {"port": 8443}}  # the admin fixes the option

    monkeypatch.setattr(engine.time, "sleep", sleep)
    monkeypatch.setattr(
        engine, "__opts__", {"cachedir": "/tmp", "fleet": {"ui": {"port": 0}}}, raising=False
    )
    monkeypatch.setattr(engine, "__context__", {}, raising=False)
    with logged() as records:
        engine.start()
    assert any("fleet:ui:port" in r.getMessage() for r in records)
    assert pauses == [engine.RESTART_MAX] and len(seen) == 1
