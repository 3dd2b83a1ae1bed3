"""``saltext-fleet``: the config snippet is valid, complete for what ships, and checked; a
master config that cannot be used stops every command that reads one."""

import io

import pytest
import yaml

from saltext_fleet import cli, config, demo, snippet
from saltext_fleet.store import engine as store_engine


def test_config_prints_yaml_that_validates(capsys):
    assert cli.main(["config"]) == 0
    data = yaml.safe_load(capsys.readouterr().out)
    assert "extension_modules" not in data
    cfg = config.load({"cachedir": "/var/cache/salt/master", **data})
    assert cfg.db_url.startswith("sqlite:////var/cache/salt/master/")
    assert data["fleet"]["gate"] == {"mode": "enrolment", "ttl": 86400, "seen_window": 60}


def test_config_with_db_url(capsys):
    url = "postgresql+psycopg://fleet@127.0.0.1/fleet"
    assert cli.main(["config", "--db-url", url]) == 0
    assert yaml.safe_load(capsys.readouterr().out)["fleet"]["db_url"] == url


def test_config_names_what_every_master_of_one_fleet_shares(capsys):
    assert cli.main(["config"]) == 0
    out = capsys.readouterr().out
    comments = "\n".join(line for line in out.splitlines() if line.startswith("#"))
    for shared in ("master.pem", "master.pub", "same fleet: section", "fleet:key_file"):
        assert shared in comments, shared
    assert "key_file" not in yaml.safe_load(out)["fleet"]  # a comment, not an option


def test_config_refuses_a_bad_db_url(capsys):
    assert cli.main(["config", "--db-url", "mysql://x/y"]) == 2
    assert "fleet:db_url" in capsys.readouterr().err


def test_snippet_wires_only_what_ships():
    data = snippet.master_snippet()
    shipped = snippet.PACKAGE_DIR
    assert ("master_job_cache" in data) == (shipped / "returners" / "fleet.py").exists()
    assert ("engines" in data) == (shipped / "engines" / "fleet.py").exists()
    for entry in data.get("reactor", []):
        for files in entry.values():
            for path in files:
                assert path.startswith("/") and (shipped / "reactors").as_posix() in path


def test_check_names_the_bad_option(tmp_path, capsys):
    conf = tmp_path / "master"
    conf.write_text(f"root_dir: {tmp_path}\nfleet:\n  ui:\n    port: 99999\n")
    assert cli.main(["config", "--check", str(conf)]) == 2
    assert "fleet:ui:port" in capsys.readouterr().err
    conf.write_text(f"root_dir: {tmp_path}\nfleet:\n  gate:\n    mode: enrolment\n")
    assert cli.main(["config", "--check", str(conf)]) == 0
    assert "valid" in capsys.readouterr().out


def test_demo_summary_counts_packages_per_ecosystem():
    inventories = {
        "m1": {"packages": {"deb": {"a": "1", "b": "2"}, "pypi": {"x": "1"}}, "digest": "f" * 64},
        "m2": "'fleet.inventory' is not available.",
    }
    grains = {"m1": {"fleet": {"hostname": "h1", "os": "Debian", "os_version": "12"}}}
    lines = demo.summarise(inventories, grains)
    assert lines[0].split() == ["minion", "hostname", "os", "deb", "pypi", "digest"]
    assert lines[1].split() == ["m1", "h1", "Debian", "12", "2", "1", "f" * 12]
    assert lines[2].startswith("m2") and "no inventory" in lines[2]


def test_check_refuses_a_missing_or_broken_file(tmp_path, capsys):
    assert cli.main(["config", "--check", str(tmp_path / "nope")]) == 2
    assert f"{tmp_path / 'nope'}: no such file" in capsys.readouterr().err
    conf = tmp_path / "master"
    conf.write_text("fleet: [unclosed\n")
    assert cli.main(["config", "--check", str(conf)]) == 2
    assert f"{conf}: is not valid YAML at line 2" in capsys.readouterr().err


# -- a master config that cannot be used: every command that reads one ------------------------


