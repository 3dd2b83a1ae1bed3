"""The runners check minion ids with the gate's one rule (``core.gate.check_minion_id``)."""

import pytest
from salt.exceptions import SaltRunnerError

from saltext_fleet.core import gate
from saltext_fleet.master import keys as master_keys
from saltext_fleet.runners import fleet as runner


@pytest.mark.parametrize(
    "bad, words",
    [
        ("-rf", "must not start with '.' or '-'"),
        (".hidden", "must not start with '.' or '-'"),
        ("web1\n", "'\\n'"),
        ("a" * 255, "at most 253"),
        ("a" * 254, "at most 253"),
        ("../../etc/x", "'/'"),
        ("", "empty"),
        (None, "string"),
    ],
)
def test_the_runner_refuses_what_the_gate_refuses(bad, words):
    with pytest.raises(SaltRunnerError) as err:
        runner._check_minion_id(bad)
    message = str(err.value)
    assert words in message and "minion" in message, message
    # the same rule as the gate and the key runners
    assert not gate.is_minion_id(bad)
    with pytest.raises(master_keys.KeyActionError):
        master_keys._check_id(bad)


@pytest.mark.parametrize("good", ["web1", "mini-07.build.example.com", "x" * 253, "0day"])
def test_the_runner_takes_what_the_gate_takes(good):
    assert runner._check_minion_id(good) == good == master_keys._check_id(good)


def test_a_trailing_newline_is_not_a_minion_id():
    with pytest.raises(gate.GateError, match="characters other than"):
        gate.check_minion_id("web1\n")
