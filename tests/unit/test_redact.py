"""Secrets masked before the job cache and the event store keep them."""

import pytest

from saltext_fleet.core.redact import MASK, redact


def test_secret_keys_are_masked_at_any_depth_and_nothing_else():
    load = {
        "fun": "runner.fleet.group_set",
        "fun_args": ["lab", {"password": "hunter2", "user": "root"}],
        "return": {
            "id": "mini-07",
            "token": "abc123",
            "minion_config": {"grains": {"fleet_enrolment": "abc123"}, "master": "m"},
            "nested": [{"private_key": "-----BEGIN..."}, {"SSH_PASSWD": "x", "ssh-key": "pub"}],
            "credential": "password",
            "counts": {"token_count": 3},
        },
    }
    out = redact(load)
    assert out["fun_args"][1] == {"password": MASK, "user": "root"}
    assert out["return"]["token"] == MASK
    assert out["return"]["minion_config"]["grains"]["fleet_enrolment"] == MASK
    assert out["return"]["minion_config"]["master"] == "m"
    assert out["return"]["nested"][0]["private_key"] == MASK
    assert out["return"]["nested"][1] == {"SSH_PASSWD": MASK, "ssh-key": "pub"}
    assert out["return"]["credential"] == MASK
    assert out["return"]["counts"] == {"token_count": 3}
    # the input is not changed, and what needs no masking is not copied
    assert load["return"]["token"] == "abc123"
    clean = {"fun": "test.ping", "return": True, "fun_args": ["a", {"b": 1}]}
    assert redact(clean) is clean


def test_function_specific_arguments_and_key_value_strings():
    new_event = {"fun": "runner.fleet.secret_set", "fun_args": ["node", "m1", "api", "value=s3"]}
    assert redact(new_event)["fun_args"] == ["node", "m1", "api", f"value={MASK}"]
    kwargs = {"fun": "runner.fleet.secret_set", "fun_args": [{"value": "s3", "scope": "node"}]}
    assert redact(kwargs)["fun_args"] == [{"value": MASK, "scope": "node"}]
    # "value" is no secret elsewhere
    other = {"fun": "grains.setval", "fun_args": ["role", "value=web"], "return": {"value": 1}}
    assert redact(other) is other
    assert redact({"fun": "cmd.run", "fun_args": ["echo", "password=x"]})["fun_args"] == [
        "echo",
        f"password={MASK}",
    ]


def test_odd_shapes_pass_through():
    assert redact(None) is None and redact("password") == "password" and redact(5) == 5
    # nested deeper than anything Salt sends: the deep part is masked, never kept unread
    deep = current = {}
    for _ in range(200):
        current["a"] = {}
        current = current["a"]
    current["a"] = {"password": "hunter2"}
    out = redact(deep)
    assert out is not deep and "hunter2" not in repr(out) and MASK in repr(out)
    shallow = current = {}
    for _ in range(60):
        current["a"] = {}
        current = current["a"]
    current["a"] = {"b": [1, "x"]}
    assert redact(shallow) is shallow


def test_secret_assignments_inside_text_are_masked():
    """``fleet.enrol`` returns the minion config as YAML text too: the token inside it is
    masked, and so is ``password=...`` in a command's output; ordinary text is kept."""
    yaml_text = "id: mini-07\ngrains:\n  fleet_enrolment: Zx9-abc_DEF\nmaster: salt\n"
    out = redact(
        {
            "return": {
                "minion_config_yaml": yaml_text,
                "stdout": 'connect password="hunter 2" host=db',
                "lines": ["token: t0k3n", "Passwords: 3 changed", "secret store: ready"],
                "quoted": "SECRET = 'a b c'",
            }
        }
    )["return"]
    assert out["minion_config_yaml"] == yaml_text.replace("Zx9-abc_DEF", MASK)
    assert out["stdout"] == f"connect password={MASK} host=db"
    assert out["lines"] == ["token: " + MASK, "Passwords: 3 changed", "secret store: ready"]
    assert out["quoted"] == "SECRET = " + MASK
    plain = {"return": "pkg installed: curl=8.5.0", "tokenizer": "value: 1"}
    assert redact(plain) is plain
    assert redact("a top-level text with token=x") == "a top-level text with token=" + MASK


