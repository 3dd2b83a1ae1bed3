"""The web UI's auth rules: roles, usernames, passwords, TOTP, recovery codes, API and CSRF
tokens, throttling. bcrypt runs at cost 4 here so the file stays fast."""

import base64
import hashlib
import hmac
import itertools
import re
import threading
import time
import unicodedata

import bcrypt
import pyotp
import pytest

from saltext_fleet.core import webauth
from saltext_fleet.core.webauth import WebAuthError

FAST = 4  # bcrypt cost for tests

OPERATOR_PERMISSIONS = [
    "keys.decide",
    "enrol",
    "bootstrap",
    "actions.run",
    "nodes.edit",
    "baselines.edit",
    "vulns.triage",
    "kvm.power",
    "kvm.media",
    "kvm.console",
    "alerts.ack",
    "alerts.test",
]


# -- roles and permissions ---------------------------------------------------------------------


def test_roles_are_ordered_by_power():
    assert webauth.ROLES == ("viewer", "auditor", "operator", "admin")


def test_every_permission_names_only_known_roles():
    for name, holders in webauth.PERMISSIONS.items():
        assert isinstance(holders, frozenset), name
        assert holders, name
        assert holders <= set(webauth.ROLES), name


def test_permission_table_is_complete():
    assert set(webauth.PERMISSIONS) == {
        "view",
        "audit.view",
        "keys.decide",
        "enrol",
        "bootstrap",
        "actions.run",
        "nodes.edit",
        "baselines.edit",
        "vulns.triage",
        "kvm.power",
        "kvm.media",
        "users.manage",
        "jobs.view",
        "jobs.returns",
        "tokens.own",
        "kvm.watch",
        "kvm.console",
        "alerts.ack",
        "alerts.test",
        "alerts.routes",
    }


@pytest.mark.parametrize("permission", ["view", "jobs.view", "tokens.own"])
@pytest.mark.parametrize("role", ["viewer", "auditor", "operator", "admin"])
def test_every_role_may_view_and_own_its_token(role, permission):
    assert webauth.allowed(role, permission)


@pytest.mark.parametrize(
    "permission", [*OPERATOR_PERMISSIONS, "users.manage", "audit.view", "jobs.returns"]
)
def test_viewer_is_refused_everything_beyond_viewing(permission):
    assert not webauth.allowed("viewer", permission)


@pytest.mark.parametrize("permission", [*OPERATOR_PERMISSIONS, "users.manage"])
def test_auditor_may_not_act(permission):
    assert not webauth.allowed("auditor", permission)


@pytest.mark.parametrize("role", ["auditor", "operator", "admin"])
def test_audit_view(role):
    assert webauth.allowed(role, "audit.view")
    assert webauth.allowed(role, "jobs.returns")  # job returns hold command output


@pytest.mark.parametrize("permission", OPERATOR_PERMISSIONS)
def test_operator_acts_but_does_not_manage_users(permission):
    assert webauth.allowed("operator", permission)
    assert not webauth.allowed("operator", "users.manage")


def test_admin_holds_every_permission():
    for permission in webauth.PERMISSIONS:
        assert webauth.allowed("admin", permission), permission
    assert webauth.permissions_of("admin") == frozenset(webauth.PERMISSIONS)


def test_only_admin_manages_users():
    assert [r for r in webauth.ROLES if webauth.allowed(r, "users.manage")] == ["admin"]


def test_only_admin_edits_alert_routes():
    assert [r for r in webauth.ROLES if webauth.allowed(r, "alerts.routes")] == ["admin"]


def test_power_grows_with_the_role_order():
    held = [webauth.permissions_of(role) for role in webauth.ROLES]
    for weaker, stronger in itertools.pairwise(held):
        assert weaker < stronger


@pytest.mark.parametrize("permission", ["keys.accept", "View", "", None, 3, "users.manage "])
def test_unknown_permission_raises(permission):
    with pytest.raises(WebAuthError, match="is not a permission"):
        webauth.allowed("admin", permission)


def test_unknown_permission_raises_even_for_unknown_role():
    with pytest.raises(WebAuthError):
        webauth.allowed("nobody", "keys.acept")


@pytest.mark.parametrize("role", ["root", "Admin", "", None, 1, ["admin"]])
def test_unknown_role_holds_nothing(role):
    for permission in webauth.PERMISSIONS:
        assert webauth.allowed(role, permission) is False
    assert webauth.permissions_of(role) == frozenset()


def test_permissions_of_viewer():
    assert webauth.permissions_of("viewer") == {"view", "jobs.view", "tokens.own", "kvm.watch"}


@pytest.mark.parametrize("role", ["viewer", "auditor", "operator", "admin"])
def test_every_role_may_watch_a_console_only_operators_type(role):
    assert webauth.allowed(role, "kvm.watch")
    assert webauth.allowed(role, "kvm.console") is (role in ("operator", "admin"))


@pytest.mark.parametrize("role", ["viewer", "auditor", "operator", "admin"])
def test_check_role_accepts_roles(role):
    assert webauth.check_role(role) == role


@pytest.mark.parametrize("bad", ["root", "ADMIN", "", None, 7])
def test_check_role_names_the_value_and_the_roles(bad):
    with pytest.raises(WebAuthError) as info:
        webauth.check_role(bad)
    message = str(info.value)
    assert repr(bad) in message
    assert "viewer, auditor, operator, admin" in message
    assert info.value.field == "role"


def test_check_role_truncates_a_huge_value():
    with pytest.raises(WebAuthError) as info:
        webauth.check_role("r" * 10_000)
    assert len(str(info.value)) < 200


def test_webauth_error_is_a_value_error():
    assert issubclass(WebAuthError, ValueError)


