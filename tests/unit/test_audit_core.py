"""The pure audit chain: canonical JSON, event hashes, and verification of a stored chain."""

import copy
import hashlib
import json
import random
import types
from datetime import datetime, timedelta, timezone

import pytest

from saltext_fleet.core import audit

T0 = datetime(2024, 5, 1, 12, 0, 0, tzinfo=timezone.utc)


def events(count, first_id=1, step=1):
    """Inputs for :func:`audit.chain`: varied actions, targets and nested details."""
    actions = [a for a in audit.ACTIONS] + ["user.create", "ui.keys.accept"]
    for n in range(count):
        yield {
            "id": first_id + n * step,
            "at": T0 + timedelta(seconds=n, microseconds=n * 7),
            "actor": random.choice(["cli:root", "reactor", "user:alice"]),
            "action": actions[n % len(actions)],
            "target": f"web{n % 17}",
            "details": {"n": n, "files": [{"name": f"f{n}", "size": n * 3}], "ok": n % 2 == 0},
        }


def stored(rows):
    """Rows as a JSON column and a text column hand them back."""
    return [json.loads(json.dumps(row)) for row in rows]


def build(count, **kw):
    return stored(audit.chain(audit.GENESIS, events(count, **kw)))


# --- building and verifying a chain ---------------------------------------------------------------


def test_round_trip_of_a_few_hundred_events_verifies():
    rows = build(300)
    assert rows[0]["prev_hash"] == audit.GENESIS
    assert all(b["prev_hash"] == a["hash"] for a, b in zip(rows, rows[1:], strict=False))
    assert set(rows[0]) == set(audit.COLUMNS)
    result = audit.verify(rows)
    assert result == {"ok": True, "checked": 300, "last_id": 300, "last_hash": rows[-1]["hash"]}


def test_empty_chain_is_ok():
    assert audit.verify([]) == {
        "ok": True,
        "checked": 0,
        "last_id": None,
        "last_hash": audit.GENESIS,
    }


def test_the_hash_is_the_documented_rule():
    row = audit.new_event(
        audit.GENESIS, 1, "2024-05-01T12:00:00Z", "cli:root", "key.accept", "web1"
    )
    text = (
        '{"action":"key.accept","actor":"cli:root","at":"2024-05-01T12:00:00.000000Z",'
        '"details":{},"id":1,"target":"web1"}'
    )
    assert audit.canonical({k: row[k] for k in audit.FIELDS}) == text.encode()
    expected = hashlib.sha256(("0" * 64 + "\n" + text).encode("ascii")).hexdigest()
    assert row["hash"] == expected
    assert audit.event_hash(audit.GENESIS, json.loads(text)) == expected


def test_independent_reimplementation_agrees_on_plain_json():
    """For data without floats the rules are exactly Python's sorted compact JSON."""
    rows = build(50)
    prev = audit.GENESIS
    for row in rows:
        content = {k: row[k] for k in audit.FIELDS}
        text = json.dumps(content, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
        assert hashlib.sha256(f"{prev}\n{text}".encode()).hexdigest() == row["hash"]
        prev = row["hash"]


# --- tampering ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "field, edit",
    [
        ("actor", lambda row: row.update(actor="user:mallory")),
        ("action", lambda row: row.update(action="key.reject")),
        ("target", lambda row: row.update(target="db1")),
        ("at", lambda row: row.update(at=row["at"].replace(".", ".9", 1)[:-2] + "Z")),
        ("details nested", lambda row: row["details"]["files"][0].update(size=-1)),
        ("details added key", lambda row: row["details"].update(extra=True)),
        ("details type", lambda row: row["details"].update(n=str(row["details"]["n"]))),
        ("id within its gap", lambda row: row.update(id=row["id"] + 5)),
        ("prev_hash relinked", lambda row: row.update(prev_hash="f" * 64)),
    ],
)
def test_editing_any_field_of_any_event_names_that_event(field, edit):
    rows = build(120, first_id=10, step=10)  # gaps, so an id can change and still ascend
    for index in (0, 57, 119):
        tampered = copy.deepcopy(rows)
        edit(tampered[index])
        result = audit.verify(tampered)
        assert result["ok"] is False, field
        assert result["broken"] == tampered[index]["id"]
        assert result["checked"] == index
        assert result["reason"] == ("prev_hash" if "prev_hash" in field else "hash")
        assert str(tampered[index]["id"]) in result["message"]


