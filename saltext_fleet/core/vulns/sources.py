"""Where OSV documents come from: an archive, a folder or one file, read one document at a time.

OSV data is published in two shapes, and both are read here:

* a per-ecosystem ``all.zip`` (``https://osv-vulnerabilities.storage.googleapis.com/<ECOSYSTEM>/all.zip``):
  one ``<ID>.json`` member per record;
* a folder of records, as in the advisory databases that publish OSV (the PyPA
  advisory-database keeps ``vulns/<package>/<ID>.yaml``): walked recursively for ``.json``,
  ``.yaml`` and ``.yml`` files.

A single ``.json``/``.yaml``/``.yml`` file is a source of one document. :func:`open_source`
decides which it is (a zip is known by its content, not its name) and refuses anything else
with a :class:`SourceError` naming the path.

Iterating a :class:`Source` yields :class:`Entry` tuples ``(origin, data, error)``: ``origin``
is what a person reads (``all.zip/PYSEC-2021-76.json``, ``vulns/aiohttp/PYSEC-2021-76.yaml``),
``data`` the document's bytes, ``error`` None, or the reason this one file could not be read
(then ``data`` is empty). One unreadable file never stops the others. Documents are read one at
a time: a zip is never held in memory whole.

Guards against hostile sources:

* a member or file larger than ``max_bytes`` (16 MiB: the largest real OSV record is well under
  1 MiB) is an error entry and is never read past that size. A zip member's real size cannot
  exceed the size its central directory declares (:mod:`zipfile` stops there and checks the
  CRC), so the declared sizes bound what an archive can make us decompress;
* an archive with more than ``max_entries`` members, or whose members together declare more
  than ``max_total_bytes``, is refused as a whole before anything is read;
* a symlink in a folder is followed only when its target stays inside the folder; a symlink
  pointing outside is an error entry, never read. Symlinked sub-folders are not descended into.

Files whose name does not end in ``.json``, ``.yaml`` or ``.yml`` (a ``LICENSE``, the PyPA
database's ``.id-allocator``) are not documents: they are skipped and counted in
:attr:`Source.skipped`.
"""

from __future__ import annotations

import os
import stat
import zipfile
import zlib
from collections.abc import Iterator
from typing import NamedTuple

from saltext_fleet.core.errors import FleetError
from saltext_fleet.core.text import terminal_safe

#: File name endings of OSV documents.
SUFFIXES = (".json", ".yaml", ".yml")

#: Largest single document read (a zip member's uncompressed size, or a file's size).
MAX_BYTES = 16 * 1024 * 1024

#: Most members an archive may have (OSV's largest per-ecosystem all.zip has a few 100,000).
MAX_ENTRIES = 2_000_000

#: Most uncompressed bytes all of an archive's members may declare together.
MAX_TOTAL_BYTES = 32 * 1024 * 1024 * 1024


class SourceError(FleetError, ValueError):
    """The path given is not a source of OSV documents; the message names it and says why."""


class Entry(NamedTuple):
    """One document of a source: its ``origin`` (for people), its ``data``, or the ``error``
    that kept it from being read."""

    origin: str
    data: bytes = b""
    error: str | None = None


def is_document(name: str) -> bool:
    """Whether a file or member name is an OSV document's (by its ending, any case)."""
    return name.lower().endswith(SUFFIXES)


#: Longest origin kept (a path inside an archive or a folder).
MAX_ORIGIN_CHARS = 1000


def printable(name: str) -> str:
    """``name`` as an origin people read and every column can hold: UTF-8 (undecodable file
    name bytes become ``?``), inert in a terminal, at most :data:`MAX_ORIGIN_CHARS`."""
    return terminal_safe(name.encode("utf-8", "replace").decode("utf-8"), MAX_ORIGIN_CHARS)


def _mib(size: int) -> str:
    if size < 1024 * 1024:
        return f"{size:,} bytes"
    return f"{size / (1024 * 1024):.0f} MiB"


