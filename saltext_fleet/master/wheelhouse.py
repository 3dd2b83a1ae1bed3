"""The wheelhouse a bootstrap installs from: salt and saltext-fleet as the master runs them.

A new node gets exactly the distributions the master itself runs, and nothing is downloaded:
:func:`build` walks the dependency closure of ``salt`` and ``saltext-fleet`` as installed in
this interpreter (``importlib.metadata``, environment markers evaluated with ``packaging``)
and repacks every distribution into a wheel from its ``RECORD``:

* the files under site-packages, with a regenerated ``RECORD`` (sha256) and the original
  ``WHEEL`` file, so the wheel keeps its tag (``cp311-cp311-manylinux_...``); a distribution
  without a ``WHEEL`` file becomes ``py3-none-any``. Files outside site-packages (console
  scripts, data files) are left out: pip writes the scripts again from ``entry_points.txt``.
* an editable install (``direct_url.json`` says ``"dir_info": {"editable": true}``) is packed
  from its source packages (its top-level packages, without ``__pycache__``) plus its
  ``METADATA`` and ``entry_points.txt``.

Extras are followed only where a requirement names them (``psycopg[binary]`` needs
``psycopg-binary``, or pip could not resolve it offline); optional extras nobody asks for
(``saltext-fleet[test]``) are left out.

The wheels suit hosts with the master's Python (major.minor) and platform; the manifest
``wheelhouse.json`` records both so a bootstrap can refuse a host that does not match.

Cache: ``<dest>/<digest>/`` where the digest covers the distributions' names and versions (and
the content of editable sources, whose version does not move when the code does). A finished
wheelhouse is reused; a new one is built in a temporary directory and renamed into place, so a
half-built wheelhouse is never used.
"""

from __future__ import annotations

import base64
import csv
import hashlib
import importlib.util
import io
import json
import logging
import os
import pathlib
import platform
import re
import shutil
import sys
import tempfile
import time
import zipfile
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from importlib import metadata
from typing import Any

from packaging.requirements import InvalidRequirement, Requirement
from packaging.utils import canonicalize_name

from saltext_fleet.core.errors import FleetError

log = logging.getLogger(__name__)

MANIFEST = "wheelhouse.json"
#: bump when the way wheels are packed changes, so old cached wheelhouses are not reused
FORMAT = 1
#: dist-info files pip writes at install time; a wheel must not carry them
INSTALL_ONLY = {"RECORD", "INSTALLER", "REQUESTED", "direct_url.json", "RECORD.jws", "RECORD.p7s"}
#: a fixed timestamp in every wheel: the same distribution always packs to the same bytes
ZIP_DATE = (1980, 1, 1, 0, 0, 0)
STALE_BUILD_SECONDS = 24 * 3600
#: finished wheelhouses kept in ``dest`` (the newest; a bootstrap may still use the one before)
KEEP = 2


class WheelhouseError(FleetError, RuntimeError):
    """The wheelhouse cannot be built; the message names the distribution and why."""


def build(dest: str, requirements: Iterable[str] = ("salt", "saltext-fleet")) -> dict[str, Any]:
    """Build (or reuse) the wheelhouse for ``requirements`` under ``dest``.

    Returns ``{"dir": <wheelhouse dir>, "wheels": [file names], "reused": bool}``.
    """
    requirements = [str(r) for r in requirements]
    dists = closure(requirements)
    digest = _digest(dists)
    os.makedirs(dest, exist_ok=True)
    final = os.path.join(dest, digest)
    manifest = _complete(final)
    if manifest is not None:
        return {"dir": final, "wheels": manifest["wheels"], "reused": True}

    _remove_stale_builds(dest)
    started = time.monotonic()
    tmp = tempfile.mkdtemp(prefix=".build-", dir=dest)
    try:
        workers = max(1, min(4, os.cpu_count() or 1))
        with ThreadPoolExecutor(max_workers=workers) as pool:
            wheels = sorted(pool.map(lambda d: pack(d, tmp), dists.values()))
        manifest = {
            "format": FORMAT,
            "requirements": requirements,
            "dists": {canonicalize_name(d.metadata["Name"]): d.version for d in dists.values()},
            "wheels": wheels,
            "python": "{}.{}".format(*sys.version_info[:2]),
            "platform": sys.platform,
            "machine": platform.machine(),
        }
        with open(os.path.join(tmp, MANIFEST), "w", encoding="utf-8") as fh:
            json.dump(manifest, fh, indent=1, sort_keys=True)
        os.chmod(tmp, 0o755)
        try:
            os.rename(tmp, final)
        except OSError:
            # another build finished first: use that one
            if _complete(final) is None:
                raise
            shutil.rmtree(tmp, ignore_errors=True)
            return {"dir": final, "wheels": _complete(final)["wheels"], "reused": True}
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    _prune(dest, keep=KEEP, current=final)
    log.info(
        "fleet: built wheelhouse %s: %d wheels in %.1fs",
        final,
        len(wheels),
        time.monotonic() - started,
    )
    return {"dir": final, "wheels": wheels, "reused": False}


