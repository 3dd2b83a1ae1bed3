"""The key gate's rules: minion ids, tokens, fingerprints, decisions, the reactor's filter."""

import datetime as dt

import pytest

from saltext_fleet.core import gate

NOW = dt.datetime(2026, 11, 29, 12, 0, tzinfo=dt.timezone.utc)

PUB = """-----BEGIN PUBLIC KEY-----
MIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8AMIIBCgKCAQEAuB0OOqHfGZK1ZnZ3yqzC
kWq0X9o0Xb7T4Y0kE0nT0w4z1Yk3lYQWm8xvB0m8uDqkUqYJgYt6m5zZ7qXoL6jO
-----END PUBLIC KEY-----
"""


@pytest.mark.parametrize(
    "good", ["web1", "mini-07.build.example.com", "a", "A_b-c.d", "x" * 253, "0day"]
)
def test_good_minion_ids(good):
    assert gate.check_minion_id(good) == good
    assert gate.is_minion_id(good)


@pytest.mark.parametrize(
    "bad, words",
    [
        ("../../etc/x", "characters other than"),
        ("a" * 254, "at most 253"),
        ("a" * 300, "at most 253"),
        ("mïnion", "'ï'"),
        ("web/1", "'/'"),
        ("a b", "' '"),
        ("tab\there", "'\\t'"),
        ("", "empty"),
        (".hidden", "must not start"),
        ("..", "must not start"),
        ("-rf", "must not start"),
        ("null\x00byte", "characters other than"),
        (None, "string"),
        (7, "string"),
    ],
)
def test_bad_minion_ids_are_named(bad, words):
    with pytest.raises(gate.GateError) as err:
        gate.check_minion_id(bad, "id")
    assert words in str(err.value) and str(err.value).startswith("id: ")
    assert not gate.is_minion_id(bad)


@pytest.mark.parametrize(
    "value, seconds",
    [(90, 90), ("90", 90), ("30m", 1800), ("2h", 7200), ("7d", 604800), (" 1.5h ", 5400)],
)
def test_ttl(value, seconds):
    assert gate.parse_ttl(value).total_seconds() == seconds


@pytest.mark.parametrize("value", ["forever", "-1", 0, "31d", True, [1], "5w"])
def test_bad_ttl(value):
    with pytest.raises(gate.GateError) as err:
        gate.parse_ttl(value)
    assert str(err.value).startswith("ttl: ")


def test_tokens_are_random_and_only_their_hash_is_kept():
    tokens = {gate.new_token() for _ in range(100)}
    assert len(tokens) == 100 and all(len(t) == 43 for t in tokens)
    token = tokens.pop()
    digest = gate.token_hash(token)
    assert len(digest) == 64 and token not in digest
    assert gate.token_hash(token) == digest != gate.token_hash(token + "x")


def test_fingerprint_matches_salt_key():
    """Salt 3008's salt-key -f: the hash of the stored PEM text, armour lines included."""
    import salt.utils.crypt

    # a minion sends its key file's text without the final newline
    want = salt.utils.crypt.pem_finger(key=PUB.strip().encode())
    assert gate.fingerprint(PUB) == want == gate.fingerprint(PUB.strip())
    assert gate.fingerprint(PUB, "md5") == salt.utils.crypt.pem_finger(
        key=PUB.strip().encode(), sum_type="md5"
    )
    assert gate.same_fingerprint(want, want.replace(":", "").upper())
    assert not gate.same_fingerprint(want, None)
    for bad in ("", "not a key", None, "-----BEGIN PUBLIC KEY-----\n"):
        with pytest.raises(gate.GateError):
            gate.fingerprint(bad)
    with pytest.raises(gate.GateError, match="hash_type"):
        gate.fingerprint(PUB, "nohash")


def enrolment(**changes):
    base = {
        "id": 1,
        "minion_id": "web1",
        "token_hash": gate.token_hash("t" * 43),
        "state": "live",
        "expires_at": NOW + dt.timedelta(hours=1),
    }
    base.update(changes)
    return gate.Enrolment(**base)


FP = "aa:bb"