# -- usernames ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "good", ["alice", "a", "A", "0", "bob.smith", "ops@example.com", "x_y-z", "_svc", "u" * 64]
)
def test_good_usernames(good):
    assert webauth.check_username(good) == good


@pytest.mark.parametrize(
    "bad, words",
    [
        ("", "must not be empty"),
        ("u" * 65, "at most 64"),
        (".hidden", "must not start with '.' or '-'"),
        ("-rf", "must not start with '.' or '-'"),
        ("al ice", "characters other than"),
        ("../etc", "characters other than"),
        ("alice/bob", "'/'"),
        ("al\nice", "'\\n'"),
        ("zoë", "'ë'"),
        ("a:b", "':'"),
        ("a;b", "';'"),
    ],
)
def test_bad_usernames(bad, words):
    with pytest.raises(WebAuthError) as info:
        webauth.check_username(bad)
    assert words in str(info.value)
    assert info.value.field == "username"


@pytest.mark.parametrize("bad", [None, 42, b"alice", ["alice"]])
def test_username_must_be_a_string(bad):
    with pytest.raises(WebAuthError, match="must be a string"):
        webauth.check_username(bad)


def test_username_error_shows_the_value_truncated():
    with pytest.raises(WebAuthError) as info:
        webauth.check_username("x" * 500 + "/")
    message = str(info.value)
    assert "'xxxx" in message
    assert len(message) < 200

    with pytest.raises(WebAuthError) as info:
        webauth.check_username("bad name")
    assert "'bad name'" in str(info.value)


# -- password policy ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "good", ["x" * 12, "correct horse battery staple", "p" * 1024, "ünïcödé pässwörd 🔑"]
)
def test_good_passwords(good):
    assert webauth.check_password_policy(good, "alice") == good


def test_short_password_message_says_how_long():
    with pytest.raises(WebAuthError) as info:
        webauth.check_password_policy("x" * 11, "alice")
    assert "11 characters" in str(info.value)
    assert "at least 12" in str(info.value)
    assert info.value.field == "password"


def test_empty_password_is_too_short():
    with pytest.raises(WebAuthError, match="at least 12"):
        webauth.check_password_policy("", "alice")


def test_long_password_message():
    with pytest.raises(WebAuthError, match="1025 characters; at most 1024"):
        webauth.check_password_policy("p" * 1025, "alice")


@pytest.mark.parametrize("username", ["administrator", "ADMINISTRATOR", "AdMiNiStRaToR"])
def test_password_equal_to_username_is_refused_in_any_case(username):
    with pytest.raises(WebAuthError, match="must not be the username"):
        webauth.check_password_policy("Administrator", username)


def test_password_containing_username_is_allowed():
    assert webauth.check_password_policy("administrator!", "administrator")


@pytest.mark.parametrize("bad", [None, 123456789012, b"x" * 12])
def test_password_must_be_a_string(bad):
    with pytest.raises(WebAuthError, match="must be a string"):
        webauth.check_password_policy(bad, "alice")


def test_password_policy_messages_never_contain_the_password():
    secret = "hunter2"
    with pytest.raises(WebAuthError) as info:
        webauth.check_password_policy(secret, "alice")
    assert secret not in str(info.value)


# -- password hashing --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def stored():
    return webauth.hash_password("correct horse battery", rounds=FAST)


def test_hash_format(stored):
    assert stored.startswith("bcrypt-sha256$2b$04$")
    assert len(stored) == 73
    assert stored.isascii()
    bcrypt_part = "$" + stored[len(webauth.SCHEME) :]
    assert re.fullmatch(r"\$2b\$04\$[./A-Za-z0-9]{53}", bcrypt_part)


def test_round_trip(stored):
    assert webauth.verify_password("correct horse battery", stored) is True


@pytest.mark.parametrize(
    "wrong",
    ["correct horse batter", "correct horse battery ", "Correct horse battery", "x", ""],
)
def test_wrong_password_is_refused(stored, wrong):
    assert webauth.verify_password(wrong, stored) is False


def test_hashes_are_salted():
    a = webauth.hash_password("same password here", rounds=FAST)
    b = webauth.hash_password("same password here", rounds=FAST)
    assert a != b
    assert webauth.verify_password("same password here", a)
    assert webauth.verify_password("same password here", b)


def test_default_cost_is_12():
    assert webauth.BCRYPT_ROUNDS == 12


def test_long_password_is_not_truncated():
    base = "a" * 100
    assert len(base.encode()) > 72
    stored = webauth.hash_password(base + "X", rounds=FAST)
    assert webauth.verify_password(base + "X", stored)
    assert not webauth.verify_password(base + "Y", stored)
    assert not webauth.verify_password(base, stored)
    assert not webauth.verify_password("a" * 72, stored)


def test_long_password_near_72_bytes_boundary():
    for length in (71, 72, 73, 200):
        password = "b" * length
        stored = webauth.hash_password(password, rounds=FAST)
        assert webauth.verify_password(password, stored)
        assert not webauth.verify_password(password[:-1] + "c", stored)


def test_longest_allowed_password_round_trip():
    password = "q" * 1023 + "!"
    stored = webauth.hash_password(password, rounds=FAST)
    assert webauth.verify_password(password, stored)
    assert not webauth.verify_password("q" * 1024, stored)


def test_bcrypt_does_not_see_the_raw_password():
    """The stored bcrypt hash is of the pre-hash, not of the password itself."""
    stored = webauth.hash_password("plain password!", rounds=FAST)
    raw_bcrypt = ("$" + stored[len(webauth.SCHEME) :]).encode()
    assert not bcrypt.checkpw(b"plain password!", raw_bcrypt)
    # nor of an unsalted SHA-256 of it (a value that may have leaked from elsewhere)
    unsalted = base64.b64encode(hashlib.sha256(b"plain password!").digest())
    assert not bcrypt.checkpw(unsalted, raw_bcrypt)


