"""Master opts of a test's own, for Salt's real runner loader (no daemon): the ``fleet``
runners as ``salt-run`` loads them (``salt.loader.runner(opts)``), with every directory
under the test's folder."""

import salt.config


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
