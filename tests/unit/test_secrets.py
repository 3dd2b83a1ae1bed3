"""The secrets vault: key file creation and checks, tokens, rotation. Real files, no mocks."""

import base64
import multiprocessing
import os
import stat

import pytest
from cryptography.fernet import Fernet

from saltext_fleet.core import secrets as core_secrets
from saltext_fleet.core.secrets import SecretsError, Vault


def mode_of(path):
    return stat.S_IMODE(os.stat(path).st_mode)


def keys_in(path):
    with open(path, encoding="ascii") as handle:
        return [line.strip() for line in handle if line.strip() and not line.startswith("#")]


@pytest.fixture
def key_file(tmp_path):
    return str(tmp_path / "pki" / "fleet.fernet")


# --- creation ---------------------------------------------------------------------------------


def test_open_creates_a_private_key_file_and_private_parents(tmp_path):
    path = tmp_path / "etc" / "pki" / "fleet.fernet"
    old_umask = os.umask(0)  # the loosest umask: the modes must not come from it
    try:
        vault = Vault.open(path)
    finally:
        os.umask(old_umask)
    assert mode_of(path) == 0o600
    assert mode_of(tmp_path / "etc") == mode_of(tmp_path / "etc" / "pki") == 0o700
    text = path.read_text()
    assert text.startswith("# saltext-fleet secrets key file")
    (key,) = keys_in(path)
    assert len(vault) == 1 and vault.key_id == core_secrets.key_fingerprint(key)
    assert len(vault.key_id) == 12 and key not in repr(vault)
    assert [p.name for p in (tmp_path / "etc" / "pki").iterdir()] == ["fleet.fernet"]  # no temp
    # Opening again reads the same key, and an existing directory keeps its mode.
    os.chmod(tmp_path / "etc", 0o755)
    assert Vault.open(path).key_id == vault.key_id
    assert mode_of(tmp_path / "etc") == 0o755


def test_open_without_create_refuses_a_missing_file(key_file):
    with pytest.raises(SecretsError, match="no such key file") as err:
        Vault.open(key_file, create=False)
    assert key_file in str(err.value)
    assert not os.path.exists(key_file)


def test_a_file_written_by_hand_is_read_with_comments_blanks_and_crlf(tmp_path):
    new, old = Fernet.generate_key().decode(), Fernet.generate_key().decode()
    path = tmp_path / "hand.fernet"
    path.write_text(f"# mine\r\n\r\n{new}\r\n  # old one:\n{old}\n{new}\n")
    os.chmod(path, 0o600)
    vault = Vault.open(path)
    assert len(vault) == 2  # the duplicate counts once
    assert vault.key_ids == [core_secrets.key_fingerprint(new), core_secrets.key_fingerprint(old)]
    assert Fernet(new.encode()).decrypt(vault.encrypt("x").encode()) == b"x"  # newest encrypts
    assert vault.decrypt(Fernet(old.encode()).encrypt(b"older")) == b"older"


def _create_and_encrypt(path, barrier, results, marker):
    barrier.wait()
    try:
        vault = Vault.open(path)
        results.put((marker, vault.key_id, vault.encrypt(marker)))
    except Exception as exc:  # noqa: BLE001 - reported instead of dying silently in the child
        results.put((marker, "error", repr(exc)))


def test_two_processes_creating_at_once_share_one_key(tmp_path):
    ctx = multiprocessing.get_context("fork")
    for round_ in range(4):
        path = str(tmp_path / f"race{round_}" / "fleet.fernet")
        barrier, results = ctx.Barrier(2), ctx.Queue()
        procs = [
            ctx.Process(target=_create_and_encrypt, args=(path, barrier, results, name))
            for name in ("first", "second")
        ]
        for proc in procs:
            proc.start()
        got = sorted(results.get(timeout=10) for _ in procs)
        for proc in procs:
            proc.join(timeout=10)
            assert proc.exitcode == 0
        assert [g[1] for g in got if g[1] == "error"] == [], got
        vault = Vault.open(path, create=False)
        assert len(keys_in(path)) == 1 and mode_of(path) == 0o600
        assert {key_id for _, key_id, _ in got} == {vault.key_id}
        assert [vault.decrypt_text(token) for _, _, token in got] == ["first", "second"]
        assert os.listdir(os.path.dirname(path)) == ["fleet.fernet"]