def test_unicode_password():
    password = "Grüße aus Köln 🔑 пароль 密码"
    stored = webauth.hash_password(password, rounds=FAST)
    assert webauth.verify_password(password, stored)
    assert not webauth.verify_password(password.replace("ü", "u"), stored)


def test_unicode_composed_and_decomposed_forms_match():
    composed = unicodedata.normalize("NFC", "café crème brûlée")
    decomposed = unicodedata.normalize("NFD", composed)
    assert composed != decomposed
    stored = webauth.hash_password(composed, rounds=FAST)
    assert webauth.verify_password(decomposed, stored)


def test_password_with_nul_and_surrogate_does_not_break():
    password = "nul\x00byte and \ud800 lone surrogate"
    stored = webauth.hash_password(password, rounds=FAST)
    assert webauth.verify_password(password, stored)
    assert not webauth.verify_password("nul", stored)


@pytest.mark.parametrize("bad", [None, 12, b"bytes password", ""])
def test_hash_password_refuses_non_passwords(bad):
    with pytest.raises(WebAuthError):
        webauth.hash_password(bad, rounds=FAST)


def test_hash_password_refuses_overlong():
    with pytest.raises(WebAuthError, match="at most 1024"):
        webauth.hash_password("p" * 1025, rounds=FAST)


@pytest.mark.parametrize("rounds", [3, 32, 0, -1, "12", 4.0, True])
def test_hash_password_refuses_bad_rounds(rounds):
    with pytest.raises(WebAuthError, match="rounds"):
        webauth.hash_password("a good long password", rounds=rounds)


def test_malformed_stored_hashes_never_verify(stored):
    body = stored[len(webauth.SCHEME) :]
    raw_bcrypt = bcrypt.hashpw(b"correct horse battery", bcrypt.gensalt(4)).decode()
    malformed = [
        None,
        "",
        0,
        b"bytes",
        ["list"],
        "bcrypt-sha256$",
        "bcrypt-sha256$garbage",
        stored[:-1],  # truncated
        stored + "x",  # too long
        body,  # without the scheme marker
        "$" + body,  # a plain bcrypt string
        raw_bcrypt,  # plain bcrypt of the very password
        "bcrypt-sha256$" + raw_bcrypt[1:].replace("$2b$", "$2a$", 1),
        "bcrypt-sha256$2b$99$" + body[7:],  # cost out of range
        "bcrypt-sha256$2b$04$" + "!" * 53,  # bad alphabet
        "argon2$whatever",
        "bcrypt-sha256$2b$04$" + "\u00e9" * 53,
    ]
    for value in malformed:
        assert webauth.verify_password("correct horse battery", value) is False, value


@pytest.mark.parametrize("bad", [None, 42, b"correct horse battery", ["x"], "p" * 1025])
def test_verify_password_never_raises_for_bad_password_types(stored, bad):
    assert webauth.verify_password(bad, stored) is False


def test_verify_is_bound_to_the_salt(stored):
    other = webauth.hash_password("correct horse battery", rounds=FAST)
    # take the salt of one and the digest of the other: must not verify
    spliced = stored[: len(webauth.SCHEME) + 28] + other[len(webauth.SCHEME) + 28 :]
    assert spliced != stored
    assert webauth.verify_password("correct horse battery", spliced) is False


def test_needs_rehash(stored):
    assert webauth.needs_rehash(stored, rounds=FAST) is False
    assert webauth.needs_rehash(stored) is True  # cost 4 < default 12
    assert webauth.needs_rehash(stored, rounds=5) is True
    assert webauth.needs_rehash(webauth.hash_password("x" * 12, rounds=6), rounds=5) is True
    raw_bcrypt = bcrypt.hashpw(b"whatever", bcrypt.gensalt(12)).decode()
    for old in [raw_bcrypt, "", None, "md5$abc", "bcrypt-sha256$broken"]:
        assert webauth.needs_rehash(old) is True, old


def test_needs_rehash_refuses_bad_rounds(stored):
    with pytest.raises(WebAuthError):
        webauth.needs_rehash(stored, rounds=2)


def test_verify_dummy_is_always_false_and_costs_a_hash():
    assert webauth.verify_dummy("anything at all", rounds=FAST) is False
    assert webauth.verify_dummy(None, rounds=FAST) is False
    dummy = webauth.dummy_hash(FAST)
    assert dummy is webauth.dummy_hash(FAST)  # made once
    assert dummy.startswith("bcrypt-sha256$2b$04$")
    assert not webauth.needs_rehash(dummy, rounds=FAST)


def test_verify_dummy_runs_bcrypt(monkeypatch):
    calls = []
    real = bcrypt.checkpw

    def spy(password, hashed):
        calls.append(hashed)
        return real(password, hashed)

    monkeypatch.setattr(webauth.bcrypt, "checkpw", spy)
    webauth.verify_dummy("a password", rounds=FAST)
    assert calls and calls[0].startswith(b"$2b$04$")


def test_dummy_hash_is_lazy_and_at_default_cost(monkeypatch):
    # computing the module attribute at the default cost takes a real bcrypt at 12: stub
    # the hash so this test checks laziness and the cost used, not bcrypt's speed
    monkeypatch.setattr(webauth, "_dummy_hashes", {})
    seen = []

    def fake_hash(password, rounds=webauth.BCRYPT_ROUNDS):
        seen.append(rounds)
        return f"bcrypt-sha256$2b${rounds:02d}$" + "a" * 53

    monkeypatch.setattr(webauth, "hash_password", fake_hash)
    assert "DUMMY_HASH" not in vars(webauth)
    first = webauth.DUMMY_HASH
    second = webauth.DUMMY_HASH
    assert first == second
    assert seen == [webauth.BCRYPT_ROUNDS]
    assert first.startswith("bcrypt-sha256$2b$12$")
    with pytest.raises(AttributeError):
        webauth.NO_SUCH_THING  # noqa: B018


