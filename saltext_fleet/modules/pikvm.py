"""
PiKVM: power, buttons, virtual media and screenshots of a PiKVM's server, through kvmd.

Works two ways, with the same functions:

* on a **proxy minion** of ``proxytype: pikvm`` (:mod:`saltext_fleet.proxy.pikvm`), through
  ``__proxy__``: ``salt pikvm-1 pikvm.power reset_hard``;
* on a **salt-minion running on the PiKVM itself**, talking to kvmd on ``127.0.0.1``. Its
  options come from ``pikvm:`` in the minion config, grains or pillar (``config.get``), as
  :mod:`saltext_fleet.kvm.options` documents them; ``host`` defaults to ``127.0.0.1`` and the
  certificate is pinned to the device's own ``/etc/kvmd/nginx/ssl/server.crt``:

  .. code-block:: yaml

      pikvm:
        user: admin
        password: s3cret

  The module loads on a regular minion only when ``pikvm:`` is set or ``/etc/kvmd`` exists.

The work is done by :mod:`saltext_fleet.kvm.actions` (tested without Salt); every failure is
a ``CommandExecutionError`` naming the device and what failed.

Functions
---------
``pikvm.info``
    The device's ``/api/info`` (versions, platform, health, uptime...).
``pikvm.power <on|off|off_hard|reset_hard> [wait=True]``
    ATX power; kvmd clicks only when the power LED calls for it (``clicked`` in the answer).
``pikvm.click <power|power_long|reset> [wait=True]``
    Press an ATX button.
``pikvm.iso_mount <name> <source> <sha256> [cdrom=True] [overwrite=False] [tmp_dir=...]``
    ``source`` is an absolute path on the minion, a ``file://``, ``http(s)://`` or
    ``salt://`` URL. The image is hashed (a URL streamed into a temporary file first) and
    refused on a SHA-256 mismatch before anything reaches the device; then uploaded, waited
    for, selected (as a CD-ROM unless ``cdrom=False``) and connected.
``pikvm.iso_eject [remove=True]``
    Disconnect the virtual drive and unselect its image (``remove``: delete it too).
``pikvm.snapshot [path=/abs/file.jpg] [allow_offline=True]``
    A JPEG of the server's screen: base64 in the answer, or written to ``path``.
``pikvm.msd_state``
    The virtual drive, the images on the device and any upload in progress.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os

import salt.utils.platform
from salt.exceptions import CommandExecutionError

from saltext_fleet.kvm import actions
from saltext_fleet.kvm.errors import KvmError
from saltext_fleet.kvm.pool import KvmPool

log = logging.getLogger(__name__)

__virtualname__ = "pikvm"
__proxyenabled__ = ["pikvm"]

#: ``__context__`` key of the regular minion's client pool (per options).
_POOL_CONTEXT = "pikvm.local_pool"
#: The folder kvmd's configuration lives in on a PiKVM.
KVMD_ETC = "/etc/kvmd"


def _proxytype():
    """The proxy's type on a proxy minion (or a deltaproxy's sub-proxy), else None."""
    proxy = __opts__.get("proxy")
    return proxy.get("proxytype") if isinstance(proxy, dict) else None


def _is_pikvm_proxy():
    return _proxytype() == "pikvm"


def __virtual__():
    if _proxytype() is not None or salt.utils.platform.is_proxy():
        if _is_pikvm_proxy():
            return __virtualname__
        return (False, "pikvm: this proxy minion is not of proxytype pikvm")
    if __opts__.get("pikvm") or (__pillar__.get("pikvm") if __pillar__ else None):
        return __virtualname__
    if os.path.isdir(KVMD_ETC):
        return __virtualname__
    return (False, "pikvm: not a PiKVM (no pikvm: options and no /etc/kvmd)")


def _local_pool():
    raw = __salt__["config.get"]("pikvm", {}) or {}
    if not isinstance(raw, dict):
        raise CommandExecutionError(f"pikvm: option 'pikvm' must be a dict, got {raw!r}")
    key = hashlib.sha256(json.dumps(raw, sort_keys=True, default=str).encode()).hexdigest()
    held = __context__.get(_POOL_CONTEXT)
    if held is None or held[0] != key:
        options = actions.local_options(raw)
        if held is not None:
            held[1].close()
        held = (key, KvmPool(options))
        __context__[_POOL_CONTEXT] = held
    return held[1]


def _device_name():
    if _is_pikvm_proxy():
        return __proxy__["pikvm.device_id"]()
    return __opts__.get("id")


@contextlib.contextmanager
def _kvm():
    """A client for the device, and kvmd's errors as CommandExecutionError naming it."""
    name = None
    try:
        name = _device_name()
        if _is_pikvm_proxy():
            cm = __proxy__["pikvm.client"]()
        else:
            cm = _local_pool().client()
        with cm as kvm:
            yield kvm
    except KvmError as exc:
        prefix = f"{name}: " if name and name != exc.host else ""
        raise CommandExecutionError(f"{prefix}{exc}") from exc


