"""Secrets masked before the job cache and the event store keep them."""

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
    deep = current = {}
    for _ in range(200):
        current["a"] = {}
        current = current["a"]
    assert redact(deep) is deep


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