# -- names that contain a secret word, and ordinary names that do not ---------------------------

SECRET_NAMES = [
    "db_password",
    "DB_PASSWORD",
    "api_token",
    "apiToken",
    "aws_secret_access_key",
    "AWS_ACCESS_KEY",
    "mysql.pass",
    "pass",
    "passwd",
    "root_pw_passphrase",
    "signing_password",
    "signingPassword",
    "dbpassword",
    "client_secret",
    "clientsecret",
    "authtoken",
    "private_key",
    "private-key",
    "api-key",
    "x-api-key",
    "APIKey",
    "secret",
    "secrets",
    "tokens",
    "credentials",
    "ssh_passwd",
    "priv_passwd",
    "fleet_enrolment",
    "vault.token",
    "gpg_passphrase",
    "encryption_key",
    "db_pwd",
]
ORDINARY_NAMES = [
    "key",
    "keys",
    "pub",
    "pub_key",
    "public_key",
    "pubkey",
    "ssh-key",
    "keep_jobs",
    "token_expire",
    "token_dir",
    "key_fingerprint",
    "token_count",
    "password_file",
    "private_key_file",
    "credential_kind",
    "secret_name",
    "token_ttl",
    "tokenizer",
    "bypass",
    "passive",
    "passed",
    "compass",
    "libsecret-1-0",
    "libsecret",
    "keyring",
    "monkey",
    "id",
    "fun",
    "minion_config_yaml",
    "PWD",
    "OLDPWD",
]


def test_every_name_that_contains_a_secret_word_is_masked():
    data = {name: "hunter2" for name in SECRET_NAMES}
    out = redact(data)
    assert {k for k, v in out.items() if v != MASK} == set()
    # numbers too (Salt parses ``db_password=123456`` to an int); nothing, empty and
    # booleans hold no secret and stay
    out = redact({"db_password": 123456, "api_token": None, "secret": "", "password": True})
    assert out == {"db_password": MASK, "api_token": None, "secret": "", "password": True}


def test_ordinary_names_are_kept():
    data = {name: "a value" for name in ORDINARY_NAMES}
    assert redact(data) is data
    # the master's key list: public keys are fingerprinted, never masked
    keys = {"minions_pre": {"mini-07": "-----BEGIN PUBLIC KEY-----\nMIIB..."}, "pub": "MIIB"}
    assert redact(keys) is keys


def test_name_value_strings_in_argument_lists():
    """Salt keeps ``name=value`` arguments as strings in publish loads (``salt '*' test.arg
    db_password=...``): each is judged by its name."""
    arg = [
        "db_password=V1",
        "api_token=V2",
        "aws_secret_access_key=V3",
        "mysql.pass=V4",
        "dbpassword=V5",
        "user=admin",
        "keep_jobs=24",
        "a==b",
        "postgresql://app:V6@db.example/app",
        "db_url=postgresql://app:V7@db.example/app",
    ]
    out = redact({"fun": "test.arg", "arg": arg, "tgt": "*"})["arg"]
    assert out == [
        f"db_password={MASK}",
        f"api_token={MASK}",
        f"aws_secret_access_key={MASK}",
        f"mysql.pass={MASK}",
        f"dbpassword={MASK}",
        "user=admin",
        "keep_jobs=24",
        "a==b",
        f"postgresql://app:{MASK}@db.example/app",
        f"db_url=postgresql://app:{MASK}@db.example/app",
    ]


