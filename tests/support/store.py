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


def dump_tables(engine) -> str:
    """Every row of every table of the store, as text (``table: (values...)`` lines)."""
    from sqlalchemy import MetaData

    meta = MetaData()
    meta.reflect(bind=engine)
    rows = []
    with engine.connect() as conn:
        for table in meta.sorted_tables:
            for row in conn.execute(select(table)):
                rows.append(f"{table.name}: {tuple(row)!r}")
    return "\n".join(rows)


def files_text(root) -> dict[str, str]:
    """Every file under ``root`` by its relative path, as text (bytes decoded loosely:
    msgpack keeps UTF-8 as it is)."""
    import os

    found = {}
    for dirpath, _dirs, names in os.walk(root):
        for name in names:
            path = os.path.join(dirpath, name)
            with open(path, "rb") as fh:
                found[os.path.relpath(path, root)] = fh.read().decode("utf-8", "replace")
    return found
