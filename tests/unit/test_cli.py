"""``saltext-fleet config``: the snippet is valid, complete for what ships, and checked."""

import yaml

from saltext_fleet import cli, config, demo, snippet


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
    assert "no such master config file" in capsys.readouterr().err
    conf = tmp_path / "master"
    conf.write_text("fleet: [unclosed\n")
    assert cli.main(["config", "--check", str(conf)]) == 2
    assert "cannot read the master config" in capsys.readouterr().err


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
