"""Master opts of a test's own, for Salt's real runner loader (no daemon): the ``fleet``
runners as ``salt-run`` loads them (``salt.loader.runner(opts)``), with every directory
under the test's folder."""

import contextlib

import salt.config
import salt.utils.event


def master_opts(root, db_url, fleet=None, **extra) -> dict:
    """Master opts whose cache, pki and socket directories are under ``root``, with
    ``fleet: {db_url: ..., **fleet}`` and ``extra`` options on top."""
    opts = salt.config.master_config(None)
    opts.update(
        {
            "cachedir": str(root / "cache"),
            "pki_dir": str(root / "pki"),
            "sock_dir": str(root / "sock"),
            "fleet": {"db_url": db_url, **(fleet or {})},
            **extra,
        }
    )
    return opts


def master_bus(monkeypatch) -> list:
    """What the runners fire on the master's event bus from now on: ``[(tag, data)]`` in
    order (Salt's ``get_master_event`` gives them a bus that records and accepts)."""
    events = []

    class Bus:
        def fire_event(self, data, tag):
            events.append((tag, data))
            return True

    monkeypatch.setattr(
        salt.utils.event, "get_master_event", lambda *a, **k: contextlib.nullcontext(Bus())
    )
    return events