@pytest.mark.parametrize(
    "token, found, expected, refused",
    [
        (None, None, "no-token", False),
        ("t" * 43, enrolment(), "enrolled", False),
        ("u" * 43, None, "unknown-token", True),
        ("u" * 43, enrolment(), "unknown-token", True),  # a row whose hash is another's
        ("t" * 43, enrolment(minion_id="web2"), "wrong-id", True),
        ("t" * 43, enrolment(state="used"), "used", True),
        ("t" * 43, enrolment(state="revoked"), "revoked", True),
        ("t" * 43, enrolment(state="expired"), "expired", True),
        ("t" * 43, enrolment(expires_at=NOW), "expired", True),
        (
            "t" * 43,
            enrolment(expires_at=NOW.replace(tzinfo=None) - dt.timedelta(seconds=1)),
            "expired",
            True,
        ),
        ("t" * 43, enrolment(fingerprint="cc:dd"), "wrong-fingerprint", True),
        ("t" * 43, enrolment(fingerprint="AABB"), "enrolled", False),
        # no token, but the enrolment expects exactly this key
        (None, enrolment(fingerprint="aa:bb"), "enrolled", False),
        (None, enrolment(fingerprint="cc:dd"), "wrong-fingerprint", True),
        (None, enrolment(), "no-token", False),
    ],
)
def test_decisions(token, found, expected, refused):
    decision = gate.decide("web1", FP, token, found, NOW)
    assert decision.reason == expected
    assert decision.accept is (expected == "enrolled")
    assert decision.refused is refused


def test_presented_token():
    assert gate.presented_token({gate.TOKEN_GRAIN: "t" * 43}) == "t" * 43
    for bad in (
        None,
        "x",
        {},
        {gate.TOKEN_GRAIN: 5},
        {gate.TOKEN_GRAIN: "short"},
        {gate.TOKEN_GRAIN: "x" * 300},
    ):
        assert gate.presented_token(bad) is None


def test_minion_config_carries_the_token_as_an_autosign_grain():
    conf = gate.minion_config("web1", "salt.example", "t" * 43, master_port=4506)
    assert conf["id"] == "web1" and conf["master"] == "salt.example" and conf["master_port"] == 4506
    assert conf["autosign_grains"] == [gate.TOKEN_GRAIN]
    assert conf["grains"] == {gate.TOKEN_GRAIN: "t" * 43}
    assert "grains" not in gate.minion_config("web1", "m", None)


def test_seen_filter_lets_a_key_through_once_a_window():
    f = gate.SeenFilter(window=60, token_window=3, size=3)
    assert f.wanted("a", PUB, False, now=0)
    assert not f.wanted("a", PUB, False, now=59)
    assert f.wanted("a", PUB, False, now=61)
    # another key for the same id, or the same key with a token, is news
    assert f.wanted("a", PUB + "x", False, now=61)
    assert f.wanted("a", PUB, True, now=61)
    assert not f.wanted("a", PUB, True, now=62)
    assert f.wanted("a", PUB, True, now=65)
    # bounded: the least recently seen key is forgotten first
    f.wanted("b", PUB, False, now=70)
    f.wanted("c", PUB, False, now=71)
    assert len(f._seen) == 3
    f.forget("c")
    assert f.wanted("c", PUB, False, now=72)


def test_hint_limiter_acts_once_a_window_and_on_the_trailing_edge():
    limit = gate.HintLimiter(window=60, size=3)
    assert limit.offer("x", now=0)
    # a second hint within the window is not acted on now ...
    assert not limit.offer("x", now=10)
    assert not limit.offer("x", now=20)
    assert limit.due(now=59) == []
    # ... but once, when the window is over
    assert limit.due(now=60) == ["x"]
    assert limit.due(now=61) == []
    # the trailing run started a window of its own
    assert not limit.offer("x", now=100)
    assert limit.due(now=119) == [] and limit.due(now=120) == ["x"]
    # a quiet key is acted on at once again
    assert limit.offer("x", now=300)
    # other keys are independent
    assert limit.offer("y", now=10)
    # bounded: the least recently used key is forgotten first
    limit.offer("z", now=11)
    limit.offer("w", now=12)
    assert len(limit._last) == 3


def test_hint_limiter_without_trailing_edge_drops_hints():
    limit = gate.HintLimiter(window=60, trailing=False)
    assert limit.offer("x", now=0)
    assert not limit.offer("x", now=1)
    assert limit.due(now=100) == []
    assert limit.offer("x", now=100)
