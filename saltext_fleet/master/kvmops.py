"""The master's actions on registered PiKVM devices, rate-limited per device and audited:
power, ATX clicks, mounting an image of the master's ISO library, ejecting, and the library
itself (``salt-run fleet.kvm_power``, ``fleet.kvm_iso_mount``, ``fleet.iso_add`` ... and the
web UI's buttons, which run those runners).

Each action, in order: its arguments checked (nothing is sent, nothing audited, for a bad
one); the device's options read from the registry (credentials decrypted by the master's
vault); the device's slot for the action taken (:mod:`saltext_fleet.store.kvm_actions`: a
power action at most every ``fleet:kvm:power_interval`` seconds, one ISO mount or eject at a
time), or refused with a :class:`~saltext_fleet.kvm.errors.KvmRateLimitError` that says who
holds it and when to retry; the action done through
:mod:`saltext_fleet.kvm.actions`; an ISO slot given back. Every action that got past its
argument checks is an audit event ``kvm.<action>`` on the device with who asked, the action
and its ``result``: ``ok``, ``refused`` (the rate limit, with its message) or ``failed``
(the error). A long upload renews its hold as it goes and reports its progress (to the
runner's progress events, and in the slot's row for the device's page).
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import time
import urllib.parse
from collections.abc import Callable
from typing import Any

from saltext_fleet import config
from saltext_fleet.core import secrets as core_secrets
from saltext_fleet.kvm import actions, library, limits
from saltext_fleet.kvm.client import ATX_BUTTONS, ATX_POWER_ACTIONS, KvmClient
from saltext_fleet.kvm.errors import KvmError, KvmRateLimitError
from saltext_fleet.kvm.options import KvmOptions
from saltext_fleet.store import audit as store_audit
from saltext_fleet.store import kvm as store_kvm
from saltext_fleet.store import kvm_actions as store_actions
from saltext_fleet.store.models import utcnow

log = logging.getLogger(__name__)

#: How often (seconds) an upload renews its hold and records its progress in the store.
RENEW_EVERY = 2.0
#: How often (seconds) an upload reports its progress to the caller at most.
PROGRESS_EVERY = 5.0

Progress = Callable[[str, int | None, int | None], None]


class KvmActionError(KvmError):
    """An action on a registered device failed at the device; the message names the device,
    the action and what the device (or the connection) said."""


def _quiet(_message: str, _done: int | None = None, _total: int | None = None) -> None:
    return None


class KvmActions:
    """The actions of one actor (``ui:alice``, ``user:root``) on the registered devices.

    ``engine`` and ``vault`` are the store's and the master's; ``settings`` is
    ``fleet:kvm``; ``client_factory`` makes a :class:`KvmClient` from a device's options
    (tests give the fake kvmd's); ``clock`` is now (UTC); ``progress(message, done, total)``
    hears how a long action goes.
    """

    def __init__(
        self,
        engine,
        vault: core_secrets.Vault,
        settings: config.KvmConfig,
        actor: str,
        client_factory: Callable[[KvmOptions], KvmClient] = KvmClient,
        clock: Callable[[], dt.datetime] = utcnow,
        progress: Progress | None = None,
    ) -> None:
        self.engine = engine
        self.vault = vault
        self.settings = settings
        self.actor = actor
        self.client_factory = client_factory
        self.clock = clock
        self.progress = progress or _quiet

    # -- helpers ---------------------------------------------------------------------------

    @property
    def library_dir(self) -> str:
        return self.settings.iso_dir or config.default_iso_dir({})

    def _audit(self, action: str, target: str, details: dict[str, Any]) -> None:
        store_audit.record(self.engine, self.actor, action, target, details)

    def _options(self, device: str) -> KvmOptions:
        with self.engine.connect() as conn:
            return store_kvm.device_options(conn, self.vault, [device])[device]

    def _take(
        self,
        device: str,
        action: str,
        details: dict[str, Any],
        label: str | None = None,
        **extra: Any,
    ) -> str:
        kind = limits.slot_of(action)
        hold = (
            self.settings.power_interval if kind == limits.POWER else self.settings.iso_stale_after
        )
        try:
            return store_actions.take(
                self.engine,
                device,
                action,
                self.actor,
                hold,
                now=self.clock(),
                interval=self.settings.power_interval,
                label=label,
                **extra,
            )
        except KvmRateLimitError as exc:
            self._audit(
                f"kvm.{action}", device, {**details, "result": "refused", "error": exc.what}
            )
            raise

    def _run(self, device: str, action: str, details: dict[str, Any], work: Callable[[], dict]):
        """``work()`` audited as ``kvm.<action>`` on ``device`` (ok, or failed with why)."""
        try:
            result = work()
        except (KvmError, OSError) as exc:  # the device, or the image file on the master
            self._audit(f"kvm.{action}", device, {**details, "result": "failed", "error": str(exc)})
            raise KvmActionError(device, f"{action}: {exc}") from exc
        except Exception as exc:
            self._audit(
                f"kvm.{action}",
                device,
                {**details, "result": "failed", "error": f"{type(exc).__name__}: {exc}"},
            )
            raise
        self._audit(f"kvm.{action}", device, {**details, "result": "ok"})
        return result

    # -- power -----------------------------------------------------------------------------

    def power(self, device: str, action: Any, wait: bool = False) -> dict:
        """ATX power ``on``/``off``/``off_hard``/``reset_hard`` (``True``/``False``: on/off)."""
        device = store_kvm.check_name(device)
        if isinstance(action, bool):
            action = "on" if action else "off"
        action = actions.check_choice(device, "power action", action, ATX_POWER_ACTIONS)
        options = self._options(device)
        details = {"action": action}
        self._take(device, "power", details, label=f"power {action}")

        def work() -> dict:
            with self.client_factory(options) as kvm:
                return actions.power(kvm, action, wait=wait)

        return {"device": device, **self._run(device, "power", details, work)}

    def click(self, device: str, button: Any, wait: bool = False) -> dict:
        """Press an ATX button (``power``, ``power_long``, ``reset``): a power action too."""
        device = store_kvm.check_name(device)
        button = actions.check_choice(device, "button", button, ATX_BUTTONS)
        options = self._options(device)
        details = {"button": button}
        self._take(device, "click", details, label=f"click {button}")

        def work() -> dict:
            with self.client_factory(options) as kvm:
                return actions.click(kvm, button, wait=wait)

        return {"device": device, **self._run(device, "click", details, work)}

    # -- virtual media ---------------------------------------------------------------------

    def take_media(self, device: str, iso: str) -> str:
        """Take ``device``'s ISO slot now for mounting the library image ``iso`` (the web UI
        does, so that a refusal is its answer); the token to pass as ``hold`` to
        :meth:`iso_mount`. A refusal is audited."""
        device = store_kvm.check_name(device)
        found = self.library_image(iso)
        with self.engine.connect() as conn:
            store_kvm.device(conn, device)  # not registered: KvmStoreError
        details = {"iso": found["name"], "sha256": found["sha256"]}
        return self._take(
            device, "iso_mount", details, image=found["name"], total_bytes=found["size"]
        )

    def release_media(self, device: str, token: str) -> bool:
        """Give back an ISO slot taken by :meth:`take_media` whose mount never started."""
        return store_actions.release(self.engine, device, limits.MEDIA, token)

    def library_image(self, iso: Any) -> dict:
        """The library image ``iso`` (its row), its file present."""
        name = library.check_name(iso)
        with self.engine.connect() as conn:
            found = store_actions.iso(conn, name)
        path = library.path_of(self.library_dir, name)
        if not os.path.isfile(path):
            raise library.IsoLibraryError(
                f"ISO library: image {name!r} is recorded but its file {path} is missing on "
                "this master (added on another master? add it here too)"
            )
        return {**found, "path": path}

    def iso_mount(
        self,
        device: str,
        iso: Any,
        cdrom: bool = True,
        overwrite: bool = True,
        hold: str | None = None,
    ) -> dict:
        """Upload the library image ``iso`` to ``device`` (checked again against its SHA-256
        first, so a library file that changed on disk is refused before a byte is sent) and
        connect it; ``overwrite`` replaces an image of that name already on the device.
        ``hold``: the token of a slot :meth:`take_media` took for this mount."""
        device = store_kvm.check_name(device)
        found = self.library_image(iso)
        options = self._options(device)
        details = {"iso": found["name"], "sha256": found["sha256"]}
        if hold is None:
            token = self._take(
                device, "iso_mount", details, image=found["name"], total_bytes=found["size"]
            )
        else:
            token = str(hold)
            if not self._renew(device, token, 0):
                self._audit(
                    "kvm.iso_mount",
                    device,
                    {**details, "result": "refused", "error": "its hold was lost"},
                )
                raise KvmRateLimitError(
                    device,
                    "iso_mount: the hold taken for it is not held any more (it lapsed, or "
                    "another ISO action took the device); try again",
                    limits.MEDIA,
                )
        report = self._upload_progress(device, found["name"], token)
        try:

            def work() -> dict:
                with self.client_factory(options) as kvm:
                    return actions.iso_mount(
                        kvm,
                        found["name"],
                        found["path"],
                        found["sha256"],
                        cdrom=bool(cdrom),
                        overwrite=bool(overwrite),
                        progress=report,
                    )

            result = self._run(device, "iso_mount", details, work)
        finally:
            store_actions.release(self.engine, device, limits.MEDIA, token)
        self.progress(f"{found['name']} mounted on {device}", found["size"], found["size"])
        return {"device": device, **result}

    def _renew(self, device: str, token: str, done: int) -> bool:
        return store_actions.renew(
            self.engine,
            device,
            limits.MEDIA,
            token,
            self.settings.iso_stale_after,
            now=self.clock(),
            done_bytes=done,
        )

    def _upload_progress(self, device: str, name: str, token: str) -> Callable[[int, int], None]:
        last = {"renewed": 0.0, "reported": 0.0}

        def report(done: int, total: int) -> None:
            now = time.monotonic()
            if done >= total or now - last["renewed"] >= RENEW_EVERY:
                last["renewed"] = now
                if not self._renew(device, token, done):
                    log.warning(
                        "fleet: the ISO hold of %s lapsed during its upload of %s", device, name
                    )
            if done >= total or now - last["reported"] >= PROGRESS_EVERY:
                last["reported"] = now
                self.progress(
                    f"uploading {name} to {device}: {_mib(done)} of {_mib(total)} MiB",
                    done,
                    total,
                )

        return report

    def iso_eject(self, device: str, remove: bool = False) -> dict:
        """Disconnect ``device``'s virtual drive and unselect its image (``remove``: delete
        it from the device too). Takes the ISO slot: not while an upload runs."""
        device = store_kvm.check_name(device)
        options = self._options(device)
        details = {"remove": bool(remove)}
        token = self._take(device, "iso_eject", details)
        try:

            def work() -> dict:
                with self.client_factory(options) as kvm:
                    return actions.iso_eject(kvm, remove=bool(remove))

            result = self._run(device, "iso_eject", details, work)
        finally:
            store_actions.release(self.engine, device, limits.MEDIA, token)
        return {"device": device, **result}

    # -- the library -----------------------------------------------------------------------

    def iso_add(self, source: Any, sha256: Any, name: Any = None, overwrite: bool = False) -> dict:
        """Copy ``source`` (a path on the master, ``file://``, ``http(s)://``) into the
        library as ``name`` (default: the source's file name), checked against ``sha256``
        while copied: on a mismatch nothing is kept."""
        library.source_kind(source)
        name = library.default_name(source) if name in (None, "") else library.check_name(name)
        expected = library.check_sha256(sha256)
        with self.engine.connect() as conn:
            taken = name in {row["name"] for row in store_actions.isos(conn)}
        if taken and not overwrite:  # before copying gigabytes; the insert checks again
            raise library.IsoLibraryError(
                f"ISO library: an image named {name!r} is already there; overwrite=True replaces it"
            )
        last = {"at": 0.0}

        def copied(done: int, total: int | None) -> None:
            now = time.monotonic()
            if now - last["at"] >= PROGRESS_EVERY or (total and done >= total):
                last["at"] = now
                of = f" of {_mib(total)}" if total else ""
                self.progress(f"copying {name} into the library: {_mib(done)}{of} MiB", done, total)

        details = {"source": _shown_source(source), "sha256": expected}
        try:
            temp, size = library.copy_in(source, self.library_dir, name, expected, copied)
        except library.IsoMismatchError as exc:
            self._audit("kvm.iso_add", name, {**details, "result": "refused", "actual": exc.actual})
            raise
        try:
            with self.engine.begin() as conn:
                replaced = store_actions.add_iso(
                    conn,
                    name,
                    expected,
                    size,
                    _shown_source(source),
                    self.actor,
                    overwrite=bool(overwrite),
                    now=self.clock(),
                )
                path = library.place(temp, self.library_dir, name)
        except BaseException:
            library.discard(temp)
            raise
        self._audit("kvm.iso_add", name, {**details, "size": size, "result": "ok"})
        out = {"name": name, "sha256": expected, "size": size, "path": path}
        if replaced is not None:
            out["replaced"] = replaced["sha256"]
        return out

    def iso_remove(self, name: Any) -> dict:
        """Forget a library image and delete its file on this master."""
        name = library.check_name(name)
        with self.engine.begin() as conn:
            gone = store_actions.remove_iso(conn, name)
            if gone is None:
                raise library.IsoLibraryError(f"ISO library: no image named {name!r}")
            library.discard(library.path_of(self.library_dir, name))
        self._audit("kvm.iso_remove", name, {"sha256": gone["sha256"], "result": "ok"})
        return {"removed": name, "sha256": gone["sha256"]}

    def iso_list(self) -> dict[str, dict]:
        """The library's images by name, and whether each file is on this master."""
        with self.engine.connect() as conn:
            rows = store_actions.isos(conn)
        return {
            row["name"]: {
                **row,
                "present": os.path.isfile(library.path_of(self.library_dir, row["name"])),
            }
            for row in rows
        }


def _mib(size: int) -> str:
    return f"{size / 2**20:.1f}"


def _shown_source(source: str) -> str:
    """A source as recorded: a URL without credentials or query (which may hold a token)."""
    if "://" not in source:
        return source
    parts = urllib.parse.urlsplit(source)
    host = parts.hostname or ""
    if parts.port:
        host = f"{host}:{parts.port}"
    return urllib.parse.urlunsplit((parts.scheme, host, parts.path, "", ""))