# -- TOTP --------------------------------------------------------------------------------------

SECRET = "JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP"
NOW = 1_800_000_015.0  # 15 s into a time step


def code_at(when, secret=SECRET):
    return pyotp.TOTP(secret).at(when)


def test_new_totp_secret():
    a, b = webauth.new_totp_secret(), webauth.new_totp_secret()
    assert a != b
    for secret in (a, b):
        assert len(secret) == 32
        assert re.fullmatch(r"[A-Z2-7]{32}", secret)
        assert len(base64.b32decode(secret)) == 20


def test_totp_uri():
    uri = webauth.totp_uri(SECRET, "alice@example.com")
    assert uri.startswith("otpauth://totp/")
    assert f"secret={SECRET}" in uri
    assert "issuer=saltext-fleet" in uri
    assert "alice%40example.com" in uri
    parsed = pyotp.parse_uri(uri)
    assert parsed.secret == SECRET
    assert parsed.issuer == "saltext-fleet"
    assert parsed.name == "alice@example.com"


def test_totp_uri_custom_issuer():
    assert "issuer=Build%20Farm" in webauth.totp_uri(SECRET, "bob", issuer="Build Farm")


def test_totp_uri_refuses_bad_username():
    with pytest.raises(WebAuthError):
        webauth.totp_uri(SECRET, "bad:name")


