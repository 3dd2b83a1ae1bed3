"""A few :class:`~saltext_fleet.kvm.client.KvmClient` for one device, shared by threads.

A client is not thread-safe, and a Salt minion runs jobs in threads (or, with
``multiprocessing``, in forked processes). A pool hands each job a client of its own for the
length of a ``with`` block and keeps up to ``max_idle`` of them, with their kvmd sessions, for
the next jobs: a device sees one login per concurrent job, not one per job.

After a ``fork()`` the child's copy of the pool drops the parent's connections without
closing them (the parent still uses those sockets) and keeps the session tokens, so a forked
job does not open a new kvmd session either (:meth:`KvmClient.detach`).

.. code-block:: python

    pool = KvmPool(load_options({...}))
    with pool.client() as kvm:
        kvm.atx_power("on")
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Callable, Iterator

from saltext_fleet.kvm.client import KvmClient
from saltext_fleet.kvm.options import KvmOptions


class KvmPool:
    """Clients for one device; see the module docstring."""

    def __init__(
        self,
        options: KvmOptions,
        max_idle: int = 2,
        factory: Callable[[KvmOptions], KvmClient] = KvmClient,
    ) -> None:
        self.options = options
        self.max_idle = max_idle
        self._factory = factory
        self._idle: list[KvmClient] = []
        self._lock = threading.Lock()
        self._pid = os.getpid()
        self.created = 0

    def _after_fork(self) -> None:
        """In a forked child: new lock, the parent's connections forgotten, tokens kept."""
        if os.getpid() == self._pid:
            return
        self._lock = threading.Lock()
        self._pid = os.getpid()
        for client in self._idle:
            client.detach()

    def acquire(self) -> KvmClient:
        """An idle client, or a new one. Give it back with :meth:`release`."""
        self._after_fork()
        with self._lock:
            if self._idle:
                return self._idle.pop()
            self.created += 1
        return self._factory(self.options)

    def release(self, client: KvmClient) -> None:
        """Keep ``client`` for the next job, or close it when ``max_idle`` are kept."""
        self._after_fork()
        with self._lock:
            if len(self._idle) < self.max_idle:
                self._idle.append(client)
                return
        client.close()

    @contextlib.contextmanager
    def client(self) -> Iterator[KvmClient]:
        """A client for the length of the block."""
        kvm = self.acquire()
        try:
            yield kvm
        finally:
            self.release(kvm)

    def close(self) -> None:
        """Close every idle client (a client in use is closed when it is released)."""
        self._after_fork()
        with self._lock:
            idle, self._idle = self._idle, []
            self.max_idle = 0
        for kvm in idle:
            kvm.close()