def _missing(tmp_path):
    return tmp_path / "nope" / "master", "no such file"


def _directory(tmp_path):
    (tmp_path / "etc").mkdir()
    return tmp_path / "etc", "is a directory"


def _bad_yaml(tmp_path):
    path = tmp_path / "master"
    path.write_text(f"root_dir: {tmp_path}\nfleet: {{db_url: [unclosed\n")
    return path, "is not valid YAML at line 3"


def _not_a_mapping(tmp_path):
    path = tmp_path / "master"
    path.write_text("- fleet\n- db_url\n")
    return path, "its top level is a list"


def _not_text(tmp_path):
    path = tmp_path / "master"
    path.write_bytes(b"fleet: \xff\xfe\n")
    return path, "is not UTF-8 text"


def _bad_include(tmp_path):
    path = tmp_path / "master"
    path.write_text(f"root_dir: {tmp_path}\n")
    (tmp_path / "master.d").mkdir()
    (tmp_path / "master.d" / "fleet.conf").write_text("fleet: [unclosed\n")
    return path, "master.d/fleet.conf"


BAD_FILES = {
    "missing": _missing,
    "directory": _directory,
    "bad-yaml": _bad_yaml,
    "not-a-mapping": _not_a_mapping,
    "not-text": _not_text,
    "bad-include": _bad_include,
}

#: Every command that reads a master config, with ``{conf}`` where the file goes.
COMMANDS = {
    "config --check": ["config", "--check", "{conf}"],
    "db status": ["db", "status", "-c", "{conf}"],
    "db upgrade": ["db", "upgrade", "-c", "{conf}"],
    "db upgrade --db-url": ["db", "upgrade", "--db-url", "{url}", "-c", "{conf}"],
    "db minion-role": ["db", "minion-role", "fleet_m", "-c", "{conf}"],
    "user add": ["user", "add", "alice", "--password-stdin", "-c", "{conf}"],
    "user add --db-url": [
        "user",
        "add",
        "alice",
        "--password-stdin",
        "--db-url",
        "{url}",
        "-c",
        "{conf}",
    ],
    "user list": ["user", "list", "-c", "{conf}"],
    "user role": ["user", "role", "alice", "--role", "admin", "-c", "{conf}"],
    "user password": ["user", "password", "alice", "--password-stdin", "-c", "{conf}"],
    "user reset-totp": ["user", "reset-totp", "alice", "-c", "{conf}"],
    "user disable": ["user", "disable", "alice", "-c", "{conf}"],
    "user enable": ["user", "enable", "alice", "-c", "{conf}"],
    "user delete": ["user", "delete", "alice", "-c", "{conf}"],
}


@pytest.fixture
def no_database(monkeypatch):
    """Fail the test if a command reaches for a database."""

    def refuse(*args, **kwargs):
        raise AssertionError("a database was opened despite the bad master config")

    monkeypatch.setattr(store_engine, "get_engine", refuse)
    monkeypatch.setattr("sys.stdin", io.StringIO("a fine long password\n"))


@pytest.mark.parametrize("bad", BAD_FILES)
@pytest.mark.parametrize("command", COMMANDS)
def test_a_master_config_that_cannot_be_used_is_named_and_nothing_happens(
    tmp_path, capsys, no_database, command, bad
):
    conf, reason = BAD_FILES[bad](tmp_path)
    url = f"sqlite:///{tmp_path / 'fleet.db'}"
    argv = [a.format(conf=conf, url=url) for a in COMMANDS[command]]
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert f"{conf}: " in err and reason in err, err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "fleet.db").exists()


@pytest.mark.parametrize("command", ["db status", "db upgrade", "user list"])
def test_the_default_master_config_missing_is_named(tmp_path, capsys, monkeypatch, command):
    """Without -c and --db-url, the default file (here from $SALT_MASTER_CONFIG) is needed."""
    conf = tmp_path / "master"
    monkeypatch.setenv("SALT_MASTER_CONFIG", str(conf))
    monkeypatch.setattr(store_engine, "get_engine", None)
    assert cli.main(command.split()) == 2
    assert f"{conf}: no such file" in capsys.readouterr().err


