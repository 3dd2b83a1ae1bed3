"""
Proxy minion for one PiKVM (kvmd) device.

:depends: nothing beyond this package (the kvmd client is standard library plus ``pyotp``).

The proxy talks to the device's kvmd over HTTPS (:mod:`saltext_fleet.kvm.client`); the
``pikvm`` execution module (``pikvm.power``, ``pikvm.iso_mount``...) works through it. The
device's ``/api/info`` becomes grains: everything under ``pikvm``, plus ``os: PiKVM``,
``osrelease`` (the kvmd version), ``kernelrelease``, ``cpuarch``, ``serialnumber``,
``productname`` and ``model`` describing the device.

Configuration
-------------
The proxy's pillar (or the proxy's config file) holds a ``proxy:`` dict: ``proxytype:
pikvm`` and the device's options as :mod:`saltext_fleet.kvm.options` documents them. When
both have one, the config file's keys win over the pillar's.

.. code-block:: yaml

    proxy:
      proxytype: pikvm
      host: pikvm-1.lab.example
      user: admin
      password: s3cret
      fingerprint: "6A:1F:...:9C"   # openssl x509 -in /etc/kvmd/nginx/ssl/server.crt -noout -fingerprint -sha256

A bad option stops ``init`` with an error naming the device and the option. An unreachable
device does not: the proxy starts, ``pikvm.alive`` says False, Salt's keepalive
(``status.proxy_reconnect``) retries, and the grains say ``pikvm:reachable: False``.

Many devices in one process (deltaproxy)
----------------------------------------
Everything this module keeps for a device lives in ``__context__["pikvm"]``: Salt's
deltaproxy gives each sub-proxy its own ``__context__`` (``{"proxy_id": <id>}``, shared by
that sub-proxy's proxy and execution modules), and a plain salt-proxy has one per process.
Nothing is kept in module globals.
"""

from __future__ import annotations

import logging

from saltext_fleet.kvm import actions
from saltext_fleet.kvm.errors import KvmError
from saltext_fleet.kvm.pool import KvmPool

log = logging.getLogger(__name__)

__proxyenabled__ = ["pikvm"]
__virtualname__ = "pikvm"

#: ``__context__`` key of this device's state.
CONTEXT_KEY = "pikvm"


def __virtual__():
    return __virtualname__


def _device():
    device = __context__.get(CONTEXT_KEY)
    if not device or not device.get("initialized"):
        raise KvmError(str(__opts__.get("id", "?")), "pikvm proxy: not initialized")
    return device


def _raw_options(opts):
    """The device's options: the pillar's ``proxy:`` under the config file's ``proxy:``."""
    merged = dict((opts.get("pillar") or {}).get("proxy") or {})
    merged.update(opts.get("proxy") or {})
    merged.pop("ids", None)  # a deltaproxy's list of sub-proxies, not a device option
    return merged


def init(opts):
    """Check the device's options and make its client pool; warm a session when the device
    answers (a forked job then reuses it instead of logging in again)."""
    minion_id = opts.get("id")
    try:
        options = actions.proxy_options(_raw_options(opts))
    except KvmError as exc:
        log.error("pikvm proxy %s: %s", minion_id, exc)
        raise
    pool = KvmPool(options)
    __context__[CONTEXT_KEY] = {
        "id": minion_id,
        "options": options,
        "pool": pool,
        "initialized": True,
        "grains": None,
    }
    try:
        with pool.client() as kvm:
            kvm.auth_check()
    except KvmError as exc:
        log.warning("pikvm proxy %s: device not reachable yet: %s", minion_id, exc)
    return True


def initialized():
    """Whether ``init`` has run for this device."""
    return bool((__context__.get(CONTEXT_KEY) or {}).get("initialized"))


def shutdown(opts):  # pylint: disable=unused-argument
    """Close the device's connections (kvmd keeps the session: a later ``init`` is cheap)."""
    device = __context__.pop(CONTEXT_KEY, None)
    if device:
        device["pool"].close()
    return True


def client():
    """A context manager giving a :class:`~saltext_fleet.kvm.client.KvmClient` for this
    device; for the ``pikvm`` execution module."""
    return _device()["pool"].client()


def device_id():
    """This proxy's minion id (the name errors use)."""
    return _device()["id"]


def ping():
    """True when the device answers with our credentials (``/api/auth/check``)."""
    try:
        with client() as kvm:
            kvm.auth_check()
    except KvmError as exc:
        log.info("pikvm proxy %s: ping failed: %s", __opts__.get("id"), exc)
        return False
    return True


def alive(opts):  # pylint: disable=unused-argument
    """For Salt's keepalive (``status.proxy_reconnect``): the same check as ``ping``."""
    if not initialized():
        return False
    return ping()


def grains():
    """The device's ``/api/info`` as grains; the last known ones (with ``reachable: False``)
    when it does not answer."""
    device = _device()
    try:
        with device["pool"].client() as kvm:
            info = kvm.info()
    except KvmError as exc:
        log.warning("pikvm proxy %s: grains: %s", device["id"], exc)
        last = dict(device.get("grains") or {})
        pikvm = dict(last.get("pikvm") or {})
        pikvm.update({"reachable": False, "error": str(exc)})
        last["pikvm"] = pikvm
        return last
    found = actions.info_grains(info, device["options"])
    found["pikvm"]["reachable"] = True
    device["grains"] = found
    return found


def grains_refresh():
    """Read the device's info again."""
    return grains()