def read_manifest(wheelhouse_dir: str) -> dict[str, Any] | None:
    """The manifest of a finished wheelhouse, or None if ``wheelhouse_dir`` is not one."""
    return _complete(wheelhouse_dir)


# -- the dependency closure ---------------------------------------------------------------


def closure(requirements: Iterable[str]) -> dict[str, metadata.Distribution]:
    """``{canonical name: Distribution}`` of ``requirements`` and all they need, as installed."""
    dists: dict[str, metadata.Distribution] = {}
    extras_done: dict[str, set[str]] = {}
    todo: list[tuple[Requirement, str]] = []
    for text in requirements:
        try:
            todo.append((Requirement(text), "the wheelhouse"))
        except InvalidRequirement as exc:
            raise WheelhouseError(f"invalid requirement {text!r}: {exc}") from exc
    while todo:
        req, needed_by = todo.pop()
        name = canonicalize_name(req.name)
        if name not in dists:
            found = _find_distribution(req.name)
            if found is None:
                raise WheelhouseError(
                    f"{req} (needed by {needed_by}) is not installed in {sys.prefix}; "
                    "the wheelhouse is built from the master's own installation"
                )
            dists[name] = found
            extras_done[name] = set()
            new_extras = {""} | set(req.extras)
        else:
            new_extras = set(req.extras) - extras_done[name]
            if not new_extras:
                continue
        extras_done[name] |= new_extras
        dist = dists[name]
        for text in dist.requires or ():
            try:
                sub = Requirement(text)
            except InvalidRequirement:
                log.warning("fleet: %s declares an unreadable requirement %r", name, text)
                continue
            if sub.marker is None:
                if "" in new_extras:
                    todo.append((sub, dist.metadata["Name"]))
            elif any(sub.marker.evaluate({"extra": extra}) for extra in new_extras):
                todo.append((sub, dist.metadata["Name"]))
    return dists


def _find_distribution(name: str) -> metadata.Distribution | None:
    """The installed distribution ``name``, preferring a pip installation (``.dist-info``).

    A source checkout on ``sys.path`` (tests, ``python -c`` in the checkout) also holds a
    setuptools ``*.egg-info`` build artefact of the same project; that one lists source
    files, not installed ones.
    """
    first = None
    for dist in metadata.distributions(name=name):
        first = first or dist
        if dist.read_text("METADATA") is not None:  # dist-info, not egg-info
            return dist
    return first


def _digest(dists: dict[str, metadata.Distribution]) -> str:
    sha = hashlib.sha256()
    sha.update(f"format={FORMAT}\n".encode())
    sha.update(f"python={sys.version_info[:2]} {sys.platform} {platform.machine()}\n".encode())
    for name in sorted(dists):
        dist = dists[name]
        sha.update(f"{name}=={dist.version}\n".encode())
        if is_editable(dist):
            # an editable install keeps its version while its code changes
            for top, path in _editable_sources(dist):
                for rel, full in _walk_source(top, path):
                    sha.update(rel.encode() + b"\0")
                    with open(full, "rb") as fh:
                        sha.update(hashlib.sha256(fh.read()).digest())
    return sha.hexdigest()[:24]


def _complete(path: str) -> dict[str, Any] | None:
    try:
        with open(os.path.join(path, MANIFEST), encoding="utf-8") as fh:
            manifest = json.load(fh)
    except (OSError, ValueError):
        return None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        return None
    wheels = manifest.get("wheels")
    if not isinstance(wheels, list) or not all(
        isinstance(w, str) and os.path.isfile(os.path.join(path, w)) for w in wheels
    ):
        return None
    return manifest