def test_create_without_hard_links_is_exclusive_too(tmp_path):
    """The fallback for file systems without hard links: O_EXCL on the key file itself."""
    path = str(tmp_path / "fleet.fernet")
    data = core_secrets._render([core_secrets.generate_key()])
    core_secrets._create_exclusive(path, data, link=False)
    assert mode_of(path) == 0o600 and open(path, "rb").read() == data
    with pytest.raises(FileExistsError):
        core_secrets._create_exclusive(path, core_secrets._render(["x"]), link=False)
    with pytest.raises(FileExistsError):
        core_secrets._create_exclusive(path, core_secrets._render(["x"]))
    assert open(path, "rb").read() == data
    assert os.listdir(tmp_path) == ["fleet.fernet"]


#: A well-formed key, fixed so that test ids are the same in every process (pytest-xdist).
FIXED_KEY = "gFpKSITDevM-SuZUk6U1vBqEQkLikrGAuQj8lEHw_SM="


# --- refused key files ------------------------------------------------------------------------


@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604, 0o620, 0o610])
def test_refuses_a_key_file_open_to_group_or_others(key_file, mode):
    Vault.open(key_file)
    os.chmod(key_file, mode)
    with pytest.raises(SecretsError) as err:
        Vault.open(key_file)
    message = str(err.value)
    assert key_file in message and f"{mode:04o}" in message and "chmod 600" in message


@pytest.mark.parametrize(
    "content, line",
    [
        ("# header\nnot-a-key\n", 2),
        ("\n\n" + "A" * 44 + "\n", 3),  # 44 characters but no '='
        ("# ok\n" + FIXED_KEY + "\n" + "A" * 42 + "=\n", 3),
        ("# h\n" + FIXED_KEY[:-1] + "+\n", 2),  # '+' is not url-safe
        ("# h\n" + FIXED_KEY + "x\n", 2),
        ("# h\n" + FIXED_KEY + " trailing\n", 2),
        ("# h\nk\u00e9y\n", 2),
    ],
)
def test_refuses_a_malformed_line_naming_the_line_not_its_content(tmp_path, content, line):
    path = tmp_path / "bad.fernet"
    path.write_text(content, encoding="utf-8")
    os.chmod(path, 0o600)
    with pytest.raises(SecretsError) as err:
        Vault.open(path)
    message = str(err.value)
    assert f"{path}: line {line} " in message
    bad_line = content.splitlines()[line - 1]
    assert bad_line not in message  # a mistyped key is still mostly a key


@pytest.mark.parametrize("content", ["", "\n\n", "# only a comment\n# and another\n"])
def test_refuses_a_file_without_keys(tmp_path, content):
    path = tmp_path / "empty.fernet"
    path.write_text(content)
    os.chmod(path, 0o600)
    with pytest.raises(SecretsError, match="holds no key") as err:
        Vault.open(path)
    assert str(path) in str(err.value)


def test_refuses_a_directory_a_fifo_and_a_huge_file(tmp_path):
    with pytest.raises(SecretsError, match="is a directory") as err:
        Vault.open(tmp_path)
    assert str(tmp_path) in str(err.value)
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo, 0o600)
    with pytest.raises(SecretsError, match="not a regular file"):
        Vault.open(fifo)  # and it did not hang waiting for a writer
    huge = tmp_path / "huge"
    huge.write_text(("# padding\n" * 8000) + Fernet.generate_key().decode() + "\n")
    os.chmod(huge, 0o600)
    with pytest.raises(SecretsError, match="too large"):
        Vault.open(huge)


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to give files away")
def test_owner_must_be_root_us_or_the_directorys_owner(key_file):
    vault = Vault.open(key_file)
    directory = os.path.dirname(key_file)
    os.chown(key_file, 65534, 65534)  # a stray user's file in a root-owned directory
    with pytest.raises(SecretsError, match="owned by uid 65534") as err:
        Vault.open(key_file)
    assert key_file in str(err.value) and directory in str(err.value)
    with pytest.raises(SecretsError, match="owned by uid 65534"):
        core_secrets.rotate(key_file)
    # The directory's owner could replace the file anyway: root next to a ``user: salt`` master.
    os.chown(directory, 65534, 65534)
    assert Vault.open(key_file).key_id == vault.key_id
    rotated = core_secrets.rotate(key_file)  # root rewriting keeps the owner and group
    st = os.stat(key_file)
    assert (st.st_uid, st.st_gid, mode_of(key_file)) == (65534, 65534, 0o600)
    assert rotated.key_ids[1] == vault.key_id
    os.chown(key_file, 0, 0)  # root's file is always trusted
    assert Vault.open(key_file).key_id == rotated.key_id


# --- symlinks ---------------------------------------------------------------------------------