def test_editing_the_hash_itself_is_detected_at_that_event():
    rows = build(40)
    rows[20]["hash"] = "0" * 64
    result = audit.verify(rows)
    assert (result["broken"], result["reason"]) == (21, "hash")


def test_renumbering_out_of_order_is_an_order_error():
    rows = build(40)
    rows[20]["id"] = 5
    result = audit.verify(rows)
    assert (result["broken"], result["reason"], result["checked"]) == (5, "order", 20)


def test_deleting_an_event_is_detected_at_the_next_one():
    rows = build(100)
    for index in (0, 1, 50, 98):
        kept = rows[:index] + rows[index + 1 :]
        result = audit.verify(kept)
        assert result["ok"] is False
        assert result["broken"] == rows[index + 1]["id"]
        assert result["reason"] == "prev_hash"
        assert result["checked"] == index


def test_deleting_the_newest_events_shows_only_against_a_recorded_head():
    rows = build(30)
    head = audit.verify(rows)["last_hash"]
    result = audit.verify(rows[:-3])
    assert result["ok"] is True
    assert result["last_hash"] != head


def test_inserting_a_forged_event_is_detected():
    rows = build(30, first_id=10, step=10)  # ids 10, 20, ..., 300
    after = rows[9]  # id 100
    forged = stored([audit.new_event(after["hash"], 105, T0, "cli:root", "key.accept", "evil")])
    result = audit.verify(rows[:10] + forged + rows[10:])
    # The forged row links and hashes correctly; the genuine one after it no longer links.
    assert (result["broken"], result["reason"], result["checked"]) == (110, "prev_hash", 11)
    forged[0]["id"] = 100  # squeezed in under an id already used
    assert audit.verify(rows[:10] + forged + rows[10:])["reason"] == "order"


def test_swapping_two_events_is_detected():
    rows = build(60)
    swapped = rows[:]
    swapped[30], swapped[31] = swapped[31], swapped[30]
    result = audit.verify(swapped)
    assert (result["broken"], result["checked"]) == (rows[31]["id"], 30)
    # The same swap with the ids put back in order (a renumbered table).
    renumbered = copy.deepcopy(swapped)
    renumbered[30]["id"], renumbered[31]["id"] = 31, 32
    result = audit.verify(renumbered)
    assert (result["broken"], result["checked"]) == (31, 30)
    assert result["reason"] in ("prev_hash", "hash")


def test_malformed_rows_are_reported_not_raised():
    rows = build(5)
    missing = [dict(r) for r in rows]
    del missing[2]["details"]
    assert audit.verify(missing) == {
        "ok": False,
        "checked": 2,
        "broken": 3,
        "reason": "malformed",
        "message": "event 3: missing column 'details'",
    }
    bad_id = [dict(r) for r in rows]
    bad_id[1]["id"] = "2"
    assert audit.verify(bad_id)["reason"] == "malformed"
    bad_at = [dict(r) for r in rows]
    bad_at[3]["at"] = "yesterday"
    result = audit.verify(bad_at)
    assert (result["broken"], result["reason"]) == (4, "malformed")
    assert "at" in result["message"]
    bad_details = [dict(r) for r in rows]
    bad_details[4]["details"] = {"x": float("nan")}
    assert audit.verify(bad_details)["reason"] == "malformed"


# --- windows (incremental checks) -----------------------------------------------------------------


def test_verifying_a_window_from_a_checkpoint():
    rows = build(50)
    first = audit.verify(rows[:20])
    rest = audit.verify(rows[20:], start_prev=first["last_hash"], after_id=first["last_id"])
    assert rest == {"ok": True, "checked": 30, "last_id": 50, "last_hash": rows[-1]["hash"]}
    assert audit.verify([], rows[9]["hash"], 10)["last_hash"] == rows[9]["hash"]
    # A window that does not start where the checkpoint says.
    assert audit.verify(rows[21:], first["last_hash"], first["last_id"])["broken"] == 22
    assert audit.verify(rows[20:], first["last_hash"], after_id=21)["reason"] == "order"
    assert audit.verify(rows[20:])["reason"] == "prev_hash"  # not from the genesis


