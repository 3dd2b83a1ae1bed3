"""Helpers for tests that write batches straight to the store."""

from sqlalchemy import func, select

from saltext_fleet.store import batch


def write(engine, records):
    """Write one batch in one transaction; the BatchResult."""
    with engine.begin() as conn:
        return batch.write_batch(conn, records)


def count(engine, model):
    with engine.connect() as conn:
        return conn.execute(select(func.count()).select_from(model)).scalar()
