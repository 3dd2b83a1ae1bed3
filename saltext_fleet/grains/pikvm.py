"""
The PiKVM this salt-minion runs on, as the ``pikvm`` grain.

For a regular salt-minion installed on a PiKVM (the "native" way of putting a PiKVM in Salt;
the other is a proxy minion, :mod:`saltext_fleet.proxy.pikvm`, which reports the same facts
through its own grains). The grain is kvmd's ``/api/info`` on the device, read on
``127.0.0.1`` with the certificate pinned to the device's own
(``/etc/kvmd/nginx/ssl/server.crt``):

.. code-block:: yaml

    pikvm:
      reachable: true
      kvmd_version: "4.197"
      model: v4plus                       # PiKVM model (hw.platform.model)
      board: rpi4
      hardware: Raspberry Pi 4 Model B Rev 1.5
      serial: 10000000abcd0001
      streamer: {app: ustreamer, version: "6.36"}
      platform: {type: rpi, base: ..., serial: ..., model: v4plus, video: hdmi, board: rpi4}
      kernel: {system: Linux, release: 6.6.45-1-rpi, machine: aarch64, ...}
      meta: {server: {host: pikvm-07.lab.example}, ...}
      host: pikvm-07.lab.example
      auth_enabled: true
      extras: [ipmi, janus, vnc, ...]
      api: https://127.0.0.1

Salt's core grains (``os: Arch``, ``kernel``, ``cpuarch``...) are left alone: they describe
the machine Salt manages and pick its package and service modules. When kvmd does not answer
the grain is ``pikvm: {reachable: false, error: "..."}``.

Configuration
-------------

The minion config's ``pikvm:`` (the options :mod:`saltext_fleet.kvm.options` documents; the
``pikvm`` execution module reads the same ones). kvmd needs credentials:

.. code-block:: yaml

    pikvm:
      user: admin
      password: s3cret
      # totp_secret: ...   when 2FA is on (/etc/kvmd/totp.secret)

Not on a PiKVM (no ``pikvm:`` options and no ``/etc/kvmd``) the module reports nothing and
sends nothing: one ``stat``, no network wait. On a PiKVM, kvmd has 1 s to accept the
connection and 3 s to answer (``connect_timeout``/``timeout`` in the options change that).

Requirements
------------

Nothing beyond saltext-fleet. A proxy minion does not load this module.
"""

from __future__ import annotations

import salt.utils.platform

from saltext_fleet.kvm import localgrains

__virtualname__ = "pikvm"


def __virtual__():
    if salt.utils.platform.is_proxy():
        return (False, "pikvm grains: a proxy minion reports its device through its proxy module")
    return __virtualname__


def pikvm():
    """The ``pikvm`` grain (nothing when this host is not a PiKVM)."""
    return localgrains.device_grains(__opts__.get("pikvm"))