def test_credentials_inside_urls_are_masked_in_any_text():
    out = redact(
        {
            "return": {
                "dsn": "postgresql+psycopg://fleet:s3cr3t@127.0.0.1:5432/fleet",
                "log": "cloning https://x-access-token:ghp_abc@github.com/o/r.git done",
                "plain": "https://github.com/o/r.git and http://host:8080/path@x",
                "user_only": "ssh://git@github.com/o/r",
            }
        }
    )["return"]
    assert out["dsn"] == f"postgresql+psycopg://fleet:{MASK}@127.0.0.1:5432/fleet"
    assert out["log"] == f"cloning https://x-access-token:{MASK}@github.com/o/r.git done"
    assert out["plain"] == "https://github.com/o/r.git and http://host:8080/path@x"
    assert out["user_only"] == "ssh://git@github.com/o/r"
    assert redact(out) == out  # masking again changes nothing


def test_secret_names_inside_text_match_whole_words():
    out = redact(
        [
            "export DB_PASSWORD=V1; export API_TOKEN='V2'",
            "mysql.pass: V3",
            "SecretStorage==3.3.3",
            "libsecret-1-0: 0.21.4",
            "keep_jobs: 24",
            "PWD=/root OLDPWD=/ DB_PWD=V5",
        ]
    )
    assert out == [
        f"export DB_PASSWORD={MASK}; export API_TOKEN={MASK}",
        f"mysql.pass: {MASK}",
        "SecretStorage==3.3.3",
        "libsecret-1-0: 0.21.4",
        "keep_jobs: 24",
        f"PWD=/root OLDPWD=/ DB_PWD={MASK}",
    ]


@pytest.mark.parametrize("fun", ["fleet.secret_set", "runner.fleet.secret_set"])
def test_secret_set_positional_and_keyword_forms(fun):
    """``salt-run fleet.secret_set group builders signing_password hunter2``: the runner's
    ``new`` event, its ``ret`` event and the job cache's load all carry the arguments."""
    positional = ["group", "builders", "signing_password", "hunter2"]
    new_event = {"fun": fun, "fun_args": positional, "jid": "1", "user": "root"}
    assert redact(new_event)["fun_args"] == ["group", "builders", "signing_password", MASK]
    assert new_event["fun_args"][3] == "hunter2"  # the input is not changed
    keyword = ["group", "builders", "signing_password", {"value": "hunter2"}]
    assert redact({"fun": fun, "fun_args": keyword})["fun_args"][3] == {"value": MASK}
    # a value with "=" in it reaches Salt as a keyword argument of any name
    odd = ["group", "builders", "signing_password", "abc=def", "value_file=/root/pw"]
    assert redact({"fun": fun, "arg": odd})["arg"] == [
        "group",
        "builders",
        "signing_password",
        f"abc={MASK}",
        "value_file=/root/pw",
    ]
    # the job cache's load from a runner: Salt copies fun to the top, the arguments are inside
    load = {
        "id": "master",
        "jid": "1",
        "fun": fun,
        "return": {"fun": fun, "fun_args": positional, "return": {"stored": True}},
    }
    assert redact(load)["return"]["fun_args"][3] == MASK
    # the low data of salt-api's runner client
    low = {"fun": fun, "arg": positional[:3], "kwarg": {"value": "hunter2", "scope": "group"}}
    assert redact(low)["kwarg"] == {"value": MASK, "scope": "group"}
    # too few arguments: nothing to mask, and no error
    short = {"fun": fun, "fun_args": ["group", "builders"]}
    assert redact(short) is short


def test_group_set_password_by_position_and_keyword():
    args = ["lab", "the lab", "root", 22, "base", "hunter2"]
    assert redact({"fun": "runner.fleet.group_set", "fun_args": args})["fun_args"] == [
        *args[:5],
        MASK,
    ]
    kw = {"fun": "fleet.group_set", "fun_args": ["lab", {"password": "hunter2", "user": "u"}]}
    assert redact(kw)["fun_args"] == ["lab", {"password": MASK, "user": "u"}]
    keyfile = {"fun": "fleet.group_set", "fun_args": ["lab", "private_key_file=/root/k"]}
    assert redact(keyfile) is keyfile