def test_a_symlink_is_followed_and_rotation_keeps_it(tmp_path):
    real = tmp_path / "secret" / "fleet.fernet"
    vault = Vault.open(real)
    link = tmp_path / "pki" / "fleet.fernet"
    link.parent.mkdir()
    link.symlink_to(real)
    assert Vault.open(link).key_id == vault.key_id
    token = vault.encrypt("via link")
    rotated = core_secrets.rotate(link)
    assert link.is_symlink() and os.readlink(link) == str(real)
    assert len(keys_in(real)) == 2 and mode_of(real) == 0o600
    assert Vault.open(link).key_id == rotated.key_id != vault.key_id
    assert rotated.decrypt_text(token) == "via link"
    os.chmod(real, 0o644)  # the checks apply to the file the link points at
    with pytest.raises(SecretsError, match="0644"):
        Vault.open(link)


def test_a_dangling_symlink_is_an_error_not_a_place_to_create_a_key(tmp_path):
    link = tmp_path / "fleet.fernet"
    link.symlink_to(tmp_path / "missing" / "key")
    with pytest.raises(SecretsError, match="symlink") as err:
        Vault.open(link)
    assert str(link) in str(err.value)
    assert not (tmp_path / "missing").exists()
    with pytest.raises(SecretsError, match="symlink"):
        core_secrets.rotate(link)


# --- tokens -----------------------------------------------------------------------------------


def test_round_trip_text_and_bytes(key_file):
    vault = Vault.open(key_file)
    for secret in ["hunter2", "", "päss wörd ✓", "x" * 10_000]:
        token = vault.encrypt(secret)
        assert isinstance(token, str) and core_secrets.is_token(token)
        assert secret not in token or secret == ""
        assert vault.decrypt_text(token) == secret
        assert vault.decrypt(token) == secret.encode()
    raw = bytes(range(256))
    assert vault.decrypt(vault.encrypt(raw)) == raw
    assert vault.decrypt(vault.encrypt(raw).encode()) == raw  # a token as bytes works too
    assert vault.decrypt(vault.encrypt(bytearray(b"ba"))) == b"ba"
    assert Vault.open(key_file).decrypt_text(vault.encrypt("another process")) == "another process"
    with pytest.raises(TypeError, match="NoneType"):
        vault.encrypt(None)


def test_tokens_differ_every_time(key_file):
    vault = Vault.open(key_file)
    tokens = {vault.encrypt("same secret") for _ in range(20)}
    assert len(tokens) == 20
    assert {vault.decrypt_text(t) for t in tokens} == {"same secret"}


def test_tampered_foreign_and_junk_tokens_fail_without_leaking(tmp_path):
    vault = Vault.open(tmp_path / "a.fernet")
    other = Vault.open(tmp_path / "b.fernet")
    secret = "s3cret-plaintext"
    token = vault.encrypt(secret)
    raw = bytearray(base64.urlsafe_b64decode(token))
    raw[30] ^= 1  # a flipped ciphertext bit
    tampered = base64.urlsafe_b64encode(bytes(raw)).decode()
    assert core_secrets.is_token(tampered)  # it still looks like a token...
    bad = [
        tampered,
        other.encrypt(secret),  # another master's key
        token[:-4],
        token[:10] + ("B" if token[10] != "B" else "C") + token[11:],  # the timestamp changed
        "",
        "not a token",
        "tökén",
        token.replace("A", "é", 1) if "A" in token else "é" + token,
    ]
    for value in bad:
        for call in (vault.decrypt, vault.decrypt_text, vault.reencrypt, vault.token_key_id):
            with pytest.raises(SecretsError, match="^cannot (decrypt|re-encrypt)") as err:
                call(value)
            message = str(err.value)
            assert secret not in message and str(tmp_path / "a.fernet") in message
            assert not any(key in message for key in keys_in(tmp_path / "a.fernet"))
            assert err.value.__cause__ is None  # no chained InvalidToken traceback
            assert err.value.__context__ is None or err.value.__suppress_context__
    for junk in (None, 42, ["list"]):
        with pytest.raises(SecretsError, match="expected a token string"):
            vault.decrypt(junk)
    binary = vault.encrypt(b"\xff\xfe not utf-8")
    with pytest.raises(SecretsError, match="not UTF-8"):
        vault.decrypt_text(binary)


def test_is_token_tells_tokens_from_plaintext(key_file):
    vault = Vault.open(key_file)
    for size in (0, 1, 15, 16, 17, 100):
        token = vault.encrypt("x" * size)
        assert core_secrets.is_token(token) and core_secrets.is_token(token.encode())
    fake_version = base64.urlsafe_b64encode(b"\x81" + bytes(88)).decode()
    not_blocks = base64.urlsafe_b64encode(b"\x80" + bytes(80)).decode()
    too_short = base64.urlsafe_b64encode(b"\x80" + bytes(56)).decode()
    key = core_secrets.generate_key()
    for value in [
        "",
        "hunter2",
        "correct horse battery staple",
        key,  # a key is not a token
        fake_version,
        not_blocks,
        too_short,
        vault.encrypt("x") + "\n",
        vault.encrypt("x")[1:],
        b"\xff\x80",
        None,
        123,
    ]:
        assert not core_secrets.is_token(value), value


