"""Poll many kvmd devices at once: one :class:`~saltext_fleet.kvm.health.Poll` each.

A poll is four requests (``/api/info?fields=health,uptime``, ``/api/atx``, ``/api/hid``,
``/api/msd``) on the device's kept-open connection, so after the first cycle a device costs
its four round trips, not a TLS handshake and a login. Devices are polled by a pool of
threads (the client is synchronous and the work is waiting on sockets), each device by at
most one thread at a time; a device that fails or times out gives a missed poll naming
why, and never delays the others beyond its own timeouts.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor

from saltext_fleet.kvm.client import KvmClient
from saltext_fleet.kvm.errors import KvmError
from saltext_fleet.kvm.health import Poll, missed, summarize
from saltext_fleet.kvm.options import KvmOptions

log = logging.getLogger(__name__)

#: Threads polling at once (devices beyond that wait for a free thread). Measured with
#: bench/kvm.py (200 devices): 16 poll a cycle as fast as 32, and with cycles back to back
#: a console key event through the engine then waits about half as long (p95 6-13 ms
#: instead of 10-58 ms) because fewer threads compete with the engine's event loop for the
#: interpreter. A device that does not answer holds its thread until its timeout.
MAX_WORKERS = 16

INFO_FIELDS = ["health", "uptime"]


def poll_device(client: KvmClient) -> Poll:
    """One poll of the device behind ``client`` (a missed poll when it does not answer)."""
    try:
        return summarize(
            client.info(INFO_FIELDS), client.atx_state(), client.hid_state(), client.msd_state()
        )
    except KvmError as exc:
        client.close()  # the next poll starts on a fresh connection
        return missed(str(exc))


class Poller:
    """Polls devices by name, keeping one client (and its connection) per device between
    cycles; a device whose options changed gets a new client. Close it when done."""

    def __init__(
        self,
        max_workers: int = MAX_WORKERS,
        client_factory: Callable[[KvmOptions], KvmClient] = KvmClient,
    ) -> None:
        self._factory = client_factory
        self._clients: dict[str, KvmClient] = {}
        self._lock = threading.Lock()
        self._pool = ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix="fleet-kvm")

    def _client(self, name: str, options: KvmOptions) -> KvmClient:
        with self._lock:
            client = self._clients.get(name)
            if client is not None and client.options != options:
                client.close()
                client = None
            if client is None:
                client = self._clients[name] = self._factory(options)
            return client

    def _one(self, name: str, options: KvmOptions) -> Poll:
        try:
            return poll_device(self._client(name, options))
        except Exception as exc:  # one device's bug must not stop the cycle (logged)
            log.exception("fleet: polling KVM device %s failed", name)
            return missed(f"kvm {options.host}: poll failed: {type(exc).__name__}: {exc}")

    def poll(self, devices: Mapping[str, KvmOptions]) -> dict[str, Poll]:
        """One cycle: ``{name: Poll}`` for every device of ``devices`` (``{name: options}``).
        Clients of devices no longer given are closed."""
        with self._lock:
            for name in [n for n in self._clients if n not in devices]:
                self._clients.pop(name).close()
        futures = {name: self._pool.submit(self._one, name, opts) for name, opts in devices.items()}
        return {name: future.result() for name, future in futures.items()}

    def close(self) -> None:
        self._pool.shutdown(wait=True)
        with self._lock:
            for client in self._clients.values():
                client.close()
            self._clients.clear()

    def __enter__(self) -> Poller:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
