"""PostgreSQL binary COPY data built with numpy, whole columns at a time.

psycopg's ``Copy.write_row`` encodes one row per Python call: for half a million readings of
thirty columns that loop (and the plain-Python column lists it needs) took longer than
Postgres took to store them. Here rows that share a layout (the same text values and the
same missing cells) become one numpy structured array whose fields are exactly the binary
COPY fields, so ``tobytes()`` is the wire format. Row order within a COPY does not matter:
the data lands in a staging table that is upserted as a whole.

Format (PostgreSQL docs, "COPY", binary format): a signature, then per row an int16 field
count and per field an int32 byte length (-1 for NULL) followed by the value in network
byte order; ``timestamptz`` is int64 microseconds since 2000-01-01 UTC. Then an int16 -1.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from cloud.store import schema as s

SIGNATURE = b"PGCOPY\n\xff\r\n\x00" + b"\x00\x00\x00\x00" + b"\x00\x00\x00\x00"
TRAILER = b"\xff\xff"
_PG_EPOCH_US = 946_684_800_000_000  # 2000-01-01T00:00:00Z in microseconds since 1970
_FIXED = {s.FLOAT: ">f8", s.INT: ">i8", s.TS: ">i8"}
#: Beyond this many row layouts (many distinct texts or scattered gaps) the per-layout arrays
#: stop paying for themselves; callers fall back to ``write_row``.
MAX_LAYOUTS = 256


def encode(frame: pd.DataFrame, names: Sequence[str], kinds: Sequence[str]) -> bytes | None:
    """The complete binary COPY payload of ``frame[names]`` (column kinds of
    :mod:`cloud.store.schema`), or ``None`` when a kind or the data's shape is not covered."""
    if any(kind not in _FIXED and kind != s.TEXT for kind in kinds):
        return None
    size = len(frame)
    values, missing, codes, texts = [], [], [], []
    for name, kind in zip(names, kinds):
        column = frame[name]
        if kind == s.TEXT:
            code, uniques = pd.factorize(column, use_na_sentinel=True)
            values.append(None)
            missing.append(code < 0)
            codes.append(code)
            texts.append([str(u).encode() for u in uniques])
        else:
            array, null = _fixed_values(column, kind)
            values.append(array)
            missing.append(null)
            codes.append(None)
            texts.append(None)
    # A row's layout (which cells are NULL, which text each text cell holds) as one integer
    # in mixed radix, so a hash factorisation groups the rows.
    keys, radix = np.zeros(size, dtype=np.int64), 1
    for i in range(len(names)):
        digit, base = (missing[i], 2) if codes[i] is None else (codes[i] + 1, len(texts[i]) + 1)
        keys += digit.astype(np.int64) * radix
        radix *= base
        if radix > 2**62:
            return None
    inverse, layouts = pd.factorize(keys)
    if len(layouts) > MAX_LAYOUTS:
        return None
    order = np.argsort(inverse, kind="stable")
    bounds = np.searchsorted(inverse[order], np.arange(len(layouts) + 1))
    parts = [SIGNATURE]
    for group in range(len(layouts)):
        rows = order[bounds[group]:bounds[group + 1]]
        first = rows[0]
        fields: list[tuple[str, str]] = [("n", ">i2")]
        fill: list[tuple[str, object]] = [("n", len(names))]
        for i, kind in enumerate(kinds):
            if missing[i][first]:
                fields.append((f"l{i}", ">i4"))
                fill.append((f"l{i}", -1))
            elif kind == s.TEXT:
                text = texts[i][codes[i][first]]
                fields.append((f"l{i}", ">i4"))
                fill.append((f"l{i}", len(text)))
                if text:  # an empty text is its length alone
                    fields.append((f"v{i}", f"S{len(text)}"))
                    fill.append((f"v{i}", text))
            else:
                fields += [(f"l{i}", ">i4"), (f"v{i}", _FIXED[kind])]
                fill += [(f"l{i}", 8), (f"v{i}", values[i][rows])]
        block = np.empty(len(rows), dtype=np.dtype(fields))
        for field, value in fill:
            block[field] = value
        parts.append(block.tobytes())
    parts.append(TRAILER)
    return b"".join(parts)


def _fixed_values(column: pd.Series, kind: str) -> tuple[np.ndarray, np.ndarray]:
    """Values in the wire's units and a NULL mask, as ``schema.python_columns`` decides NULL
    (a float is NULL when NaN; an infinity is float8's own ``Infinity``)."""
    if kind == s.FLOAT:
        floats = column.to_numpy(dtype="float64", na_value=np.nan)
        return floats, np.isnan(floats)
    if kind == s.INT:
        null = column.isna().to_numpy()
        return column.to_numpy(dtype="int64", na_value=0), null
    stamps = pd.DatetimeIndex(column)
    null = stamps.isna()
    micros = stamps.tz_convert("UTC").as_unit("us").asi8 - _PG_EPOCH_US
    return np.where(null, 0, micros), np.asarray(null)