# --- rotation ---------------------------------------------------------------------------------


def test_rotate_reencrypt_retire(key_file):
    vault = Vault.open(key_file)
    old_tokens = {name: vault.encrypt(name) for name in ("ssh", "kvm", "enrol")}
    first_id, (first_key,) = vault.key_id, keys_in(key_file)

    rotated = core_secrets.rotate(key_file)
    assert mode_of(key_file) == 0o600
    assert len(rotated) == 2 and rotated.key_ids == [rotated.key_id, first_id]
    assert rotated.key_id != first_id
    new_key, kept_key = keys_in(key_file)  # the new key first, the old one kept after it
    assert kept_key == first_key and core_secrets.key_fingerprint(new_key) == rotated.key_id
    for name, token in old_tokens.items():  # old tokens still decrypt
        assert rotated.decrypt_text(token) == name
        assert rotated.token_key_id(token) == first_id
    assert rotated.token_key_id(rotated.encrypt("new")) == rotated.key_id

    new_tokens = {name: rotated.reencrypt(token) for name, token in old_tokens.items()}
    for name, token in new_tokens.items():
        assert token != old_tokens[name] and rotated.token_key_id(token) == rotated.key_id

    retired = core_secrets.retire(key_file)
    assert mode_of(key_file) == 0o600
    assert len(retired) == 1 and retired.key_id == rotated.key_id
    assert keys_in(key_file) == [new_key]
    for name, token in new_tokens.items():
        assert retired.decrypt_text(token) == name
    for token in old_tokens.values():
        with pytest.raises(SecretsError, match="cannot decrypt"):
            retired.decrypt(token)
    assert sorted(os.listdir(os.path.dirname(key_file))) == ["fleet.fernet"]  # no temp files


def test_retire_keeps_the_newest_and_checks_its_argument(key_file):
    Vault.open(key_file)
    for _ in range(3):
        core_secrets.rotate(key_file)
    all_ids = Vault.open(key_file).key_ids
    assert len(all_ids) == 4
    assert core_secrets.retire(key_file, keep=2).key_ids == all_ids[:2]
    before = os.stat(key_file)
    assert core_secrets.retire(key_file, keep=5).key_ids == all_ids[:2]  # nothing to drop
    assert os.stat(key_file).st_ino == before.st_ino  # and nothing rewritten
    for keep in (0, -1, True, "1", 1.0):
        with pytest.raises(SecretsError, match="at least 1 key") as err:
            core_secrets.retire(key_file, keep=keep)
        assert key_file in str(err.value)


def test_rotate_refuses_a_missing_or_unsafe_file(key_file):
    with pytest.raises(SecretsError, match="no such key file"):
        core_secrets.rotate(key_file)
    assert not os.path.exists(key_file)
    Vault.open(key_file)
    os.chmod(key_file, 0o644)
    with pytest.raises(SecretsError, match="chmod 600"):
        core_secrets.rotate(key_file)
    assert len(keys_in(key_file)) == 1


def test_refreshed_sees_another_processes_rotation(key_file):
    vault = Vault.open(key_file)
    assert vault.refreshed() is vault
    core_secrets.rotate(key_file)  # as ``salt-run fleet.rotate_key`` would, elsewhere
    fresh = vault.refreshed()
    assert fresh is not vault and len(fresh) == 2 and fresh.key_ids[1] == vault.key_id
    assert fresh.refreshed() is fresh
    os.unlink(key_file)
    with pytest.raises(SecretsError, match="has gone"):
        fresh.refreshed()


def _rotate_in_child(path, barrier, results):
    barrier.wait()
    try:
        results.put(core_secrets.rotate(path).key_id)
    except Exception as exc:  # noqa: BLE001 - reported to the parent process
        results.put(repr(exc))


def test_concurrent_rotations_keep_every_new_key(key_file):
    first = Vault.open(key_file).key_id
    ctx = multiprocessing.get_context("fork")
    barrier, results = ctx.Barrier(3), ctx.Queue()
    procs = [
        ctx.Process(target=_rotate_in_child, args=(key_file, barrier, results)) for _ in range(3)
    ]
    for proc in procs:
        proc.start()
    new_ids = {results.get(timeout=10) for _ in procs}
    for proc in procs:
        proc.join(timeout=10)
    final = Vault.open(key_file, create=False)
    assert len(final) == 4 and final.key_ids[-1] == first
    assert new_ids == set(final.key_ids[:3])
