"""The secrets vault: credentials and node secrets encrypted at rest. Pure logic, no Salt import.

Every secret the store keeps (SSH credentials of a group, KVM passwords, enrolment tokens, ...) is
written as a Fernet token made by :meth:`Vault.encrypt`; the keys live in one file on the master,
``fleet:key_file`` (default ``<pki_dir>/fleet.fernet``), and never in the database. A copy of the
database alone reveals no secret, and neither does the key file alone.

The key file
------------

A text file, mode ``0600``, created on first use (:meth:`Vault.open`):

.. code-block:: text

    # saltext-fleet secrets key file: Fernet keys, one a line, newest first.
    # The first key encrypts, every key decrypts. Keep it mode 0600 and out of the database;
    # back it up apart from the database: without it the stored secrets are lost.
    YOexOOCcs32mRRVwGOSA2V2tZY37Bzu-wvO-4qik2HI=
    cGWGqF1tu7Wxn_XoKmJyl0UHoWBHU5xSkdJ16lqdXHU=

* one Fernet key a line: 32 random bytes in url-safe base64, exactly 44 characters ending in ``=``
  (what ``cryptography.fernet.Fernet.generate_key()`` prints);
* the first key is the newest: it encrypts everything written from now on; the others only
  decrypt what was written under them (:class:`cryptography.fernet.MultiFernet`);
* blank lines and lines starting with ``#`` are ignored; a key given twice counts once;
* :func:`rotate` and :func:`retire` rewrite the whole file with a fresh header, so comments an
  operator added by hand do not survive them.

Rotation is three steps, which ``salt-run fleet.rotate_key`` performs: :func:`rotate` puts a new key
in front (old tokens still decrypt), every stored token is passed through :meth:`Vault.reencrypt`
(now under the new key), then :func:`retire` drops the old keys, after which a token made under
them no longer decrypts. :attr:`Vault.key_id` names the newest key (the first 12 hex digits of the
SHA-256 of its text, as ``grep -v '^#' fleet.fernet | head -1 | tr -d '\\n' | sha256sum`` shows) so
the store can record which key encrypted a row without storing the key.

What is refused
---------------

Like OpenSSH with a private key, the vault refuses (:class:`SecretsError`, naming the path and the
fault) a key file that

* is readable, writable or executable by group or others (any bit of ``0o077``): the fix is
  ``chmod 600``;
* is owned by someone other than root, the user the process runs as, or the owner of the
  directory holding it: whoever owns it could swap in a key they know, and every secret written
  afterwards would be theirs. (The directory's owner can replace the file anyway, so trusting
  them costs nothing; it lets ``salt-run`` as root use the key of a master running as
  ``user: salt``.) A rewrite by root keeps the file's owner and group;
* is a directory, a FIFO or anything but a regular file (a FIFO would hang the master);
* holds no key, or a line that is not a key (the message gives the line number, never the line:
  a mistyped key is still mostly a key);
* is larger than 64 KiB (nothing that large is a key file).

A **symlink is followed**: configuration management and secret mounts put keys behind links.
The checks above apply to the file the link points at, :func:`rotate` and :func:`retire` rewrite
that file and leave the link in place, and a link to nothing is an error rather than a place to
create a key (creating a key somewhere the operator did not expect would split the secrets in two).

Creating the file never exposes it: the directory (when missing) is made ``0700``, the key is
written into a temporary file opened with ``O_CREAT | O_EXCL`` and mode ``0600`` in the same
directory, and that file is hard-linked into place, which fails if the path exists. Two processes
starting together therefore end with one key file: the loser discards its key and reads the
winner's. (On a file system without hard links the key file itself is opened ``O_EXCL`` and the
loser waits briefly for the winner's key to appear.) Rewrites go through a temporary ``0600``
file, ``fsync`` and :func:`os.replace`, under an ``flock`` on the directory, so two rotations do
not lose each other's key and a crash leaves the old file or the new one, never half of one.

POSIX only, as the Salt master is.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import errno
import fcntl
import hashlib
import hmac
import os
import re
import secrets as _random
import stat
import time
from collections.abc import Iterable, Iterator, Sequence

from cryptography.fernet import Fernet, InvalidToken, MultiFernet

from saltext_fleet.core.errors import FleetError

#: A Fernet key as text: 32 bytes of url-safe base64 (43 characters and one ``=``).
KEY_RE = re.compile(r"[A-Za-z0-9_-]{43}=")
#: The most a key file may hold; a larger file is not a key file.
MAX_KEY_FILE_BYTES = 64 * 1024
#: How long a process that lost the creation race waits for the winner's key (no-hard-link case).
CREATE_WAIT_SECONDS = 2.0
HEADER = (
    "# saltext-fleet secrets key file: Fernet keys, one a line, newest first.\n"
    "# The first key encrypts, every key decrypts. Keep it mode 0600 and out of the database;\n"
    "# back it up apart from the database: without it the stored secrets are lost.\n"
)

# A Fernet token: 0x80, 8-byte timestamp, 16-byte IV, AES-CBC ciphertext (whole 16-byte blocks,
# at least one), 32-byte HMAC; url-safe base64 with padding.
_TOKEN_VERSION = 0x80
_TOKEN_OVERHEAD = 1 + 8 + 16 + 32
_TOKEN_TEXT_RE = re.compile(r"[A-Za-z0-9_-]+={0,2}")


class SecretsError(FleetError, ValueError):
    """The key file or a token is unusable; the message names the file and what is wrong.

    Messages never hold a key, a plaintext or a line of the key file.
    """


def generate_key() -> str:
    """A new random Fernet key as text (one line of the key file)."""
    return Fernet.generate_key().decode("ascii")


def key_fingerprint(key: str) -> str:
    """The id the store records for ``key``: 12 hex digits of the SHA-256 of its text.

    48 bits name a key among the handful a file ever holds, and say nothing about the key.
    """
    return hashlib.sha256(key.encode("ascii")).hexdigest()[:12]


def is_token(value: str | bytes) -> bool:
    """Whether ``value`` has the shape of a Fernet token (not whether any key opens it).

    Checks the alphabet, the length (whole cipher blocks) and the version byte ``0x80``, so a
    test can scan a database dump and tell a stored secret from plaintext left behind.
    """
    if isinstance(value, bytes):
        try:
            value = value.decode("ascii")
        except UnicodeDecodeError:
            return False
    if not isinstance(value, str) or len(value) % 4 or not _TOKEN_TEXT_RE.fullmatch(value):
        return False
    try:
        raw = base64.urlsafe_b64decode(value)
    except (binascii.Error, ValueError):
        return False
    size = len(raw) - _TOKEN_OVERHEAD
    return size >= 16 and size % 16 == 0 and raw[0] == _TOKEN_VERSION


class Vault:
    """The keys of one key file, ready to encrypt and decrypt.

    A vault is a snapshot: after another process rotates the file, :meth:`refreshed` returns a
    vault with the new keys (long-running processes call it before they encrypt, so nothing is
    written under a key that is about to be retired).
    """

    def __init__(self, path: str, keys: Sequence[str], *, _identity: tuple | None = None):
        self.path = path
        unique = list(dict.fromkeys(keys))
        if not unique:
            raise SecretsError(f"{path}: the key file holds no key")
        for index, key in enumerate(unique):
            if not isinstance(key, str) or not KEY_RE.fullmatch(key):
                raise SecretsError(f"{path}: key {index + 1} is not a Fernet key")
        self._keys = tuple(unique)
        self._fernet = MultiFernet([Fernet(key) for key in unique])
        self._identity = _identity

    def __repr__(self) -> str:
        return f"<Vault {self.path!r} keys={len(self._keys)} key_id={self.key_id}>"

    # --- loading ------------------------------------------------------------------------------

    @classmethod
    def open(cls, path: str | os.PathLike, create: bool = True) -> Vault:
        """Load the key file at ``path``; when it is absent and ``create``, make it (one new key).

        Raises :class:`SecretsError` for everything the module docstring lists as refused, and
        for a missing file when ``create`` is false.
        """
        path = os.path.abspath(os.fspath(path))
        try:
            return cls._load(path)
        except FileNotFoundError:
            pass
        if os.path.islink(path):
            raise SecretsError(
                f"{path} is a symlink to {os.readlink(path)!r}, which does not exist; "
                "create the key file there or remove the link"
            )
        if not create:
            raise SecretsError(f"{path}: no such key file")
        _make_private_dirs(os.path.dirname(path))
        try:
            _create_exclusive(path, _render([generate_key()]))
        except FileExistsError:
            # Another process created it first: its key is the key.
            return cls._load(path, wait=CREATE_WAIT_SECONDS)
        return cls._load(path)

    @classmethod
    def _load(cls, path: str, wait: float = 0.0) -> Vault:
        deadline = time.monotonic() + wait
        while True:
            data, identity = _read_private_file(path)
            if data or time.monotonic() >= deadline:
                break
            time.sleep(0.01)  # the winner of the creation race has not written yet
        return cls(path, _parse(path, data), _identity=identity)

    def refreshed(self) -> Vault:
        """This vault if the key file is unchanged on disk, else a vault loaded from it anew."""
        try:
            st = os.stat(self.path)
        except FileNotFoundError as exc:
            raise SecretsError(f"{self.path}: the key file has gone") from exc
        if self._identity is not None and _identity_of(st) == self._identity:
            return self
        return Vault.open(self.path, create=False)

    # --- keys ---------------------------------------------------------------------------------

    @property
    def key_id(self) -> str:
        """The fingerprint of the newest key, the one :meth:`encrypt` uses."""
        return key_fingerprint(self._keys[0])

    @property
    def key_ids(self) -> list[str]:
        """Fingerprints of every key, newest first."""
        return [key_fingerprint(key) for key in self._keys]

    def __len__(self) -> int:
        return len(self._keys)

    def derive(self, label: bytes) -> bytes:
        """A 32-byte key for another purpose, derived from the newest key:
        HMAC-SHA256(the Fernet key's 32 bytes, ``label``). Each label gives an independent key,
        and none reveals the Fernet key (used to sign the audit chain's anchor)."""
        return _derive(self._keys[0], label)

    def derived_keys(self, label: bytes) -> list[tuple[str, bytes]]:
        """``[(key id, derived key)]`` for every key of the file, newest first: to check a
        signature made before a rotation."""
        return [(key_fingerprint(key), _derive(key, label)) for key in self._keys]

    # --- tokens -------------------------------------------------------------------------------

    def encrypt(self, plaintext: str | bytes) -> str:
        """A Fernet token (text) for ``plaintext`` under the newest key; str is taken as UTF-8.

        Each call gives a different token (random IV and a timestamp), so equal secrets cannot
        be spotted in the database.
        """
        if isinstance(plaintext, str):
            plaintext = plaintext.encode("utf-8")
        elif not isinstance(plaintext, (bytes, bytearray, memoryview)):
            raise TypeError(f"encrypt() takes str or bytes, not {type(plaintext).__name__}")
        return self._fernet.encrypt(bytes(plaintext)).decode("ascii")

    def decrypt(self, token: str | bytes) -> bytes:
        """The plaintext of a token made under any key of this vault.

        A token that is not one, was altered, or was made under a key this file does not hold
        (another master, a retired key) raises :class:`SecretsError` ``cannot decrypt ...``.
        """
        try:
            return self._fernet.decrypt(self._token_bytes(token, "decrypt"))
        except InvalidToken:
            # Not chained: a vault error is one clear sentence, with no crypto traceback.
            raise self._cannot("decrypt") from None

    def decrypt_text(self, token: str | bytes) -> str:
        """:meth:`decrypt` for secrets stored as text."""
        try:
            return self.decrypt(token).decode("utf-8")
        except UnicodeDecodeError:
            # Not chained: the UnicodeDecodeError holds the decrypted bytes, which must not
            # reach a traceback or a log.
            raise SecretsError("cannot decrypt as text: the secret is not UTF-8") from None

    def reencrypt(self, token: str | bytes) -> str:
        """The same secret as a token under the newest key (for rotation; keeps the timestamp)."""
        try:
            return self._fernet.rotate(self._token_bytes(token, "re-encrypt")).decode("ascii")
        except InvalidToken:
            # Not chained: a vault error is one clear sentence, with no crypto traceback.
            raise self._cannot("re-encrypt") from None

    def token_key_id(self, token: str | bytes) -> str:
        """The fingerprint of the key that opens ``token``: shows what a rotation has left to do."""
        data = self._token_bytes(token, "decrypt")
        for key in self._keys:
            try:
                Fernet(key).decrypt(data)
            except InvalidToken:
                continue
            return key_fingerprint(key)
        raise self._cannot("decrypt")

    def _token_bytes(self, token: object, action: str) -> bytes:
        # Tokens come from database columns: anything (None, numbers, non-ASCII text) must end
        # in the same clean error, and the check must happen before MultiFernet sees it.
        if isinstance(token, str):
            try:
                token = token.encode("ascii")
            except UnicodeEncodeError:
                # Not chained, as above: one clear sentence.
                raise self._cannot(action) from None
        if not isinstance(token, bytes):
            raise SecretsError(
                f"cannot {action}: expected a token string, got {type(token).__name__}"
            )
        return token

    def _cannot(self, action: str) -> SecretsError:
        return SecretsError(
            f"cannot {action} the value: it is not a token made with a key in {self.path} "
            "(another master's key, a retired key, or the value was altered)"
        )


def _derive(key: str, label: bytes) -> bytes:
    return hmac.new(base64.urlsafe_b64decode(key), label, hashlib.sha256).digest()


# --- reading and writing the key file ---------------------------------------------------------


def _identity_of(st: os.stat_result) -> tuple:
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)


def _read_private_file(path: str) -> tuple[bytes, tuple]:
    """The key file's bytes, after the checks that keep a leaked or planted key file out."""
    try:
        # O_NONBLOCK: opening a FIFO for reading must not wait for a writer.
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except FileNotFoundError:
        raise
    except IsADirectoryError as exc:
        raise SecretsError(f"{path} is a directory, not a key file") from exc
    except OSError as exc:
        raise SecretsError(f"{path}: cannot open the key file: {exc.strerror}") from exc
    try:
        st = os.fstat(fd)
        _check_private(path, st, os.path.dirname(os.path.realpath(path)))
        if st.st_size > MAX_KEY_FILE_BYTES:
            raise SecretsError(
                f"{path} is {st.st_size} bytes, too large for a key file "
                f"(at most {MAX_KEY_FILE_BYTES})"
            )
        chunks = []
        while True:
            chunk = os.read(fd, MAX_KEY_FILE_BYTES + 1)
            if not chunk:
                break
            chunks.append(chunk)
            if sum(map(len, chunks)) > MAX_KEY_FILE_BYTES:
                raise SecretsError(f"{path} is too large for a key file")
        return b"".join(chunks), _identity_of(st)
    except OSError as exc:
        raise SecretsError(f"{path}: cannot read the key file: {exc.strerror}") from exc
    finally:
        os.close(fd)


def _check_private(path: str, st: os.stat_result, directory: str) -> None:
    if stat.S_ISDIR(st.st_mode):
        raise SecretsError(f"{path} is a directory, not a key file")
    if not stat.S_ISREG(st.st_mode):
        raise SecretsError(f"{path} is not a regular file (mode {stat.filemode(st.st_mode)})")
    mode = stat.S_IMODE(st.st_mode)
    if mode & 0o077:
        raise SecretsError(
            f"{path} is accessible by group or others (mode {mode:04o}); a key file must be "
            f"private to its owner: chmod 600 {path}"
        )
    euid = os.geteuid()
    if st.st_uid not in (0, euid) and st.st_uid != os.stat(directory).st_uid:
        raise SecretsError(
            f"{path} is owned by uid {st.st_uid}, neither root, this process's user (uid {euid}) "
            f"nor the owner of {directory}; its owner could replace the key: chown it"
        )


def _parse(path: str, data: bytes) -> list[str]:
    keys = []
    for number, raw in enumerate(data.split(b"\n"), start=1):
        try:
            line = raw.decode("ascii").strip()
        except UnicodeDecodeError:
            # Not chained: the UnicodeDecodeError holds the line, which may be a key.
            raise SecretsError(f"{path}: line {number} is not ASCII, so not a Fernet key") from None
        if not line or line.startswith("#"):
            continue
        if not KEY_RE.fullmatch(line):
            raise SecretsError(
                f"{path}: line {number} is not a Fernet key (expected 44 url-safe base64 "
                "characters ending in '=', one key a line)"
            )
        keys.append(line)
    if not keys:
        raise SecretsError(f"{path}: the key file holds no key")
    return keys


def _render(keys: Iterable[str]) -> bytes:
    return (HEADER + "".join(f"{key}\n" for key in keys)).encode("ascii")


def _make_private_dirs(directory: str) -> None:
    """Create ``directory`` and any missing parents, each mode 0700 whatever the umask."""
    missing = []
    while directory and not os.path.isdir(directory):
        missing.append(directory)
        parent = os.path.dirname(directory)
        if parent == directory:
            break
        directory = parent
    for new in reversed(missing):
        try:
            os.mkdir(new, 0o700)
        except FileExistsError:
            continue  # a concurrent creator made it; leave its mode alone
        except OSError as exc:
            raise SecretsError(
                f"cannot create the key file's directory {new}: {exc.strerror}"
            ) from exc
        os.chmod(new, 0o700)


def _temp_path(target: str) -> str:
    head, tail = os.path.split(target)
    return os.path.join(head, f".{tail}.{os.getpid()}.{_random.token_hex(6)}.tmp")


def _write_private_temp(target: str, data: bytes, owner: os.stat_result | None = None) -> str:
    """A fully written, fsynced 0600 file next to ``target``; returns its path."""
    temp = _temp_path(target)
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0)
    try:
        fd = os.open(temp, flags, 0o600)
    except OSError as exc:
        raise SecretsError(f"{target}: cannot write the key file: {exc.strerror}") from exc
    try:
        if owner is not None and os.geteuid() == 0:
            # Root rotating the key of a master that runs as another user: keep it theirs.
            os.fchown(fd, owner.st_uid, owner.st_gid)
        _write_all(fd, data)
        os.fsync(fd)
    except OSError as exc:
        os.close(fd)
        _unlink_quietly(temp)
        raise SecretsError(f"{target}: cannot write the key file: {exc.strerror}") from exc
    os.close(fd)
    return temp


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def _create_exclusive(path: str, data: bytes, link: bool = True) -> None:
    """Make ``path`` hold ``data``, mode 0600; FileExistsError when someone else made it first.

    With ``link`` the file appears whole or not at all; without (file systems lacking hard
    links) it is created empty with O_EXCL and then written.
    """
    if link:
        temp = _write_private_temp(path, data)
        try:
            os.link(temp, path)
        except FileExistsError:
            raise
        except OSError as exc:
            if exc.errno not in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EXDEV):
                raise SecretsError(f"{path}: cannot create the key file: {exc.strerror}") from exc
            link = False
        finally:
            _unlink_quietly(temp)
        if link:
            fsync_dir(os.path.dirname(path))
            return
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0)
    try:
        fd = os.open(path, flags, 0o600)
    except FileExistsError:
        raise
    except OSError as exc:
        raise SecretsError(f"{path}: cannot create the key file: {exc.strerror}") from exc
    try:
        _write_all(fd, data)
        os.fsync(fd)
    except OSError as exc:
        os.close(fd)
        _unlink_quietly(path)  # an empty key file would stop every later start
        raise SecretsError(f"{path}: cannot write the key file: {exc.strerror}") from exc
    os.close(fd)
    fsync_dir(os.path.dirname(path))