def _prune(dest: str, keep: int, current: str) -> None:
    """Remove all but the ``keep`` newest finished wheelhouses (never ``current``)."""
    found = []
    for entry in os.scandir(dest):
        if entry.name.startswith(".") or not entry.is_dir(follow_symlinks=False):
            continue
        try:
            found.append((os.stat(os.path.join(entry.path, MANIFEST)).st_mtime, entry.path))
        except OSError:
            continue
    found.sort(reverse=True)
    for _, path in found[keep:]:
        if os.path.abspath(path) != os.path.abspath(current):
            shutil.rmtree(path, ignore_errors=True)


def _remove_stale_builds(dest: str) -> None:
    """Half-built wheelhouses of builds that died long ago."""
    now = time.time()
    for entry in os.scandir(dest):
        if entry.name.startswith(".build-") and entry.is_dir(follow_symlinks=False):
            try:
                if now - entry.stat(follow_symlinks=False).st_mtime > STALE_BUILD_SECONDS:
                    shutil.rmtree(entry.path, ignore_errors=True)
            except OSError:
                pass


# -- packing one distribution -------------------------------------------------------------


def is_editable(dist: metadata.Distribution) -> bool:
    text = dist.read_text("direct_url.json")
    if not text:
        return False
    try:
        info = json.loads(text)
    except ValueError:
        return False
    return bool(isinstance(info, dict) and (info.get("dir_info") or {}).get("editable"))


