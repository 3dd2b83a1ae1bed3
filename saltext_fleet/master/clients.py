"""Salt's clients on the master, one per thread and master configuration.

Making a ``LocalClient`` builds three loaders (utils, execution modules, returners: 20-50 ms
on an idle master, far more in a reactor process whose other threads hold the GIL), and a
``RunnerClient`` builds a ``MasterMinion`` (grains included, with their subprocesses) the
first time it runs anything. The reactor runs the fleet's runners on its thread pool for
every node that starts, so a client made per call cost more than the work it was made for
when a hundred minions started at once. Each thread keeps its own (neither client is
thread-safe). A ``LocalClient`` made with ``listen=False`` (the default) closes its event
subscription at the end of each command, so one kept between commands holds no events.
"""

from __future__ import annotations

import contextlib
import threading

import salt.client
import salt.exceptions
import salt.runner

_HELD = threading.local()


def _ident(opts: dict) -> tuple:
    return (opts.get("conf_file"), opts.get("sock_dir"), opts.get("id"))


def _held(kind: str, opts: dict, make):
    held = getattr(_HELD, "clients", None)
    if held is None:
        held = _HELD.clients = {}
    ident = (kind, *_ident(opts))
    client = held.get(ident)
    if client is None:
        client = held[ident] = make(opts)
    return client


def local(opts: dict) -> contextlib.AbstractContextManager:
    """``with local(opts) as client:`` this thread's ``LocalClient`` for ``opts`` (kept open
    when the block ends; dropped, and made anew next time, when the block raised)."""
    return _Kept("local", opts, lambda o: salt.client.get_local_client(mopts=o))


def runner(opts: dict):
    """This thread's ``RunnerClient`` for ``opts``."""
    return _held("runner", opts, salt.runner.RunnerClient)


class _Kept:
    def __init__(self, kind: str, opts: dict, make) -> None:
        self.kind, self.opts, self.make = kind, opts, make

    def __enter__(self):
        client = _held(self.kind, self.opts, self.make)
        event = getattr(client, "event", None)
        if getattr(event, "cpub", False):
            # Salt's LocalClient closes its subscription at the end of a command it opened it
            # for, but keeps one it found open: a subscription left open (an interrupted
            # command) would never be read again, and the master's event publisher drops a
            # subscriber that reads nothing. Each block starts without one.
            event.close_pub()
        return client

    def __exit__(self, exc_type, exc, tb):
        if exc_type is not None and not issubclass(exc_type, salt.exceptions.SaltException):
            # a client in an unknown state is not kept: the next block makes a new one
            client = _HELD.clients.pop((self.kind, *_ident(self.opts)), None)
            if client is not None:
                with contextlib.suppress(Exception):
                    client.destroy()
        return False
