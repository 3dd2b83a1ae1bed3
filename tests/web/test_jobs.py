"""The list of Salt's jobs: paged on the page, limited in the API, newest first."""

from __future__ import annotations

import datetime as dt
import re

from sqlalchemy import insert

from saltext_fleet.store.models import Job


def test_the_job_list_pages_newest_first(engine, logged_in):
    start = dt.datetime(2026, 12, 5, tzinfo=dt.timezone.utc)
    with engine.begin() as conn:
        conn.execute(
            insert(Job),
            [
                {
                    "jid": f"202612050000000{i:05d}",
                    "fun": "test.ping",
                    "load": {"fun": "test.ping"},
                    "publish": True,
                    "started_at": start + dt.timedelta(seconds=i),
                }
                for i in range(60)
            ],
        )
    client, _csrf = logged_in("viewer")
    first = client.get("/jobs").get_data(as_text=True)
    jids = re.findall(r"<code>(2026\d+)</code>", first)
    assert jids == [f"202612050000000{i:05d}" for i in range(59, 9, -1)]
    assert 'id="page-next"' in first and 'id="page-prev"' not in first
    second = client.get("/jobs?page=2").get_data(as_text=True)
    assert len(re.findall(r"<code>(2026\d+)</code>", second)) == 10
    assert 'id="page-next"' not in second and 'id="page-prev"' in second
    assert client.get("/jobs?page=x").status_code == 400
    listed = client.get("/api/v1/jobs?limit=5").get_json()
    assert [j["jid"] for j in listed] == jids[:5] and listed[0]["fun"] == "test.ping"
    assert listed[0]["started"].startswith("2026-12-05T00:00:59")
    assert client.get("/api/v1/jobs?limit=many").status_code == 400
