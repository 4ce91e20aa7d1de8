"""Rows in PostgreSQL's binary COPY format, for the sink's bulk inserts.

The text format spends most of its time printing floats (`repr`, the shortest text that reads
back as the same double: ~1 µs each, seven per episode row, a quarter of an aiokafka stream
worker's CPU); binary COPY sends the 8 bytes of the double itself, and PostgreSQL need not
parse them either. Layout (PostgreSQL docs, "COPY", Binary Format): a header, then per row a
16-bit field count and per field a 32-bit length (-1 = NULL) and the value in network byte
order: int8 / int4 / float8 as 8 / 4 / 8 bytes, text as its UTF-8 bytes.

The encoder of a table is generated once from its columns' types and NOT NULL flags (the
catalog's), so a row costs a few C calls: one struct pack per run of NOT NULL numbers, one
encode per text. Values it cannot encode raise ValueError, which the sink treats as the data's
fault (it bisects the batch): text that is not UTF-8 (a lone surrogate), an integer beyond its
column, a NULL in a NOT NULL column.
"""
from __future__ import annotations

import struct
from collections.abc import Callable, Sequence

HEADER = b"PGCOPY\n\xff\r\n\x00" + struct.pack(">ii", 0, 0)  # signature, flags, extension
TRAILER = struct.pack(">h", -1)
TEXT_OID = 25
NUMBER_OIDS = {20: ("q", 8), 23: ("i", 4), 701: ("d", 8)}  # int8, int4, float8
COLUMNS_SQL = ("SELECT attname, atttypid::int, attnotnull FROM pg_attribute"
               " WHERE attrelid = %s::regclass AND attnum > 0 AND NOT attisdropped")


def row_encoder(types: Sequence[tuple[str, int, bool]]) -> Callable[[tuple], bytes]:
    """A function: row tuple -> that row in binary COPY format, for columns given as
    (name, type oid, not null) in row order."""
    env: dict = {"_len": struct.Struct(">i").pack, "_NULL": struct.pack(">i", -1)}
    pieces = [repr(struct.pack(">h", len(types)))]
    run: list[tuple[int, str, int]] = []  # consecutive NOT NULL numbers: one pack call

    def end_run() -> None:
        if run:
            name = f"_pack{len(env)}"
            env[name] = struct.Struct(">" + "".join(f"i{code}" for _, code, _ in run)).pack
            pieces.append(f"{name}({', '.join(f'{size}, r[{i}]' for i, _, size in run)})")
            run.clear()

    for i, (name, oid, not_null) in enumerate(types):
        if oid == TEXT_OID:
            end_run()
            text = f"_len(len(t := r[{i}].encode())) + t"
            pieces.append(text if not_null else f"(_NULL if r[{i}] is None else {text})")
        elif oid in NUMBER_OIDS:
            code, size = NUMBER_OIDS[oid]
            if not_null:
                run.append((i, code, size))
                continue
            end_run()
            env[f"_one{i}"] = struct.Struct(f">i{code}").pack
            pieces.append(f"(_NULL if r[{i}] is None else _one{i}({size}, r[{i}]))")
        else:
            raise TypeError(f"binary COPY: column {name} has type oid {oid}, not text, int4,"
                            " int8 or float8")
    end_run()
    exec(f"def encode(r):\n    return b''.join(({', '.join(pieces)},))", env)  # noqa: S102
    return env["encode"]


def copy_data(encode: Callable[[tuple], bytes], rows: Sequence[tuple]) -> bytes:
    """The whole COPY … FROM STDIN (FORMAT binary) input of `rows`."""
    try:
        return b"".join([HEADER, *map(encode, rows), TRAILER])
    except (struct.error, AttributeError) as error:  # an int beyond int4, a NULL in NOT NULL
        raise ValueError(f"a value does not fit its column: {error}") from None
    except UnicodeEncodeError as error:  # a lone surrogate: no UTF-8 for it
        raise ValueError(f"text PostgreSQL cannot hold: {error}") from None