def test_with_a_db_url_the_default_master_config_may_be_missing(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("SALT_MASTER_CONFIG", str(tmp_path / "master"))
    url = f"sqlite:///{tmp_path / 'fleet.db'}"
    assert cli.main(["db", "upgrade", "--db-url", url]) == 0
    assert cli.main(["user", "list", "--db-url", url]) == 0
    assert "no such file" not in capsys.readouterr().err


def test_a_good_master_config_is_read_by_every_command(tmp_path, capsys, monkeypatch):
    conf = tmp_path / "master"
    db = tmp_path / "fleet.db"
    conf.write_text(f"root_dir: {tmp_path}\nfleet:\n  db_url: sqlite:///{db}\n")
    monkeypatch.setattr("sys.stdin", io.StringIO("a fine long password\n"))
    assert cli.main(["config", "--check", str(conf)]) == 0
    assert cli.main(["db", "upgrade", "-c", str(conf)]) == 0
    assert cli.main(["user", "add", "alice", "--password-stdin", "-c", str(conf)]) == 0
    assert cli.main(["user", "list", "-c", str(conf)]) == 0
    assert capsys.readouterr().out.count("alice") == 2 and db.exists()


def test_user_add_list_role_and_bad_input(tmp_path, capsys, monkeypatch):
    """``saltext-fleet user``: the web UI's users in the store of a master config."""
    import io

    from saltext_fleet.core import webauth
    from saltext_fleet.store import engine as store_engine
    from saltext_fleet.store import users as store_users

    url = f"sqlite:///{tmp_path / 'fleet.db'}"
    monkeypatch.setattr("sys.stdin", io.StringIO("a fine long password\n"))
    assert (
        cli.main(["user", "add", "alice", "--role", "admin", "--password-stdin", "--db-url", url])
        == 0
    )
    assert "user alice: add done" in capsys.readouterr().out
    assert cli.main(["user", "list", "--db-url", url]) == 0
    assert capsys.readouterr().out.split()[:3] == ["alice", "admin", "local"]
    assert cli.main(["user", "role", "alice", "--role", "viewer", "--db-url", url]) == 0
    engine = store_engine.get_engine(url)
    with engine.connect() as conn:
        user = store_users.get_user(conn, "alice")
        stored = store_users.password_hash(conn, "alice")
    assert user["role"] == "viewer" and webauth.verify_password("a fine long password", stored)
    capsys.readouterr()
    # bad input: named, exit 2, nothing changed
    monkeypatch.setattr("sys.stdin", io.StringIO("short\n"))
    assert cli.main(["user", "add", "bob", "--password-stdin", "--db-url", url]) == 2
    assert "at least 12" in capsys.readouterr().err
    assert cli.main(["user", "role", "alice", "--role", "root", "--db-url", url]) == 2
    assert "root" in capsys.readouterr().err
    monkeypatch.setattr("sys.stdin", io.StringIO("a fine long password\n"))
    assert cli.main(["user", "add", "../etc", "--password-stdin", "--db-url", url]) == 2
    assert "username" in capsys.readouterr().err.lower()
    assert cli.main(["user", "delete", "nobody", "--db-url", url]) == 2
    assert cli.main(["user", "role", "--db-url", url]) == 2
    with engine.connect() as conn:
        assert [u["username"] for u in store_users.users(conn)] == ["alice"]


def test_user_role_needs_the_role(tmp_path, capsys, monkeypatch):
    import io

    url = f"sqlite:///{tmp_path / 'fleet.db'}"
    monkeypatch.setattr("sys.stdin", io.StringIO("a fine long password\n"))
    assert (
        cli.main(["user", "add", "bob", "--role", "operator", "--password-stdin", "--db-url", url])
        == 0
    )
    assert cli.main(["user", "role", "bob", "--db-url", url]) == 2
    assert "--role is needed" in capsys.readouterr().err
    assert cli.main(["user", "list", "--db-url", url]) == 0
    assert "operator" in capsys.readouterr().out  # not silently demoted