class Source:
    """OSV documents at ``path``: a zip archive, a folder or one file (see the module doc).

    Made by :func:`open_source`. Iterate it for :class:`Entry` tuples (once or more: each
    iteration reads the source again); :meth:`estimate` says about how many documents there
    are (for progress), :attr:`skipped` how many files the last iteration passed over because
    they are not documents.
    """

    def __init__(
        self,
        path: str,
        kind: str,
        *,
        max_bytes: int = MAX_BYTES,
        max_entries: int = MAX_ENTRIES,
        max_total_bytes: int = MAX_TOTAL_BYTES,
    ) -> None:
        self.path = path
        #: "zip", "folder" or "file"
        self.kind = kind
        self.max_bytes = max_bytes
        self.max_entries = max_entries
        self.max_total_bytes = max_total_bytes
        #: files (or members) that are not documents, counted by the last iteration
        self.skipped = 0
        self._label = printable(os.path.basename(os.path.normpath(path)) or path)

    def __repr__(self) -> str:
        return f"Source({self.path!r}, {self.kind!r})"

    def __iter__(self) -> Iterator[Entry]:
        self.skipped = 0
        if self.kind == "zip":
            return self._zip_entries()
        if self.kind == "folder":
            return self._folder_entries()
        return iter([self._read_file(self.path, self._label)])

    def estimate(self) -> int:
        """About how many documents the source holds (the zip's directory, a walk of the
        folder's names; no document is read)."""
        if self.kind == "file":
            return 1
        if self.kind == "zip":
            with self._open_zip() as archive:
                return sum(
                    1
                    for info in archive.infolist()
                    if not info.is_dir() and is_document(info.filename)
                )
        count = 0
        for _dirpath, _dirnames, filenames in os.walk(self.path):
            count += sum(1 for name in filenames if is_document(name))
        return count

    # -- zip ----------------------------------------------------------------------------------

    def _open_zip(self) -> zipfile.ZipFile:
        try:
            archive = zipfile.ZipFile(self.path)
        # ValueError: a member name that is not the UTF-8 its flag says
        except (OSError, ValueError, zipfile.BadZipFile, zipfile.LargeZipFile) as exc:
            raise SourceError(f"{self.path}: cannot open the zip archive: {exc}") from exc
        infos = archive.infolist()
        if len(infos) > self.max_entries:
            archive.close()
            raise SourceError(
                f"{self.path}: the archive has {len(infos):,} members, more than the"
                f" {self.max_entries:,} an OSV archive may have; refused"
            )
        total = sum(info.file_size for info in infos)
        if total > self.max_total_bytes:
            archive.close()
            raise SourceError(
                f"{self.path}: the archive's members declare {_mib(total)} uncompressed, more"
                f" than {_mib(self.max_total_bytes)}; refused (a zip bomb?)"
            )
        return archive

    def _zip_entries(self) -> Iterator[Entry]:
        with self._open_zip() as archive:
            for info in archive.infolist():
                if info.is_dir():
                    continue
                origin = printable(f"{self._label}/{info.filename}")
                if not is_document(info.filename):
                    self.skipped += 1
                    continue
                if info.file_size > self.max_bytes:
                    yield Entry(
                        origin,
                        error=f"{_mib(info.file_size)} uncompressed, more than the"
                        f" {_mib(self.max_bytes)} a record may have; not read",
                    )
                    continue
                try:
                    with archive.open(info) as member:
                        data = member.read(self.max_bytes + 1)
                except (OSError, EOFError, RuntimeError, zipfile.BadZipFile, zlib.error) as exc:
                    # BadZipFile: a CRC or size that does not match what the
                    # directory declares; RuntimeError: encrypted, or (NotImplementedError) a
                    # compression method zipfile lacks; zlib.error: corrupt deflate data
                    yield Entry(origin, error=f"cannot read the archive member: {exc}")
                    continue
                if len(data) > self.max_bytes:
                    yield Entry(origin, error=f"more than {_mib(self.max_bytes)}; not read")
                    continue
                yield Entry(origin, data)

    # -- folder -------------------------------------------------------------------------------

    def _folder_entries(self) -> Iterator[Entry]:
        root = os.path.realpath(self.path)
        unreadable: list[OSError] = []
        for dirpath, dirnames, filenames in os.walk(self.path, onerror=unreadable.append):
            while unreadable:  # a sub-folder os.walk could not list: its own error
                yield self._unreadable(unreadable.pop(0))
            dirnames.sort()
            for name in sorted(filenames):
                full = os.path.join(dirpath, name)
                origin = printable(os.path.join(self._label, os.path.relpath(full, self.path)))
                if not is_document(name):
                    self.skipped += 1
                    continue
                if os.path.islink(full):
                    target = os.path.realpath(full)
                    if os.path.commonpath([root, target]) != root:
                        yield Entry(
                            origin,
                            error=f"a symlink to {target}, outside {self.path}; not followed",
                        )
                        continue
                yield self._read_file(full, origin)
        for exc in unreadable:
            yield self._unreadable(exc)

    def _unreadable(self, exc: OSError) -> Entry:
        where = os.path.relpath(str(exc.filename or self.path), self.path)
        origin = printable(os.path.normpath(os.path.join(self._label, where)))
        return Entry(origin, error=f"cannot read the folder: {exc.strerror or exc}")

    def _read_file(self, path: str, origin: str) -> Entry:
        try:
            # O_NONBLOCK: a FIFO planted in the folder must not hang the import
            fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
        except OSError as exc:
            return Entry(origin, error=f"cannot open: {exc.strerror or exc}")
        try:
            info = os.fstat(fd)
            if not stat.S_ISREG(info.st_mode):
                return Entry(origin, error="not a regular file; not read")
            if info.st_size > self.max_bytes:
                return Entry(
                    origin,
                    error=f"{_mib(info.st_size)}, more than the {_mib(self.max_bytes)} a"
                    " record may have; not read",
                )
            with os.fdopen(fd, "rb", closefd=False) as handle:
                data = handle.read(self.max_bytes + 1)
        except OSError as exc:
            return Entry(origin, error=f"cannot read: {exc.strerror or exc}")
        finally:
            os.close(fd)
        if len(data) > self.max_bytes:
            return Entry(origin, error=f"more than {_mib(self.max_bytes)}; not read")
        return Entry(origin, data)