def test_package_names_and_versions_are_data():
    """``passwd`` and ``libsecret-1-0`` keep their versions in every package listing, in a
    return, in its event and in a package state's changes; arguments are still redacted."""
    pkgs = {"passwd": "1:4.13+dfsg1-1", "libsecret-1-0": "0.20.5-3", "python3-keyring": "23"}
    inventory = {"packages": {"passwd": {"version": "1:4.13"}}, "secret_count": 1}
    for fun, value in [
        ("pkg.list_pkgs", pkgs),
        ("fleet.inventory", inventory),
        ("pkg.install", {"passwd": {"old": "", "new": "1:4.13"}}),
        ("pip.list", {"SecretStorage": "3.3.3", "keyring": "24"}),
    ]:
        ret = {"id": "mini-07", "fun": fun, "fun_args": [], "return": value, "jid": "1"}
        assert redact(ret) is ret, fun
        event = {"tag": "salt/job/1/ret/mini-07", "data": ret}
        assert redact(event) is event
    # the arguments of a package call are not data
    out = redact({"fun": "pkg.install", "fun_args": ["curl", "password=x"], "return": pkgs})
    assert out["fun_args"] == ["curl", f"password={MASK}"] and out["return"] is pkgs
    state = {
        "fun": "state.apply",
        "return": {
            "pkg_|-passwd_|-passwd_|-installed": {"changes": {"passwd": {"new": "1:4.13"}}},
            "cmd_|-x_|-x_|-run": {"changes": {"stdout": "password=x"}},
        },
    }
    out = redact(state)["return"]
    assert out["pkg_|-passwd_|-passwd_|-installed"]["changes"]["passwd"] == {"new": "1:4.13"}
    assert out["cmd_|-x_|-x_|-run"]["changes"]["stdout"] == f"password={MASK}"
    # outside a package listing, a key named passwd is a secret
    assert redact({"passwd": "hunter2"}) == {"passwd": MASK}


def test_salt_auth_and_key_events_keep_public_keys():
    event = {"act": "pend", "id": "mini-07", "pub": "-----BEGIN PUBLIC KEY-----\nMIIB\n"}
    assert redact(event) is event


def test_package_maps_anywhere_keep_their_names():
    """A baseline (``fleet.baseline_show``), a node listing or ``pkg.installed``'s ``pkgs``:
    the package names in it are data; a URL password in it is still masked."""
    baseline = {
        "name": "web",
        "packages": {"deb": {"passwd": {"rule": ">=", "version": "1:4.13"}}},
        "sources": {"deb": {"passwd": {"name": "shadow", "version": "1:4.13"}}},
    }
    ret = {"fun": "runner.fleet.baseline_show", "return": baseline}
    assert redact(ret) is ret
    low = {"fun": "state.single", "arg": ["pkg.installed", {"pkgs": [{"passwd": "1:4.13"}]}]}
    assert redact(low) is low
    out = redact({"packages": {"deb": {"x": "https://u:pw@h.example/x.deb"}}})
    assert out == {"packages": {"deb": {"x": f"https://u:{MASK}@h.example/x.deb"}}}


def test_package_data_keeps_its_names_but_not_credentials_in_its_text():
    """Package names are data (``passwd`` keeps its version), but a URL password inside a
    package return is still masked, and repository functions and ``pkgrepo`` states are
    not package data at all (their settings can hold credentials)."""
    inv = {
        "fun": "fleet.inventory",
        "return": {
            "packages": {"deb": {"passwd": "1:4.13+dfsg1-1", "libsecret-1-0": "0.20.5-3"}},
            "facts": {"proxy": "http://builder:hunter2@proxy.example:3128"},
        },
    }
    out = redact(inv)
    assert out["return"]["packages"]["deb"] == {
        "passwd": "1:4.13+dfsg1-1",
        "libsecret-1-0": "0.20.5-3",
    }
    assert "hunter2" not in str(out) and "builder:" in out["return"]["facts"]["proxy"]
    repos = {
        "fun": "pkg.list_repos",
        "return": {"internal": {"baseurl": "https://u:hunter2@repo.example/", "password": "pw9"}},
    }
    out = str(redact(repos))
    assert "hunter2" not in out and "pw9" not in out
    state = {
        "fun": "state.apply",
        "return": {
            "pkgrepo_|-internal_|-internal_|-managed": {
                "changes": {"password": "pw9"},
                "comment": "Configured https://u:hunter2@repo.example/",
            },
            "pkg_|-passwd_|-passwd_|-installed": {"changes": {"passwd": {"new": "1:4.13"}}},
        },
    }
    out = redact(state)["return"]
    assert "pw9" not in str(out) and "hunter2" not in str(out)
    assert out["pkg_|-passwd_|-passwd_|-installed"]["changes"] == {"passwd": {"new": "1:4.13"}}