def test_bad_checkpoints_are_refused():
    with pytest.raises(audit.AuditError, match="start_prev"):
        audit.verify([], start_prev="abc")
    with pytest.raises(audit.AuditError, match="start_prev"):
        audit.verify([], start_prev="A" * 64)
    with pytest.raises(audit.AuditError, match="after_id"):
        audit.verify([], after_id="3")


# --- streaming ------------------------------------------------------------------------------------


def _cheap_rows(count):
    """A valid chain made with plain json (no floats, so the rules coincide): fast to generate."""
    encoder = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    prev = audit.GENESIS
    for n in range(1, count + 1):
        row = {
            "id": n,
            "at": "2024-05-01T12:00:00.000000Z",
            "actor": "reactor",
            "action": "key.pending",
            "target": "web",
            "details": {"n": n},
        }
        digest = hashlib.sha256(f"{prev}\n{encoder.encode(row)}".encode()).hexdigest()
        row["prev_hash"], row["hash"] = prev, digest
        prev = digest
        yield row


def test_verify_checks_a_hundred_thousand_events():
    # How fast is a benchmark's question, not a test's (a busy machine made this flaky).
    result = audit.verify(_cheap_rows(100_000))
    assert result["ok"] is True and result["checked"] == 100_000


class LiveRow(dict):
    """A row that counts how many of its kind are alive at once."""

    alive = 0
    peak = 0

    def __init__(self, *args):
        super().__init__(*args)
        LiveRow.alive += 1
        LiveRow.peak = max(LiveRow.peak, LiveRow.alive)

    def __del__(self):
        LiveRow.alive -= 1


def test_verify_holds_one_row_at_a_time():
    LiveRow.alive = LiveRow.peak = 0
    result = audit.verify(LiveRow(row) for row in _cheap_rows(3000))
    assert result["checked"] == 3000
    assert LiveRow.peak <= 2  # the row being checked, and the one the generator is making


def test_verify_stops_reading_at_the_first_broken_event():
    def rows():
        for row in _cheap_rows(100):
            if row["id"] == 40:
                row["actor"] = "user:mallory"
            if row["id"] > 40:
                raise AssertionError("read past the broken event")
            yield row

    assert audit.verify(rows())["broken"] == 40


def test_verify_reads_objects_and_database_types():
    """SQLAlchemy rows and models give attributes; PostgreSQL gives aware datetimes in the
    session's zone, SQLite naive UTC ones; both must hash as they were written."""
    rows = list(audit.chain(audit.GENESIS, events(30)))
    ist = timezone(timedelta(hours=5, minutes=30))
    objects = []
    for n, row in enumerate(rows):
        when = datetime.fromisoformat(row["at"][:-1])
        when = when.replace(tzinfo=timezone.utc).astimezone(ist) if n % 2 else when
        objects.append(types.SimpleNamespace(**dict(row, at=when)))
    assert audit.verify(objects)["checked"] == 30
    assert audit.verify(iter(objects))["last_hash"] == rows[-1]["hash"]


# --- the hashed content ---------------------------------------------------------------------------


def test_naive_and_aware_times_of_the_same_instant_hash_the_same():
    same = [
        datetime(2024, 5, 1, 12, 0, 0, 123456),  # naive means UTC
        datetime(2024, 5, 1, 12, 0, 0, 123456, tzinfo=timezone.utc),
        datetime(2024, 5, 1, 14, 0, 0, 123456, tzinfo=timezone(timedelta(hours=2))),
        datetime(2024, 5, 1, 2, 30, 0, 123456, tzinfo=timezone(timedelta(hours=-9, minutes=-30))),
        "2024-05-01T12:00:00.123456Z",
        "2024-05-01 12:00:00.123456",
        "2024-05-01t12:00:00.123456z",
        "2024-05-01T14:00:00.123456+02:00",
        "2024-05-01T14:00:00.123456+0200",
        "2024-05-01 14:00:00.123456+02",
        "2024-05-01T12:00:00.123456000Z",
        "2024-05-01T12:00:00,123456Z",
    ]
    hashes = set()
    for at in same:
        assert audit.normalise_at(at) == "2024-05-01T12:00:00.123456Z", at
        hashes.add(audit.new_event(audit.GENESIS, 1, at, "a", "key.accept", "t")["hash"])
    assert len(hashes) == 1
    assert audit.normalise_at("2024-05-01T12:00:00Z") == "2024-05-01T12:00:00.000000Z"
    assert audit.normalise_at("2024-05-01T12:00:00.5Z") == "2024-05-01T12:00:00.500000Z"
    assert audit.normalise_at(datetime(999, 1, 1)) == "0999-01-01T00:00:00.000000Z"
    assert audit.normalise_at(audit.utc_now()).endswith("Z")