def open_source(
    path: str,
    *,
    max_bytes: int = MAX_BYTES,
    max_entries: int = MAX_ENTRIES,
    max_total_bytes: int = MAX_TOTAL_BYTES,
) -> Source:
    """The :class:`Source` at ``path``: a zip archive (known by its content), a folder, or
    one ``.json``/``.yaml``/``.yml`` file. Raises :class:`SourceError` naming ``path`` when it
    is none of these (missing, unreadable, another kind of file), or an archive over the
    guards' limits."""
    if not isinstance(path, str) or not path:
        raise SourceError(f"expected the path of an OSV zip, folder or file, got {path!r}")
    limits = {
        "max_bytes": max_bytes,
        "max_entries": max_entries,
        "max_total_bytes": max_total_bytes,
    }
    try:
        info = os.stat(path)
    except OSError as exc:
        reason = "no such file or folder" if not os.path.lexists(path) else exc.strerror
        raise SourceError(f"{path}: {reason}") from exc
    if stat.S_ISDIR(info.st_mode):
        if not os.access(path, os.R_OK | os.X_OK):
            raise SourceError(f"{path}: the folder cannot be read")
        return Source(path, "folder", **limits)
    if not stat.S_ISREG(info.st_mode):
        raise SourceError(f"{path}: not a zip archive, a folder or a JSON/YAML file")
    try:
        is_zip = zipfile.is_zipfile(path)
    except OSError as exc:
        raise SourceError(f"{path}: cannot read: {exc.strerror or exc}") from exc
    if is_zip:
        source = Source(path, "zip", **limits)
        source._open_zip().close()  # refuse an archive over the limits now, not mid-import
        return source
    if is_document(path):
        return Source(path, "file", **limits)
    raise SourceError(
        f"{path}: not a zip archive, a folder or a .json/.yaml/.yml file (OSV data is an"
        " ecosystem's all.zip or a folder of OSV JSON or YAML records)"
    )
