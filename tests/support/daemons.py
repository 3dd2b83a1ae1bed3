"""Starting and stopping several salt-factories daemons at once.

Each daemon takes seconds to start (it waits for its own start event) and to stop (Salt's
minions finish their shutdown slowly); four minions one after another cost half a minute. The
factories are independent of each other, so threads do them side by side.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor


def _each(factories, action) -> None:
    factories = list(factories)
    if not factories:
        return
    with ThreadPoolExecutor(max_workers=len(factories)) as pool:
        # list(): the first exception is raised here, after every daemon had its turn
        list(pool.map(action, factories))


def start_all(factories) -> None:
    _each(factories, lambda factory: factory.start())


def stop_all(factories) -> None:
    _each(factories, lambda factory: factory.terminate())