def test_totp_counter():
    assert webauth.totp_counter(NOW) == int(NOW // 30)
    assert abs(webauth.totp_counter() - int(time.time() // 30)) <= 1


def test_totp_accepted_now():
    counter = webauth.verify_totp(SECRET, code_at(NOW), None, now=NOW)
    assert counter == int(NOW // 30)


def test_totp_with_real_clock():
    assert webauth.verify_totp(SECRET, pyotp.TOTP(SECRET).now(), None) is not None


@pytest.mark.parametrize("offset", [-30, 30])
def test_totp_adjacent_steps_accepted_with_window_1(offset):
    counter = webauth.verify_totp(SECRET, code_at(NOW + offset), None, now=NOW)
    assert counter == int((NOW + offset) // 30)


@pytest.mark.parametrize("offset", [-30, 30])
def test_totp_adjacent_steps_refused_with_window_0(offset):
    assert webauth.verify_totp(SECRET, code_at(NOW + offset), None, now=NOW, window=0) is None


@pytest.mark.parametrize("offset", [-90, 90, -60, 60, -3600])
def test_totp_far_steps_refused(offset):
    code = code_at(NOW + offset)
    # SECRET and NOW are fixed: no far code equals one inside the window
    assert code not in {code_at(NOW + d) for d in (-30, 0, 30)}
    assert webauth.verify_totp(SECRET, code, None, now=NOW) is None


def test_totp_wider_window():
    assert webauth.verify_totp(SECRET, code_at(NOW - 60), None, now=NOW, window=2) == int(
        (NOW - 60) // 30
    )


def test_totp_replay_of_same_counter_refused():
    code = code_at(NOW)
    counter = webauth.verify_totp(SECRET, code, None, now=NOW)
    assert counter is not None
    assert webauth.verify_totp(SECRET, code, counter, now=NOW) is None
    # nor later within the window, while the code is still "valid"
    assert webauth.verify_totp(SECRET, code, counter, now=NOW + 25) is None


def test_totp_older_code_refused_after_newer_used():
    newer = webauth.verify_totp(SECRET, code_at(NOW), None, now=NOW)
    assert webauth.verify_totp(SECRET, code_at(NOW - 30), newer, now=NOW) is None


def test_totp_next_code_accepted_after_previous_used():
    used = webauth.verify_totp(SECRET, code_at(NOW), None, now=NOW)
    nxt = webauth.verify_totp(SECRET, code_at(NOW + 30), used, now=NOW + 30)
    assert nxt == used + 1


def test_totp_last_counter_before_window_does_not_block():
    counter = int(NOW // 30)
    assert webauth.verify_totp(SECRET, code_at(NOW), counter - 1, now=NOW) == counter


@pytest.mark.parametrize(
    "fmt", ["{}", " {} ", "{0[0]}{0[1]}{0[2]} {0[3]}{0[4]}{0[5]}", "{}\n", "\t{}"]
)
def test_totp_spaces_are_ignored(fmt):
    code = code_at(NOW)
    typed = fmt.format(code)
    assert webauth.verify_totp(SECRET, typed, None, now=NOW) == int(NOW // 30)


@pytest.mark.parametrize(
    "garbage",
    [
        None,
        123456,
        b"123456",
        "",
        "12345",
        "1234567",
        "abcdef",
        "12345a",
        "-12345",
        "+12345",
        "١٢٣٤٥٦",  # Arabic-Indic digits: str.isdigit() would take them
        "1" * 10_000,
        "12-345",
    ],
)
def test_totp_garbage_codes_give_none(garbage):
    assert webauth.verify_totp(SECRET, garbage, None, now=NOW) is None


def test_totp_wrong_code_gives_none():
    right = code_at(NOW)
    wrong = f"{(int(right) + 1) % 1_000_000:06d}"
    assert wrong not in {code_at(NOW + d) for d in (-30, 0, 30)}  # fixed SECRET and NOW
    assert webauth.verify_totp(SECRET, wrong, None, now=NOW) is None


def test_totp_code_for_another_secret_refused():
    window = {code_at(NOW + d) for d in (-30, 0, 30)}
    code = code_at(NOW, webauth.new_totp_secret())
    while code in window:  # another secret's code may equal ours by chance: draw again
        code = code_at(NOW, webauth.new_totp_secret())
    assert webauth.verify_totp(SECRET, code, None, now=NOW) is None


def test_totp_lowercase_secret_works():
    assert webauth.verify_totp(SECRET.lower(), code_at(NOW), None, now=NOW) is not None


@pytest.mark.parametrize("secret", ["", None, "not base32!", "JBSWY3DP", "1" * 32])
def test_totp_unusable_secret_raises(secret):
    with pytest.raises(WebAuthError, match="TOTP secret"):
        webauth.verify_totp(secret, "123456", None, now=NOW)


@pytest.mark.parametrize("window", [-1, 11, 1.5, "1", True])
def test_totp_bad_window_raises(window):
    with pytest.raises(WebAuthError, match="window"):
        webauth.verify_totp(SECRET, code_at(NOW), None, now=NOW, window=window)


@pytest.mark.parametrize("last", ["5", 1.0, True])
def test_totp_bad_last_counter_raises(last):
    with pytest.raises(WebAuthError, match="last_counter"):
        webauth.verify_totp(SECRET, code_at(NOW), last, now=NOW)


# -- recovery codes ----------------------------------------------------------------------------


def test_new_recovery_codes_shape():
    codes = webauth.new_recovery_codes()
    assert len(codes) == 10
    assert len(set(codes)) == 10
    for code in codes:
        assert re.fullmatch(r"[a-z2-9]{4}-[a-z2-9]{4}-[a-z2-9]{4}", code), code
        assert not set(code) & set("01ilo")


def test_recovery_alphabet_has_no_ambiguous_characters():
    assert not set(webauth.RECOVERY_ALPHABET) & set("01ilo")
    assert len(set(webauth.RECOVERY_ALPHABET)) == len(webauth.RECOVERY_ALPHABET) == 31


def test_recovery_codes_are_random():
    assert set(webauth.new_recovery_codes(5)).isdisjoint(webauth.new_recovery_codes(5))
    # every alphabet character turns up over enough codes
    seen = set("".join(webauth.new_recovery_codes(100)).replace("-", ""))
    assert seen == set(webauth.RECOVERY_ALPHABET)


@pytest.mark.parametrize("n", [1, 3, 100])
def test_new_recovery_codes_count(n):
    assert len(webauth.new_recovery_codes(n)) == n


@pytest.mark.parametrize("n", [0, -1, 101, "10", True])
def test_new_recovery_codes_bad_count(n):
    with pytest.raises(WebAuthError):
        webauth.new_recovery_codes(n)


def test_hash_recovery_code_normalises():
    expected = hashlib.sha256(b"k7dmxq3pv2na").hexdigest()
    for typed in ["k7dm-xq3p-v2na", "K7DM-XQ3P-V2NA", "k7dm xq3p v2na", " k7dmxq3pv2na\n"]:
        assert webauth.hash_recovery_code(typed) == expected


def test_hash_recovery_code_refuses_non_strings():
    with pytest.raises(WebAuthError):
        webauth.hash_recovery_code(None)


def test_recovery_codes_are_single_use():
    codes = webauth.new_recovery_codes(3)
    hashes = [webauth.hash_recovery_code(c) for c in codes]

    remaining = webauth.use_recovery_code(codes[1], hashes)
    assert remaining == [hashes[0], hashes[2]]
    assert hashes == [webauth.hash_recovery_code(c) for c in codes]  # input untouched

    assert webauth.use_recovery_code(codes[1], remaining) is None  # used up

    remaining = webauth.use_recovery_code(codes[0].upper().replace("-", " "), remaining)
    assert remaining == [hashes[2]]
    remaining = webauth.use_recovery_code(codes[2], remaining)
    assert remaining == []  # the last one: an empty list, not None
    assert webauth.use_recovery_code(codes[2], remaining) is None


def test_recovery_code_duplicated_hash_is_used_once():
    code = webauth.new_recovery_codes(1)[0]
    h = webauth.hash_recovery_code(code)
    assert webauth.use_recovery_code(code, [h, h]) == [h]


@pytest.mark.parametrize(
    "garbage", [None, 42, "", "not-a-code", "aaaa-bbbb-ccc", "aaaa-bbbb-cccc-d", "x" * 10_000]
)
def test_recovery_garbage_gives_none(garbage):
    hashes = [webauth.hash_recovery_code(c) for c in webauth.new_recovery_codes(3)]
    assert webauth.use_recovery_code(garbage, hashes) is None


def test_recovery_code_tolerates_junk_in_stored_hashes():
    code = webauth.new_recovery_codes(1)[0]
    h = webauth.hash_recovery_code(code)
    assert webauth.use_recovery_code(code, [None, "", "zz", h]) == [None, "", "zz"]
    assert webauth.use_recovery_code(code, []) is None


def test_recovery_code_uppercase_stored_hash_matches():
    code = webauth.new_recovery_codes(1)[0]
    assert webauth.use_recovery_code(code, [webauth.hash_recovery_code(code).upper()]) == []


# -- API tokens --------------------------------------------------------------------------------


def test_new_api_token_shape():
    token = webauth.new_api_token()
    assert token.startswith("fleet_")
    assert len(token) == len("fleet_") + 43
    assert re.fullmatch(r"fleet_[A-Za-z0-9_-]{43}", token)
    assert webauth.is_api_token(token)
    assert webauth.new_api_token() != token


def test_api_token_hash():
    token = webauth.new_api_token()
    assert webauth.api_token_hash(token) == hashlib.sha256(token.encode()).hexdigest()
    assert webauth.api_token_hash(token) != webauth.api_token_hash(webauth.new_api_token())
    with pytest.raises(WebAuthError):
        webauth.api_token_hash(None)


@pytest.mark.parametrize(
    "value",
    [
        None,
        42,
        b"fleet_" + b"a" * 43,
        "",
        "fleet_",
        "fleet_" + "a" * 42,
        "fleet_" + "a" * 44,
        "Fleet_" + "a" * 43,
        "salt_" + "a" * 44,
        "fleet_" + "a" * 42 + "=",
        "fleet_" + "a" * 42 + "/",
        " fleet_" + "a" * 43,
        "fleet_" + "a" * 43 + "\n",
        "Bearer fleet_" + "a" * 43,
    ],
)
def test_is_api_token_refuses_other_shapes(value):
    assert webauth.is_api_token(value) is False


# -- CSRF --------------------------------------------------------------------------------------

KEY = b"k" * 32


def test_csrf_round_trip():
    token = webauth.csrf_token(KEY, "session-1")
    assert re.fullmatch(r"[A-Za-z0-9_-]{22}\.[A-Za-z0-9_-]{43}", token)
    assert webauth.check_csrf(KEY, "session-1", token) is True


def test_csrf_tokens_differ_each_call_and_all_stay_valid():
    a, b = webauth.csrf_token(KEY, "s"), webauth.csrf_token(KEY, "s")
    assert a != b
    assert webauth.check_csrf(KEY, "s", a)
    assert webauth.check_csrf(KEY, "s", b)


def test_csrf_other_session_refused():
    token = webauth.csrf_token(KEY, "session-1")
    assert webauth.check_csrf(KEY, "session-2", token) is False
    assert webauth.check_csrf(KEY, "session-1x", token) is False


def test_csrf_other_key_refused():
    token = webauth.csrf_token(KEY, "s")
    assert webauth.check_csrf(b"other key", "s", token) is False


def test_csrf_key_may_be_bytearray():
    token = webauth.csrf_token(bytearray(KEY), "s")
    assert webauth.check_csrf(KEY, "s", token)


def test_csrf_tampered_tokens_refused():
    token = webauth.csrf_token(KEY, "s")
    nonce, mac = token.split(".")
    flip = lambda c: "A" if c != "A" else "B"  # noqa: E731
    tampered = [
        flip(nonce[0]) + nonce[1:] + "." + mac,
        nonce + "." + mac[:-1] + flip(mac[-1]),
        nonce + "." + mac[:20] + flip(mac[20]) + mac[21:],
        webauth.csrf_token(KEY, "s").split(".")[0] + "." + mac,  # another nonce, same MAC
        mac + "." + nonce,
        token + "=",
        token[:-1],
        " " + token,
        token.replace(".", ":"),
    ]
    for value in tampered:
        assert webauth.check_csrf(KEY, "s", value) is False, value


def test_csrf_is_not_a_plain_hmac_of_the_session():
    """The MAC is domain-separated: an HMAC of the session id under the same key (what
    another part of the app might sign) is not a valid token."""
    token = webauth.csrf_token(KEY, "s")
    nonce = token.split(".")[0]
    plain = hmac.new(KEY, f"{nonce}.s".encode(), hashlib.sha256).digest()
    forged = nonce + "." + base64.urlsafe_b64encode(plain).rstrip(b"=").decode()
    assert webauth.check_csrf(KEY, "s", forged) is False


@pytest.mark.parametrize(
    "garbage", [None, "", ".", "a.b", 42, b"x.y", "x" * 10_000, "é" * 22 + "." + "é" * 43]
)
def test_csrf_garbage_refused(garbage):
    assert webauth.check_csrf(KEY, "s", garbage) is False


def test_check_csrf_with_bad_key_or_session_is_false():
    token = webauth.csrf_token(KEY, "s")
    assert webauth.check_csrf(b"", "s", token) is False
    assert webauth.check_csrf(None, "s", token) is False
    assert webauth.check_csrf("k" * 32, "s", token) is False
    assert webauth.check_csrf(KEY, "", token) is False
    assert webauth.check_csrf(KEY, None, token) is False


@pytest.mark.parametrize("key, session", [(b"", "s"), ("str key", "s"), (KEY, ""), (KEY, None)])
def test_csrf_token_refuses_bad_arguments(key, session):
    with pytest.raises(WebAuthError):
        webauth.csrf_token(key, session)


# -- Throttle ----------------------------------------------------------------------------------


def test_throttle_locks_after_max_failures():
    t = webauth.Throttle(max_failures=5, window=900, lockout=900)
    for i in range(4):
        assert t.failure("user:alice", now=1000 + i) == 0.0
        assert t.locked("user:alice", now=1000 + i) == 0.0
    assert t.failure("user:alice", now=1004) == 900.0
    assert t.locked("user:alice", now=1004) == 900.0
    assert t.locked("user:alice", now=1500) == pytest.approx(404.0)
    assert t.locked("user:bob", now=1500) == 0.0  # keys are independent


def test_throttle_unlocks_after_lockout():
    t = webauth.Throttle(max_failures=5, window=900, lockout=900)
    for i in range(5):
        t.failure("ip:10.0.0.1", now=i)
    assert t.locked("ip:10.0.0.1", now=903.9) > 0
    assert t.locked("ip:10.0.0.1", now=904) == 0.0
    assert t.locked("ip:10.0.0.1", now=5000) == 0.0
    # after the lockout the count starts from nothing
    for i in range(4):
        assert t.failure("ip:10.0.0.1", now=5000 + i) == 0.0
    assert t.failure("ip:10.0.0.1", now=5004) == 900.0


def test_throttle_failures_outside_window_do_not_count():
    t = webauth.Throttle(max_failures=3, window=60, lockout=300)
    t.failure("k", now=0)
    t.failure("k", now=30)
    assert t.failure("k", now=61) == 0.0  # the first one has aged out
    assert t.locked("k", now=61) == 0.0
    assert t.failure("k", now=62) == 300.0  # 30, 61, 62: three within 60 s


def test_throttle_failures_while_locked_do_not_extend_the_lockout():
    t = webauth.Throttle(max_failures=2, window=60, lockout=100)
    t.failure("k", now=0)
    t.failure("k", now=1)
    assert t.failure("k", now=50) == pytest.approx(51.0)
    assert t.locked("k", now=101) == 0.0


def test_throttle_success_resets_failures():
    t = webauth.Throttle(max_failures=5, window=900, lockout=900)
    for i in range(4):
        t.failure("user:alice", now=i)
    t.success("user:alice", now=4)
    for i in range(4):
        assert t.failure("user:alice", now=10 + i) == 0.0
    assert t.locked("user:alice", now=20) == 0.0
    assert t.failure("user:alice", now=21) == 900.0  # the fifth since the success


def test_throttle_success_does_not_lift_a_running_lockout():
    t = webauth.Throttle(max_failures=2, window=60, lockout=100)
    t.failure("ip:1.2.3.4", now=0)
    t.failure("ip:1.2.3.4", now=1)
    t.success("ip:1.2.3.4", now=2)
    assert t.locked("ip:1.2.3.4", now=2) == pytest.approx(99.0)
    t.reset("ip:1.2.3.4")
    assert t.locked("ip:1.2.3.4", now=2) == 0.0
    t.success("never-seen")  # harmless
    t.reset("never-seen")


def test_throttle_success_with_real_clock():
    t = webauth.Throttle(max_failures=2)
    t.failure("k")
    t.success("k")
    assert t.failure("k") == 0.0
    assert t.failure("k") > 0
    assert t.locked("k") > 0


def test_throttle_memory_is_bounded():
    t = webauth.Throttle(max_failures=5, max_keys=100)
    for i in range(1000):
        t.failure(f"user:{i}", now=i)
    assert len(t) == 100
    # the oldest were forgotten, the newest kept
    for i in range(4):
        t.failure("user:999", now=1000 + i)
    assert t.locked("user:999", now=1004) > 0


def test_throttle_keeps_recently_touched_keys():
    t = webauth.Throttle(max_failures=3, max_keys=3)
    t.failure("a", now=0)
    t.failure("a", now=1)
    t.failure("b", now=2)
    t.failure("c", now=3)
    t.failure("a", now=4)  # touches a (and locks it)
    t.failure("d", now=5)  # evicts b, the least recently touched
    assert len(t) == 3
    assert t.locked("a", now=5) > 0


def test_throttle_forgets_expired_lockouts():
    t = webauth.Throttle(max_failures=1, window=10, lockout=10)
    t.failure("k", now=0)
    assert len(t) == 1
    assert t.locked("k", now=20) == 0.0
    assert len(t) == 0


@pytest.mark.parametrize(
    "kwargs",
    [
        {"max_failures": 0},
        {"max_failures": 1.5},
        {"window": 0},
        {"lockout": -1},
        {"max_keys": 0},
        {"window": "900"},
    ],
)
def test_throttle_refuses_bad_settings(kwargs):
    with pytest.raises(WebAuthError):
        webauth.Throttle(**kwargs)


def test_throttle_is_thread_safe():
    t = webauth.Throttle(max_failures=10_000, window=1e9, lockout=10)

    def hammer():
        for _ in range(1000):
            t.failure("shared", now=1.0)

    threads = [threading.Thread(target=hammer) for _ in range(8)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    # 8000 failures counted, none lost: 2000 more reach 10,000 and lock
    for _ in range(1999):
        assert t.failure("shared", now=1.0) == 0.0
    assert t.failure("shared", now=1.0) == 10.0


# -- the steps over counters the store keeps -----------------------------------------------------


def test_count_failure_locks_at_max_within_the_window_of_the_first():
    step = lambda s, now: webauth.count_failure(s, now, 3, window=100, lockout=50)  # noqa: E731
    s = step(None, 10.0)
    assert (s.count, s.since, s.locked_until) == (1, 10.0, 0.0)
    s = step(step(s, 20.0), 30.0)  # 3 within 100 s of the first: locked
    assert (s.count, s.locked(30.0), s.locked(80.0)) == (0, 50.0, 0.0)
    assert step(s, 40.0) == s  # while locked nothing is counted, the lockout is not extended
    assert s.expires(100) == 130.0  # the row may go once the window after the lock is over
    # failures further apart than the window start again
    s = step(step(None, 0.0), 100.0)
    assert (s.count, s.since) == (1, 100.0)
    # a good login forgets the failures, not a running lockout
    assert webauth.forget_failures(step(None, 0.0), 1.0) is None
    locked = webauth.Strikes(0, 0.0, 60.0)
    assert webauth.forget_failures(locked, 1.0).locked(1.0) == 59.0


def test_take_token_matches_the_in_memory_bucket():
    tokens, last = 3.0, 100.0
    waits = []
    for now in (100.0, 100.0, 100.0, 100.0, 100.2, 100.5):
        tokens, last, wait = webauth.take_token(tokens, last, now, 2.0, 3)
        waits.append(round(wait, 3))
    assert waits == [0.0, 0.0, 0.0, 0.5, 0.3, 0.0]
    # a clock stepping back neither drains nor refills
    assert webauth.take_token(1.0, 100.0, 50.0, 2.0, 3) == (0.0, 100.0, 0.0)
    assert webauth.bucket_full_at(1.0, 100.0, 2.0, 3) == 101.0


def test_limit_keys_are_bounded_and_group_an_ipv6_host():
    assert webauth.user_key("alice") == "user:alice"
    assert webauth.address_key("10.0.0.1") == "ip:10.0.0.1"
    assert webauth.address_key("::ffff:10.0.0.1") == "ip:10.0.0.1"
    assert webauth.address_key("2001:db8::1") == webauth.address_key("2001:db8::abcd")
    assert webauth.address_key("2001:db8::1") == "ip:2001:db8::/64"
    assert webauth.address_key("2001:db8:0:1::1") != webauth.address_key("2001:db8::1")
    for hostile in ("x" * 100_000, "a\nb", "é" * 10, "\x00"):
        for key in (webauth.user_key(hostile), webauth.address_key(hostile)):
            assert len(key) <= webauth.LIMIT_KEY_MAX and key.isascii() and "#" in key
    assert webauth.user_key("x" * 65) != webauth.user_key("x" * 66)


# -- RateLimit ---------------------------------------------------------------------------------


def test_rate_limit_burst_then_refuse_then_refill():
    r = webauth.RateLimit(per_second=2, burst=3)
    assert [r.allow("ip:1", now=100.0) for _ in range(4)] == [True, True, True, False]
    assert r.allow("ip:1", now=100.2) is False  # 0.4 of a token
    assert r.allow("ip:1", now=100.5) is True  # one token after 0.5 s at 2/s
    assert r.allow("ip:1", now=100.5) is False
    # a long pause refills to the burst, no more
    assert [r.allow("ip:1", now=1000.0) for _ in range(4)] == [True, True, True, False]


def test_rate_limit_keys_are_independent():
    r = webauth.RateLimit(per_second=1, burst=1)
    assert r.allow("a", now=0)
    assert not r.allow("a", now=0)
    assert r.allow("b", now=0)


def test_rate_limit_slow_rate():
    r = webauth.RateLimit(per_second=0.1, burst=1)
    assert r.allow("k", now=0)
    assert not r.allow("k", now=9.9)
    assert r.allow("k", now=10.0)


def test_rate_limit_clock_stepping_back_does_not_refill_or_break():
    r = webauth.RateLimit(per_second=1, burst=2)
    assert r.allow("k", now=100)
    assert r.allow("k", now=100)
    assert not r.allow("k", now=50)
    assert not r.allow("k", now=100.5)
    assert r.allow("k", now=101)


def test_rate_limit_with_real_clock():
    r = webauth.RateLimit(per_second=0.001, burst=2)
    assert r.allow("k") and r.allow("k")
    assert not r.allow("k")


def test_rate_limit_wait_says_when_a_request_may_come_back():
    r = webauth.RateLimit(per_second=0.5, burst=2)
    assert r.wait("ip:1", now=0) == 0.0 and r.wait("ip:1", now=0) == 0.0
    assert r.wait("ip:1", now=0) == pytest.approx(2.0)  # one token at 0.5/s
    assert r.wait("ip:1", now=1.5) == pytest.approx(0.5)  # refused requests take nothing
    assert r.wait("ip:1", now=2.0) == 0.0
    assert r.wait("ip:1", now=2.0) == pytest.approx(2.0)
    assert r.wait("ip:2", now=2.0) == 0.0


def test_rate_limit_memory_is_bounded():
    r = webauth.RateLimit(per_second=1, burst=1, max_keys=50)
    for i in range(500):
        r.allow(f"ip:{i}", now=0)
    assert len(r) == 50
    assert not r.allow("ip:499", now=0)  # the newest are still remembered


@pytest.mark.parametrize(
    "kwargs",
    [
        {"per_second": 0, "burst": 1},
        {"per_second": -1, "burst": 1},
        {"per_second": 1, "burst": 0},
        {"per_second": 1, "burst": 1.5},
        {"per_second": 1, "burst": 1, "max_keys": 0},
        {"per_second": True, "burst": 1},
    ],
)
def test_rate_limit_refuses_bad_settings(kwargs):
    with pytest.raises(WebAuthError):
        webauth.RateLimit(**kwargs)


def test_eauth_role_user_first_then_strongest_group_then_star():
    roles = {"alice": "viewer", "ops%": "operator", "audit%": "auditor", "*": "viewer"}
    assert webauth.eauth_role("alice", ["ops"], roles) == "viewer"  # her own entry wins
    assert webauth.eauth_role("bob", ["audit", "ops"], roles) == "operator"
    assert webauth.eauth_role("carol", ["audit"], roles) == "auditor"
    assert webauth.eauth_role("dave", [], roles) == "viewer"
    assert webauth.eauth_role("dave", None, {"ops%": "operator"}) is None  # not let in
    with pytest.raises(webauth.WebAuthError):
        webauth.eauth_role("erin", ["ops"], {"ops%": "root"})


# -- Expiring ----------------------------------------------------------------------------------


def test_expiring_keeps_values_for_their_ttl():
    e = webauth.Expiring(ttl=10)
    e.put(("u", 1), "secret", now=100)
    assert e.get(("u", 1), now=109.9) == "secret"
    assert e.get(("u", 2), now=100) is None
    assert e.get(("u", 1), now=110) is None and len(e) == 0


def test_expiring_put_again_restarts_the_ttl_and_pop_forgets():
    e = webauth.Expiring(ttl=10)
    e.put("sid", now=0)
    e.put("other", now=5)
    e.put("sid", now=8)
    assert e.get("sid", now=15) is True and e.get("other", now=15) is None
    assert e.pop("sid") is True and e.pop("sid") is None
    assert "sid" not in e


def test_expiring_memory_is_bounded():
    e = webauth.Expiring(ttl=1000, max_keys=50)
    for i in range(500):
        e.put(i, now=i / 1000)
    assert len(e) == 50
    assert e.get(499, now=1) is True and e.get(0, now=1) is None  # the oldest go first


def test_expiring_with_real_clock():
    e = webauth.Expiring(ttl=60)
    e.put("k")
    assert "k" in e and None not in e


@pytest.mark.parametrize("kwargs", [{"ttl": 0}, {"ttl": -1}, {"ttl": 1, "max_keys": 0}])
def test_expiring_refuses_bad_settings(kwargs):
    with pytest.raises(WebAuthError):
        webauth.Expiring(**kwargs)