@pytest.mark.parametrize(
    "at",
    [
        "2024-13-01T00:00:00Z",
        "2024-02-30T00:00:00Z",
        "2024-05-01",
        "٢٠٢٤-05-01T12:00:00Z",  # digits of another script
        "2024-05-01T12:00:00.1234567Z",  # nanoseconds a database would round
        "2024-05-01T12:00:00+25:00",
        "0001-01-01T00:00:00+01:00",  # before the year 1 in UTC
        "yesterday",
        1714564800,
        None,
    ],
)
def test_bad_times_are_refused_naming_at(at):
    with pytest.raises(audit.AuditError) as info:
        audit.normalise_at(at)
    assert info.value.field == "at"


def test_canonical_form_does_not_depend_on_dict_order():
    rng = random.Random(7)
    items = [(f"k{n}", {"x": n, "y": [n, {"b": 1, "a": 2}]}) for n in range(20)]
    items += [("Ä", 1), ("a", 2), ("B", 3), ("😀", 4), ("\uffff", 5), ("", 6)]
    forms = set()
    for _ in range(10):
        rng.shuffle(items)
        forms.add(audit.canonical(dict(items)))
    assert len(forms) == 1
    keys = list(json.loads(forms.pop()))
    assert keys[:3] == ["", "B", "a"]
    assert keys[-3:] == ["Ä", "\uffff", "😀"]  # code point order (RFC 8785 would swap the last two)


def test_unicode_in_details_is_kept_as_utf8_and_verifies():
    details = {
        "name": "Grüße aus Zürich",
        "host": "ミニ-01",
        "note": "שלום 😀",
        "quote": 'say "hi"\\',
        "ctrl": "a\nb\t\x1f\x7f",
    }
    data = audit.canonical(details)
    assert "Grüße".encode() in data and "😀".encode() in data
    assert b'\\"hi\\"\\\\' in data and b"a\\nb\\t\\u001f\x7f" in data
    rows = stored(
        audit.chain(
            audit.GENESIS,
            [
                {
                    "id": 1,
                    "at": T0,
                    "actor": "user:jürgen",
                    "action": "ui.note",
                    "target": "mac-ミニ",
                    "details": details,
                }
            ],
        )
    )
    assert rows[0]["details"] == details
    assert audit.verify(rows)["ok"] is True


@pytest.mark.parametrize(
    "value, text",
    [
        (1, "1"),
        (1.0, "1"),
        (-0.0, "0"),
        (1e15, "1000000000000000"),
        (0.1, "0.1"),
        (-2.5, "-2.5"),
        (333333333.33333329, "333333333.3333333"),
        (4.50, "4.5"),
        (2e-3, "0.002"),
        (1e-5, "0.00001"),
        (1e-6, "0.000001"),
        (1e-7, "1e-7"),
        (-1.25e-9, "-1.25e-9"),
        (0.000000000000000000000000001, "1e-27"),
        (5e-324, "5e-324"),
        (2**53 - 1, "9007199254740991"),
    ],
)
def test_numbers_are_written_as_ecmascript_writes_them(value, text):
    assert audit.canonical(value) == text.encode()


def test_numbers_hash_alike_however_they_are_spelled():
    # What a client wrote and what a JSON column or driver reads back may differ in spelling.
    written = json.loads('{"a": 1000000000000000, "b": 1, "c": 1e-07, "d": [0.5], "e": 1E2}')
    read_back = json.loads('{"a": 1e15, "b": 1.0, "c": 0.0000001, "d": [5e-1], "e": 100}')
    assert audit.canonical(written) == audit.canonical(read_back)
    assert audit.body(1, T0, "a", "key.accept", "t", {"t": (1, 2.0)})["details"] == {"t": [1, 2]}