def pack(dist: metadata.Distribution, out_dir: str) -> str:
    """Write the wheel of one installed distribution into ``out_dir``; return its file name."""
    name = dist.metadata["Name"]
    version = dist.version
    if not name or not version:
        raise WheelhouseError(f"a distribution in {dist.locate_file('')} has no name/version")
    if is_editable(dist):
        entries, info_dir, wheel_text = _editable_entries(dist)
    else:
        entries, info_dir, wheel_text = _installed_entries(dist)
    if wheel_text is None:
        wheel_text = _default_wheel_file()
    tag = _tag(wheel_text)
    filename = f"{_escape(name)}-{_escape_version(version)}-{tag}.whl"
    target = os.path.join(out_dir, filename)
    records: list[tuple[str, str, str]] = []
    with zipfile.ZipFile(target, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for arcname, source in entries:
            with open(source, "rb") as fh:
                data = fh.read()
            _write(zf, arcname, data, os.stat(source).st_mode)
            records.append((arcname, _hash(data), str(len(data))))
        wheel_bytes = wheel_text.encode("utf-8")
        _write(zf, f"{info_dir}/WHEEL", wheel_bytes, 0o644)
        records.append((f"{info_dir}/WHEEL", _hash(wheel_bytes), str(len(wheel_bytes))))
        buf = io.StringIO()
        writer = csv.writer(buf, lineterminator="\n")
        writer.writerows(records)
        writer.writerow((f"{info_dir}/RECORD", "", ""))
        _write(zf, f"{info_dir}/RECORD", buf.getvalue().encode("utf-8"), 0o644)
    return filename


def _installed_entries(dist):
    root = pathlib.Path(dist.locate_file("")).resolve()
    files = dist.files
    if files is None:
        raise WheelhouseError(
            f"{dist.metadata['Name']} {dist.version} has no RECORD (installed without pip?); "
            "reinstall it with pip so it can be repacked"
        )
    info_dir = None
    for f in files:
        if len(f.parts) == 2 and f.parts[0].endswith(".dist-info") and f.parts[1] == "METADATA":
            info_dir = f.parts[0]
            break
    if info_dir is None:
        raise WheelhouseError(
            f"{dist.metadata['Name']} {dist.version} is not a dist-info installation "
            "(egg-info?); reinstall it with pip so it can be repacked"
        )
    entries: list[tuple[str, str]] = []
    wheel_text = None
    for f in files:
        parts = f.parts
        if not parts or ".." in parts or "__pycache__" in parts or f.suffix in (".pyc", ".pyo"):
            continue  # outside site-packages (scripts, data) or byte code pip compiles again
        if parts[0].endswith(".data"):
            continue  # a wheel's install-time scripts/data, moved out of site-packages by pip
        full = root.joinpath(*parts)
        if parts[0] == info_dir and len(parts) == 2:
            if parts[1] in INSTALL_ONLY:
                continue
            if parts[1] == "WHEEL":
                wheel_text = full.read_text(encoding="utf-8")
                continue
        if not full.is_file():
            log.warning("fleet: %s: %s is in RECORD but missing", dist.metadata["Name"], f)
            continue
        entries.append(("/".join(parts), str(full)))
    return entries, info_dir, wheel_text


def _editable_entries(dist):
    name = dist.metadata["Name"]
    info_dir = f"{_escape(name)}-{_escape_version(dist.version)}.dist-info"
    entries: list[tuple[str, str]] = []
    for top, path in _editable_sources(dist):
        for rel, full in _walk_source(top, path):
            entries.append((rel, full))
    if not entries:
        raise WheelhouseError(f"{name} is installed editable but its source packages are missing")
    dist_info = pathlib.Path(dist.locate_file("")).resolve()
    for f in dist.files or ():
        if len(f.parts) == 2 and f.parts[0].endswith(".dist-info"):
            dist_info = dist_info / f.parts[0]
            break
    for meta in ("METADATA", "entry_points.txt"):
        full = dist_info / meta
        if full.is_file():
            entries.append((f"{info_dir}/{meta}", str(full)))
    return entries, info_dir, _default_wheel_file()


def _editable_sources(dist) -> list[tuple[str, str]]:
    """``[(top-level name, path)]`` of an editable distribution's source packages/modules."""
    tops = (dist.read_text("top_level.txt") or "").split()
    if not tops:
        tops = [canonicalize_name(dist.metadata["Name"]).replace("-", "_")]
    found = []
    for top in tops:
        try:
            spec = importlib.util.find_spec(top)
        except (ImportError, ValueError):
            spec = None
        if spec is None:
            raise WheelhouseError(
                f"{dist.metadata['Name']} is installed editable but {top!r} cannot be found"
            )
        if spec.submodule_search_locations:
            found.append((top, list(spec.submodule_search_locations)[0]))
        elif spec.origin and os.path.isfile(spec.origin):
            found.append((top, spec.origin))
    return found


def _walk_source(top: str, path: str):
    """``(archive name, file)`` of a source package, without byte code; sorted."""
    if os.path.isfile(path):
        yield os.path.basename(path), path
        return
    for dirpath, dirnames, filenames in os.walk(path):
        dirnames[:] = sorted(d for d in dirnames if d != "__pycache__")
        rel_dir = os.path.relpath(dirpath, path)
        for fname in sorted(filenames):
            if fname.endswith((".pyc", ".pyo")):
                continue
            rel = fname if rel_dir == "." else f"{rel_dir}/{fname}"
            yield f"{top}/{rel.replace(os.sep, '/')}", os.path.join(dirpath, fname)


def _default_wheel_file() -> str:
    return (
        "Wheel-Version: 1.0\n"
        "Generator: saltext-fleet wheelhouse\n"
        "Root-Is-Purelib: true\n"
        "Tag: py3-none-any\n"
    )


def _tag(wheel_text: str) -> str:
    """The file-name tag of a WHEEL file's ``Tag:`` lines (compressed tag sets)."""
    pythons: list[str] = []
    abis: list[str] = []
    platforms: list[str] = []
    for line in wheel_text.splitlines():
        key, _, value = line.partition(":")
        if key.strip().lower() != "tag":
            continue
        parts = value.strip().split("-")
        if len(parts) != 3:
            continue
        for bucket, part in zip((pythons, abis, platforms), parts, strict=True):
            if part not in bucket:
                bucket.append(part)
    if not pythons:
        return "py3-none-any"
    return "-".join(".".join(b) for b in (pythons, abis, platforms))


def _escape(name: str) -> str:
    return re.sub(r"[-_.]+", "_", name).lower()


def _escape_version(version: str) -> str:
    return version.replace("-", "_")


def _hash(data: bytes) -> str:
    digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=")
    return "sha256=" + digest.decode("ascii")


def _write(zf: zipfile.ZipFile, arcname: str, data: bytes, mode: int) -> None:
    info = zipfile.ZipInfo(arcname, date_time=ZIP_DATE)
    info.compress_type = zipfile.ZIP_DEFLATED
    info.external_attr = ((mode & 0o777) | 0o100000) << 16
    zf.writestr(info, data)
