"""Grains of the PiKVM a salt-minion runs on (the ``pikvm`` grains module's work, no Salt).

A regular salt-minion on a PiKVM reports the device it runs on as the ``pikvm`` grain: kvmd's
``/api/info`` on ``127.0.0.1`` read through :func:`~saltext_fleet.kvm.actions.local_options`
(certificate pinned to the device's own) and shaped by
:func:`~saltext_fleet.kvm.actions.info_grains`. Only the ``pikvm`` key is reported: the
minion's core grains (``os: Arch``, ``kernel``, ``cpuarch``...) describe the machine Salt
manages and stay as Salt found them (a proxy minion, which has none, gets the top-level ones).

Grains run at every minion start and refresh on every host, so on anything that is not a
PiKVM this costs one ``stat``: without ``pikvm:`` options in the minion config and without
``/etc/kvmd``, nothing is sent anywhere and no grain is reported. On a PiKVM the request is
bounded by short timeouts (:data:`CONNECT_TIMEOUT_S`, :data:`TIMEOUT_S`, unless the options
set their own); a kvmd that does not answer gives ``pikvm: {reachable: false, error: ...}``,
never an exception.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from typing import Any

from saltext_fleet.kvm import actions
from saltext_fleet.kvm.client import KvmClient
from saltext_fleet.kvm.errors import KvmError

log = logging.getLogger(__name__)

#: The folder kvmd's configuration lives in on a PiKVM.
KVMD_ETC = "/etc/kvmd"
#: Seconds for the TCP connect and TLS handshake to kvmd on loopback (it answers in ms).
CONNECT_TIMEOUT_S = 1.0
#: Seconds for kvmd's answer.
TIMEOUT_S = 3.0


def on_pikvm(raw: Any, kvmd_etc: str = KVMD_ETC) -> bool:
    """Whether to ask kvmd at all: ``pikvm:`` options are set or ``kvmd_etc`` exists."""
    return bool(raw) or os.path.isdir(kvmd_etc)


def device_grains(
    raw: Any,
    kvmd_etc: str = KVMD_ETC,
    cert_file: str = actions.DEVICE_CERT,
) -> dict:
    """``{"pikvm": {...}}`` for the PiKVM this runs on, ``{}`` when it is not one.

    ``raw`` is the minion's ``pikvm:`` options (:mod:`saltext_fleet.kvm.options`; ``host``
    defaults to ``127.0.0.1``). ``pikvm:reachable`` says whether kvmd answered; when it did
    not, ``pikvm:error`` says why (bad options, refused credentials, a timeout).
    """
    if not on_pikvm(raw, kvmd_etc):
        return {}
    if raw is not None and not isinstance(raw, Mapping):
        return _unreachable(f"option 'pikvm' must be a dict, got {type(raw).__name__}")
    options = dict(raw or {})
    options.setdefault("connect_timeout", CONNECT_TIMEOUT_S)
    options.setdefault("timeout", TIMEOUT_S)
    try:
        kvm_options = actions.local_options(options, cert_file=cert_file)
        with KvmClient(kvm_options) as kvm:
            info = kvm.info()
    except KvmError as exc:
        log.info("pikvm grains: kvmd did not answer: %s", exc)
        return _unreachable(str(exc))
    found = actions.info_grains(info, kvm_options)["pikvm"]
    platform = found.get("platform") or {}
    # the device's identity at the top of the grain, where a targeting expression finds it
    found.update(
        {
            "reachable": True,
            "model": platform.get("model"),
            "serial": platform.get("serial"),
            "board": platform.get("board"),
            "hardware": platform.get("base"),
        }
    )
    return {"pikvm": {k: v for k, v in found.items() if v is not None}}


def _unreachable(error: str) -> dict:
    return {"pikvm": {"reachable": False, "error": error}}