@pytest.mark.parametrize(
    "details, path",
    [
        ({"x": float("nan")}, "details.x"),
        ({"a": [1, {"b": float("inf")}]}, "details.a[1].b"),
        ({"a": {"b": [float("-inf")]}}, "details.a.b[0]"),
        ({"when": T0}, "details.when"),
        ({"s": {1, 2}}, "details.s"),
        ({"b": b"bytes"}, "details.b"),
        ({"k": {1: "x"}}, "details.k.1"),
        ({"n": 2**53}, "details.n"),
        ({"f": 1e16}, "details.f"),
        ({"s": "a\0b"}, "details.s"),
        ({"s": "lone \ud800"}, "details.s"),
        ({"l": [[0] * 1, "x\udfff"]}, "details.l[1]"),
    ],
)
def test_values_that_are_not_canonical_json_are_refused_naming_the_path(details, path):
    with pytest.raises(audit.AuditError) as info:
        audit.body(1, T0, "cli:root", "key.accept", "web1", details)
    assert info.value.field == path
    assert path in str(info.value)


def test_nesting_and_size_are_bounded():
    deep = current = {}
    for _ in range(audit.MAX_DEPTH + 1):
        current["d"] = current = {}
    with pytest.raises(audit.AuditError, match="nested deeper"):
        audit.canonical(deep)
    with pytest.raises(audit.AuditError, match="bytes of JSON"):
        audit.body(1, T0, "a", "key.accept", "t", {"blob": "x" * audit.MAX_DETAILS})
    with pytest.raises(audit.AuditError, match="details"):
        audit.body(1, T0, "a", "key.accept", "t", ["not", "a", "mapping"])


# --- validation of the named fields ---------------------------------------------------------------


@pytest.mark.parametrize(
    "field, value",
    [
        ("actor", ""),
        ("actor", "   "),
        ("actor", None),
        ("actor", "x" * (audit.MAX_ACTOR + 1)),
        ("actor", "user:alice\nforged line"),
        ("action", ""),
        ("action", "Key.Accept"),
        ("action", "key accept"),
        ("action", "k" * (audit.MAX_ACTION + 1)),
        ("action", 7),
        ("target", ""),
        ("target", "t" * (audit.MAX_TARGET + 1)),
        ("target", "web1\x00"),
        ("target", "web1\x9b2J"),  # a C1 escape a terminal would act on
        ("id", 0),
        ("id", True),
        ("id", "1"),
        ("id", 2**53),
    ],
)
def test_bad_fields_are_refused_naming_the_field(field, value):
    args = {"event_id": 1, "at": T0, "actor": "a", "action": "key.accept", "target": "t"}
    args["event_id" if field == "id" else field] = value
    with pytest.raises(audit.AuditError) as info:
        audit.body(**args)
    assert info.value.field == field
    assert str(info.value).startswith(f"bad audit event {field}:")


def test_fields_at_their_limits_are_accepted():
    event = audit.body(
        2**53 - 1,
        T0,
        "a" * audit.MAX_ACTOR,
        "a" * audit.MAX_ACTION,
        "ü" * audit.MAX_TARGET,
        None,
    )
    assert event["details"] == {}
    assert (
        audit.body(1, T0, "a", "vendor.custom:thing-1_x", "t")["action"]
        == "vendor.custom:thing-1_x"
    )


def test_the_action_vocabulary():
    for action in audit.ACTIONS:
        assert audit.check_action(action) == action
        assert audit.is_known_action(action)
    assert len(set(audit.ACTIONS)) == len(audit.ACTIONS)
    assert audit.is_known_action("user.totp_reset") and audit.is_known_action("ui.keys.accept")
    assert not audit.is_known_action("vendor.custom")


def test_building_refuses_bad_links_and_inputs():
    with pytest.raises(audit.AuditError, match="prev_hash"):
        audit.new_event("nope", 1, T0, "a", "key.accept", "t")
    with pytest.raises(audit.AuditError, match="prev_hash"):
        audit.chain("G" * 64, [])
    with pytest.raises(audit.AuditError, match=r"events\[1\]: missing at"):
        list(
            audit.chain(
                audit.GENESIS,
                [next(events(1)), {"id": 2, "actor": "a", "action": "x", "target": "t"}],
            )
        )
    with pytest.raises(audit.AuditError, match="at"):
        audit.event_hash(audit.GENESIS, {"at": T0})  # a body holds at as its string
