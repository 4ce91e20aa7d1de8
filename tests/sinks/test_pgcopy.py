"""The sink's binary COPY encoder (sinks/pgcopy.py): the wire layout, the errors it turns into
data refusals, and a round trip through PostgreSQL that keeps every double bit for bit."""
import io
import math
import struct

import psycopg2
import pytest

from sinks import pgcopy

TEXT, INT4, INT8, FLOAT8 = 25, 23, 20, 701


def test_a_row_is_field_count_then_length_prefixed_values():
    encode = pgcopy.row_encoder([("id", TEXT, True), ("n", INT8, True), ("x", FLOAT8, True),
                                 ("flag", INT4, True), ("maybe", FLOAT8, False),
                                 ("note", TEXT, False)])
    assert encode(("é", 7, 0.5, 1, None, None)) == (
        struct.pack(">h", 6) + struct.pack(">i", 2) + "é".encode()
        + struct.pack(">iqidii", 8, 7, 8, 0.5, 4, 1) + struct.pack(">ii", -1, -1))
    assert encode(("a", 1, 2.0, 0, 3.0, "b")).endswith(
        struct.pack(">id", 8, 3.0) + struct.pack(">i", 1) + b"b")
    assert pgcopy.copy_data(encode, []) == pgcopy.HEADER + pgcopy.TRAILER


@pytest.mark.parametrize("row, why", [
    (("lone \ud800", 1, 1.0, 0, None, None), "text PostgreSQL cannot hold"),
    (("a", 1, 1.0, 2**40, None, None), "does not fit"),     # beyond int4
    (("a", 2**64, 1.0, 0, None, None), "does not fit"),     # beyond int8
    (("a", 1, None, 0, None, None), "does not fit"),        # NULL in a NOT NULL column
    ((None, 1, 1.0, 0, None, None), "does not fit"),
])
def test_what_cannot_be_encoded_is_a_value_error(row, why):
    encode = pgcopy.row_encoder([("id", TEXT, True), ("n", INT8, True), ("x", FLOAT8, True),
                                 ("flag", INT4, True), ("maybe", FLOAT8, False),
                                 ("note", TEXT, False)])
    with pytest.raises(ValueError, match=why):
        pgcopy.copy_data(encode, [row])


def test_a_column_type_it_does_not_know_is_refused_by_name():
    with pytest.raises(TypeError, match="column ok has type oid 16"):
        pgcopy.row_encoder([("ok", 16, True)])  # boolean


@pytest.mark.services
def test_round_trip_through_postgresql_is_exact(postgres_url):
    floats = [5e-324, 2.2250738585072014e-308, 1.7976931348623157e308, -0.0, 0.1, 1 / 3,
              math.pi * 1e-12]
    rows = [(f"r{i}\t\\N\n'\"é", i - 3, x, i % 2, None if i % 3 else x / 7, None if i % 2 else "n")
            for i, x in enumerate(floats)]
    conn = psycopg2.connect(postgres_url)
    try:
        with conn.cursor() as cur:
            cur.execute("CREATE TABLE t (id TEXT NOT NULL, n BIGINT NOT NULL,"
                        " x DOUBLE PRECISION NOT NULL, flag INTEGER NOT NULL,"
                        " maybe DOUBLE PRECISION, note TEXT)")
            cur.execute(pgcopy.COLUMNS_SQL, ("t",))
            catalog = {name: (oid, not_null) for name, oid, not_null in cur.fetchall()}
            columns = ("id", "n", "x", "flag", "maybe", "note")
            encode = pgcopy.row_encoder([(c, *catalog[c]) for c in columns])
            cur.copy_expert("COPY t FROM STDIN (FORMAT binary)",
                            io.BytesIO(pgcopy.copy_data(encode, rows)))
            cur.execute("SELECT id, n, x, flag, maybe, note FROM t ORDER BY n")
            back = cur.fetchall()
    finally:
        conn.close()
    assert back == rows
    assert [struct.pack(">d", r[2]) for r in back] == [struct.pack(">d", x) for x in floats]
