"""The UI's way into Salt names what went wrong when the master is away."""

import pytest
import salt.config

from saltext_fleet.webui.salt import SaltError, SaltGateway, _last_line


def test_a_master_that_is_away_is_a_salt_error_naming_the_function(tmp_path):
    opts = salt.config.master_config(str(tmp_path / "no-such-master-config"))
    opts.update(
        sock_dir=str(tmp_path / "sock"),
        pki_dir=str(tmp_path / "pki"),
        cachedir=str(tmp_path / "cache"),
        root_dir=str(tmp_path),
    )
    with pytest.raises(SaltError, match=r"fleet\.inventory: the master did not take the job"):
        SaltGateway(opts).local_async(["web1"], "fleet.inventory", user="ui:alice")


def test_the_runner_message_is_the_useful_line():
    text = (
        "Exception occurred in runner fleet.keys_accept: Traceback (most recent call last):\n"
        '  File "x.py", line 1\n'
        "salt.exceptions.SaltRunnerError: no pending key for web1\n"
    )
    assert _last_line(text) == "no pending key for web1"
    assert _last_line(None) == "the runner failed"