def info():
    """
    The device's ``/api/info``.

    CLI Example:

    .. code-block:: bash

        salt pikvm-1 pikvm.info
    """
    with _kvm() as kvm:
        return kvm.info()


def power(action, wait=False):
    """
    ATX power: ``on``, ``off`` (soft, like a short press), ``off_hard`` (a long press) or
    ``reset_hard`` (the reset button).

    wait
        Answer when the press is over (a long press takes about 6.5 s).

    CLI Example:

    .. code-block:: bash

        salt pikvm-1 pikvm.power reset_hard
    """
    with _kvm() as kvm:
        return actions.power(kvm, action, wait=wait)


def click(button, wait=False):
    """
    Press an ATX button: ``power``, ``power_long`` or ``reset``.

    CLI Example:

    .. code-block:: bash

        salt pikvm-1 pikvm.click power
    """
    with _kvm() as kvm:
        return actions.click(kvm, button, wait=wait)


def _fetch_salt_url(url, dest):
    return __salt__["cp.get_url"](url, dest)


def iso_mount(
    name,
    source,
    sha256,
    cdrom=True,
    overwrite=False,
    tmp_dir=None,
    image_timeout=30,
    download_timeout=60,
):
    """
    Upload an image to the device and connect it to the server as a virtual drive.

    name
        The image's name on the device (one file name, e.g. ``debian-12.iso``).
    source
        An absolute path on this minion, or a ``file://``, ``http(s)://`` or ``salt://`` URL.
    sha256
        The image's expected SHA-256 (64 hex digits). On a mismatch the image is refused
        before anything reaches the device.
    cdrom
        Present the image as a CD-ROM (default) or, with ``False``, as a flash drive.
    overwrite
        Replace an image of the same name already on the device.
    tmp_dir
        Where a downloaded image is kept until it is uploaded (default: the system's).

    CLI Example:

    .. code-block:: bash

        salt pikvm-1 pikvm.iso_mount debian-12.iso salt://isos/debian-12.iso 'e3b0c4...'
    """
    with _kvm() as kvm:
        return actions.iso_mount(
            kvm,
            name,
            source,
            sha256,
            fetch=_fetch_salt_url,
            tmp_dir=tmp_dir,
            cdrom=cdrom,
            overwrite=overwrite,
            image_timeout=float(image_timeout),
            download_timeout=float(download_timeout),
        )


def iso_eject(remove=False):
    """
    Disconnect the virtual drive from the server and unselect its image.

    remove
        Also delete the image from the device's storage.

    CLI Example:

    .. code-block:: bash

        salt pikvm-1 pikvm.iso_eject
    """
    with _kvm() as kvm:
        return actions.iso_eject(kvm, remove=remove)


def snapshot(path=None, allow_offline=False):
    """
    A JPEG of the server's screen: ``jpeg_base64`` in the answer, or written to ``path``
    (absolute, on this minion) with its size and resolution.

    allow_offline
        Without a video signal return kvmd's "no signal" picture instead of failing.

    CLI Example:

    .. code-block:: bash

        salt pikvm-1 pikvm.snapshot path=/srv/shots/pikvm-1.jpg
    """
    with _kvm() as kvm:
        return actions.snapshot(kvm, path=path, allow_offline=allow_offline)


def msd_state():
    """
    The virtual drive (image, connected, CD-ROM), the images on the device and any upload in
    progress.

    CLI Example:

    .. code-block:: bash

        salt pikvm-1 pikvm.msd_state
    """
    with _kvm() as kvm:
        return actions.msd_state(kvm)
