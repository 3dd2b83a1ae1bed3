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