def test_the_hint_test_misses_nothing_the_case_insensitive_regex_finds():
    """The fast hint test (casefold and substring search) says yes to every text the old
    ``(?i)pass|pwd|...`` regular expression matched, ``ſ`` and the Kelvin sign included."""
    import random
    import re

    from saltext_fleet.core import redact as core_redact

    old = re.compile(r"(?i)pass|pwd|secret|token|cred|key|psk|enrolment|://")
    rng = random.Random(5)
    # every letter a hint can be written with, case ignored, by Python's own re
    variants = {c: [c, c.upper()] for c in "abcdefghijklmnopqrstuvwxyz"}
    variants["s"].append("\u017f")  # ſ, LATIN SMALL LETTER LONG S
    variants["k"].append("\u212a")  # KELVIN SIGN
    noise = "abcdeſ\u212aß=: \n/"

    def written(hint):
        return "".join(rng.choice(variants.get(c, [c])) for c in hint)

    texts = []
    for _ in range(5000):
        text = "".join(rng.choice(noise) for _ in range(rng.randint(0, 8)))
        if rng.random() < 0.5:
            text += written(rng.choice(core_redact.HINTS))
        texts.append(text + "".join(rng.choice(noise) for _ in range(rng.randint(0, 8))))
    matched = [t for t in texts if old.search(t)]
    assert len(matched) > 1000  # the corpus exercises the test
    assert all(core_redact._hinted(t) for t in matched)
    assert not core_redact._hinted("version 1.2.3-1+deb12u1")


def test_package_maps_are_tested_at_once_and_still_masked_where_text_holds_a_secret():
    """An inventory's flat ``{name: version}`` map and its ``{name: {field: text}}`` sources
    map are tested in one go; a URL password in either is still masked, the names kept, and
    a map with nothing to mask comes back as the same object."""
    packages = {f"pkg{i}": f"1.{i}" for i in range(1500)}
    sources = {f"pkg{i}": {"name": f"src{i}", "version": f"1.{i}"} for i in range(1200)}
    ret = {
        "fun": "fleet.inventory",
        "return": {
            "packages": {"deb": packages, "passwd": {"passwd": "1:4.13"}},
            "sources": {"deb": sources},
        },
    }
    assert redact(ret) is ret
    leaky = dict(packages, pkg7="git+https://bob:hunter2@example.com/pkg7")
    leaky_sources = dict(sources, pkg9={"name": "src9", "url": "https://bob:hunter2@example.com/"})
    mixed = {"pkg1": "1.0", "pkg2": ["https://bob:hunter2@example.com/x"], "pkg3": 3}
    out = redact(
        {
            "fun": "fleet.inventory",
            "return": {"packages": {"deb": leaky, "odd": mixed}, "sources": {"deb": leaky_sources}},
        }
    )["return"]
    assert out["packages"]["deb"]["pkg7"] == "git+https://bob:***@example.com/pkg7"
    assert out["packages"]["deb"]["pkg8"] == "1.8"
    assert out["sources"]["deb"]["pkg9"] == {"name": "src9", "url": "https://bob:***@example.com/"}
    assert out["packages"]["odd"] == {
        "pkg1": "1.0",
        "pkg2": ["https://bob:***@example.com/x"],
        "pkg3": 3,
    }
