"""libpq multi-host URLs: the three spellings brought to one, bad ones refused with an error
naming the option (and never the password), and a read-only standby counted as "away"."""

import psycopg
import pytest
from sqlalchemy import exc as sa_exc

from saltext_fleet import config
from saltext_fleet.core import dburl
from saltext_fleet.store import batch as batch_mod
from saltext_fleet.store import engine as store_engine

RW = "target_session_attrs=read-write"


@pytest.mark.parametrize(
    "url",
    [
        f"postgresql+psycopg://fleet:pw@/fleet?host=db1:5432,db2:5433&{RW}",
        f"postgresql+psycopg://fleet:pw@/fleet?host=db1:5432&host=db2:5433&{RW}",
        f"postgresql+psycopg://fleet:pw@/fleet?host=db1,db2&port=5432,5433&{RW}",
        f"postgresql://fleet:pw@/fleet?{RW}&host=db1,db2&port=5432,5433",
    ],
)
def test_the_multi_host_spellings_reach_psycopg_as_one(url):
    normal = store_engine.normalise_url(url)
    engine = store_engine.get_engine(url)
    try:
        _, params = engine.dialect.create_connect_args(engine.url)
    finally:
        engine.dispose()
    assert (params["host"], params["port"]) == ("db1,db2", "5432,5433")
    assert params["target_session_attrs"] == "read-write"
    assert normal == store_engine.normalise_url(normal)  # a fixed point
    assert config.load({"fleet": {"db_url": url}}).db_url == url


def test_one_port_is_every_hosts_and_sockets_and_ipv6_are_hosts():
    found = dburl.endpoints(f"postgresql://f@/f?host=a,b&port=6432&{RW}")
    assert found.hosts == (("a", 6432), ("b", 6432))
    found = dburl.endpoints(f"postgresql://f@/f?host=[::1]:5433,/run/postgresql,fe80::1&{RW}")
    assert found.hosts == (("::1", 5433), ("/run/postgresql", None), ("fe80::1", None))
    assert dburl.endpoints("postgresql://f@db:5/f").hosts == (("db", 5),)
    assert dburl.endpoints("postgresql://f@/f").hosts == ()
    assert dburl.endpoints("sqlite:////tmp/x.db") is None


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("postgresql://fleet:s3cret@/f?host=a,b", "2 hosts need target_session_attrs=read-write"),
        (
            "postgresql://fleet:s3cret@/f?host=a,b&target_session_attrs=any",
            "need target_session_attrs=read-write",
        ),
        (f"postgresql://fleet:s3cret@/f?host=a,b&port=1,2,3&{RW}", "2 hosts but 3 ports"),
        (f"postgresql://fleet:s3cret@x/f?host=a&{RW}", "the hosts are given twice"),
        (f"postgresql://fleet:s3cret@/f?host=a:70000,b&{RW}", "'70000' in host= is not a TCP"),
        (f"postgresql://fleet:s3cret@/f?host=a,,b&{RW}", "an empty host"),
        (f"postgresql://fleet:s3cret@/f?host=a:1,b&port=2&{RW}", "the ports are given twice"),
        (f"postgresql://fleet:s3cret@/f?host=a:1&host=b&port=2&{RW}", "not both forms"),
        (f"postgresql://fleet:s3cret@/f?host=a,b&host=c&{RW}", "not both forms"),
        ("postgresql://fleet:s3cret@/f?host=a&target_session_attrs=master", "is not one of"),
        (f"postgresql://fleet:s3cret@/f?host=a%20b&{RW}", "'a b' in host= is not a host"),
        (f"postgresql://fleet:s3cret@/f?host=[::1&{RW}", "is not [IPv6 address]"),
        ("postgresql://fleet:s3cret@/f?port=5432", "port= without host="),
    ],
)
def test_bad_urls_are_refused_naming_the_option_not_the_password(url, message):
    with pytest.raises(config.FleetConfigError) as refused:
        config.load({"fleet": {"db_url": url}})
    assert refused.value.option == "fleet:db_url"
    assert message in str(refused.value)
    assert "s3cret" not in str(refused.value)
    with pytest.raises(store_engine.StoreError) as refused:
        store_engine.normalise_url(url)
    assert "s3cret" not in str(refused.value) and "fleet:db_url" in str(refused.value)


def test_the_read_url_may_name_standbys_without_read_write():
    cfg = config.load(
        {
            "fleet": {
                "db_url": f"postgresql://f@/f?host=a,b&{RW}",
                "db_read_url": "postgresql://f@/f?host=b,a&target_session_attrs=prefer-standby",
            }
        }
    )
    assert cfg.db_read_url.endswith("prefer-standby")
    assert config.load({"fleet": {}}).db_read_url is None
    with pytest.raises(config.FleetConfigError) as refused:
        config.load({"fleet": {"db_url": "postgresql://f@a/f", "db_read_url": "mysql://x@y/z"}})
    assert refused.value.option == "fleet:db_read_url"
    with pytest.raises(config.FleetConfigError, match="same kind of database"):
        config.load({"fleet": {"db_url": "postgresql://f@a/f", "db_read_url": "sqlite:///x.db"}})


def test_passwords_are_hidden_in_the_user_part_and_in_the_query():
    url = "postgresql+psycopg://fleet:pw1@/f?host=a,b&password=pw2&target_session_attrs=read-write"
    shown = store_engine.display_url(url)
    assert "pw1" not in shown and "pw2" not in shown
    assert "fleet:***@" in shown and "password=***" in shown
    assert "pw2" not in store_engine.display_url(store_engine.get_engine(url))


@pytest.mark.parametrize(
    "error",
    [psycopg.errors.ReadOnlySqlTransaction, psycopg.errors.AdminShutdown],
)
def test_a_read_only_standby_or_a_shutdown_is_the_database_away(error):
    wrapped = sa_exc.DBAPIError("INSERT ...", {}, error("cannot execute INSERT"))
    assert batch_mod.is_connection_error(wrapped) and batch_mod.must_retry_batch(wrapped)
    # a bad record stays a bad record
    bad = sa_exc.DBAPIError("INSERT ...", {}, psycopg.errors.UntranslatableCharacter("\\u0000"))
    assert not batch_mod.is_connection_error(bad)