def _replace(path: str, data: bytes, owner: os.stat_result) -> None:
    temp = _write_private_temp(path, data, owner)
    try:
        os.replace(temp, path)
    except OSError as exc:
        _unlink_quietly(temp)
        raise SecretsError(f"{path}: cannot replace the key file: {exc.strerror}") from exc
    fsync_dir(os.path.dirname(path))


def fsync_dir(directory: str) -> None:
    """Make a rename or a new file in ``directory`` durable (where the file system can)."""
    with contextlib.suppress(OSError):  # some file systems cannot fsync a directory
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _unlink_quietly(path: str) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)


@contextlib.contextmanager
def locked_dir(directory: str) -> Iterator[None]:
    """An exclusive flock on the key file's directory: one read-modify-write at a time.

    The lock is on the directory because the key file itself is replaced (a new inode) by
    every rewrite, and a separate lock file would be one more thing in the pki directory.
    """
    fd = os.open(directory, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing releases the lock


def _rewrite(path: str | os.PathLike, change) -> Vault:
    path = os.path.abspath(os.fspath(path))
    target = os.path.realpath(path)  # rewrite what a symlink points at; the link stays
    if not os.path.exists(target):
        Vault.open(path, create=False)  # the precise error: no file, dangling link
    with locked_dir(os.path.dirname(target)):
        current = Vault.open(path, create=False)
        keys = change(list(current._keys))
        if keys == list(current._keys):
            return current
        _replace(target, _render(keys), os.stat(target))
        # Built here, under the lock, from what was written: re-reading after the lock could
        # return another rotation's key as "the new key".
        return Vault(path, keys, _identity=_identity_of(os.stat(target)))


def rotate(path: str | os.PathLike) -> Vault:
    """Put a new key in front of the key file's keys; returns the vault that encrypts with it.

    Tokens made before still decrypt; pass them through :meth:`Vault.reencrypt`, then
    :func:`retire` the old keys. The file must exist: rotating a missing file would leave
    every stored secret without its key.
    """
    return _rewrite(path, lambda keys: [generate_key(), *keys])


def retire(path: str | os.PathLike, keep: int = 1) -> Vault:
    """Drop all but the newest ``keep`` keys, once every stored secret is re-encrypted.

    Tokens made under a dropped key no longer decrypt: that is the point, and the reason to
    check with :meth:`Vault.token_key_id` first.
    """
    if isinstance(keep, bool) or not isinstance(keep, int) or keep < 1:
        raise SecretsError(f"{os.fspath(path)}: retire keeps at least 1 key, not {keep!r}")
    return _rewrite(path, lambda keys: keys[:keep])
