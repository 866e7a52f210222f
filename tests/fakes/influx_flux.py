"""A small Flux evaluator for the fake InfluxDB server: the subset our queries use, with the
real engine's table semantics (group keys, per-table sort/limit/aggregates, pivot regrouping,
schema collisions when one column would hold two types) and annotated CSV output.

Unknown functions or arguments are compile errors, so a query the fake cannot evaluate fails
loudly instead of returning something plausible.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import datetime, timezone
from typing import Any


class FluxError(Exception):
    """A query the fake (like the real engine) refuses; ``status`` is the HTTP answer."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


class Instant(int):
    """Nanoseconds since the epoch, typed as a Flux time."""


Table = tuple[list[str], list[dict[str, Any]]]  # (group key columns, rows)

_TIME = re.compile(r"^(\d{4})-(\d\d)-(\d\d)T(\d\d):(\d\d):(\d\d)(?:\.(\d{1,9}))?Z$")


def parse_time(text: str) -> Instant:
    m = _TIME.match(text)
    if not m:
        raise FluxError(f"invalid time literal {text!r}")
    whole = datetime(*map(int, m.groups()[:6]), tzinfo=timezone.utc)
    frac = (m.group(7) or "").ljust(9, "0")
    return Instant(int(whole.timestamp()) * 1_000_000_000 + int(frac))


def format_time(ns: int) -> str:
    seconds, frac = divmod(int(ns), 1_000_000_000)
    text = datetime.fromtimestamp(seconds, tz=timezone.utc).strftime("%Y-%m-%dT%H:%M:%S")
    return text + (f".{frac:09d}".rstrip("0") if frac else "") + "Z"


# --- parsing ----------------------------------------------------------------------------------


def _split_top(text: str, sep: str) -> list[str]:
    parts, depth, quoted, escaped, current = [], 0, False, False, []
    for ch in text:
        if quoted:
            current.append(ch)
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == '"':
                quoted = False
            continue
        if ch == '"':
            quoted = True
        elif ch in "([{":
            depth += 1
        elif ch in ")]}":
            depth -= 1
        if ch == sep and depth == 0:
            parts.append("".join(current))
            current = []
        else:
            current.append(ch)
    parts.append("".join(current))
    return [p.strip() for p in parts if p.strip()]


def _string(text: str) -> str:
    body = text[1:-1]
    out, i = [], 0
    escapes = {"n": "\n", "r": "\r", "t": "\t", "\\": "\\", '"': '"', "$": "$"}
    while i < len(body):
        if body[i] == "\\":
            if i + 1 >= len(body) or body[i + 1] not in escapes:
                raise FluxError(f"invalid escape in string literal {text}")
            out.append(escapes[body[i + 1]])
            i += 2
        else:
            if body[i] == '"':
                raise FluxError(f"unescaped quote in string literal {text}")
            out.append(body[i])
            i += 1
    return "".join(out)


def _predicate(text: str) -> Callable[[dict], bool]:
    body = text.split("=>", 1)[1].strip()
    tests = []
    for clause in re.split(r"\s+and\s+", body):
        m = re.fullmatch(r'r\.(\w+)\s*==\s*(".*")', clause.strip(), re.S)
        if not m:
            raise FluxError(f"unsupported predicate {clause!r}")
        tests.append((m.group(1), _string(m.group(2))))
    return lambda row: all(row.get(col) == value for col, value in tests)


def _value(text: str) -> Any:
    if text.startswith('"'):
        return _string(text)
    if text.startswith("["):
        return [_value(p) for p in _split_top(text[1:-1], ",")]
    if text.startswith("("):
        return _predicate(text)
    if text in ("true", "false"):
        return text == "true"
    if re.fullmatch(r"-?\d+", text):
        return int(text)
    return parse_time(text)


def parse_pipeline(query: str) -> list[tuple[str, dict[str, Any]]]:
    stages = []
    for stage in _split_top(query.strip(), "|"):
        stage = stage.lstrip(">").strip()
        m = re.fullmatch(r"(\w+)\((.*)\)", stage, re.S)
        if not m:
            raise FluxError(f"cannot parse {stage!r}")
        args = {}
        for part in _split_top(m.group(2), ","):
            key, _, raw = part.partition(":")
            args[key.strip()] = _value(raw.strip())
        stages.append((m.group(1), args))
    return stages


# --- evaluation -------------------------------------------------------------------------------


def _regroup(rows: list[dict], columns: list[str]) -> list[Table]:
    groups: dict[tuple, list[dict]] = {}
    for row in rows:
        groups.setdefault(tuple(row.get(c) for c in columns), []).append(row)
    return [(list(columns), g) for g in groups.values()]


def _per_table(tables: list[Table], fn: Callable[[list[str], list[dict]], list[dict]]) -> list[Table]:
    out = [(key, fn(key, rows)) for key, rows in tables]
    return [(key, rows) for key, rows in out if rows]


def _aggregate(key: list[str], rows: list[dict], column: str, value: Any) -> list[dict]:
    return [{**{k: rows[0].get(k) for k in key}, column: value}]


def _first_of_each(rows: list[dict], column: str) -> list[dict]:
    seen, out = set(), []
    for row in rows:
        if row.get(column) not in seen:
            seen.add(row.get(column))
            out.append(row)
    return out


def _sort_key(columns: list[str]):
    return lambda row: tuple((row.get(c) is not None, row.get(c) if row.get(c) is not None else 0) for c in columns)


def _pivot(tables: list[Table], row_key: list[str], column_key: list[str], value_column: str) -> list[Table]:
    merged: dict[tuple, tuple[list[str], dict[tuple, dict]]] = {}
    for key, rows in tables:
        new_key = [c for c in key if c not in column_key and c != value_column]
        for row in rows:
            group = tuple((c, row.get(c)) for c in new_key)
            _, out_rows = merged.setdefault(group, (new_key, {}))
            rk = tuple(row.get(c) for c in row_key)
            target = out_rows.setdefault(rk, {**dict(group), **dict(zip(row_key, rk))})
            target["_".join(str(row[c]) for c in column_key)] = row[value_column]
    return [(key, sorted(rows.values(), key=_sort_key(row_key))) for key, rows in merged.values()]


def evaluate(query: str, points: dict[str, list[dict]]) -> list[Table]:
    """Run a pipeline over ``points`` (bucket name -> rows with _measurement/_field/_value/_time/tags)."""
    stages = parse_pipeline(query)
    if not stages or stages[0][0] != "from":
        raise FluxError("a query must start with from()")
    bucket = stages[0][1].get("bucket")
    if bucket not in points:
        raise FluxError(f'could not find bucket "{bucket}"', status=404)
    tables: list[Table] = []
    if len(stages) < 2 or stages[1][0] != "range":
        raise FluxError("from() must be followed by range()")
    for name, args in stages[1:]:
        tables = _apply(name, args, tables, points[bucket])
    return tables


def _series(rows: list[dict], start: int, stop: int) -> list[Table]:
    tables: dict[tuple, Table] = {}
    for row in rows:
        if start <= row["_time"] < stop:
            key = ["_start", "_stop", *sorted(c for c in row if c not in ("_time", "_value"))]
            full = {**row, "_start": Instant(start), "_stop": Instant(stop)}
            tables.setdefault(tuple((c, full[c]) for c in key), (key, []))[1].append(full)
    return [(key, sorted(rows, key=lambda r: r["_time"])) for key, rows in tables.values()]


def _apply(name: str, args: dict, tables: list[Table], stored: list[dict]) -> list[Table]:
    column = args.get("column", "_value")
    if name == "range":
        return _series(stored, args["start"], args.get("stop", parse_time("2262-04-11T00:00:00Z")))
    if name == "filter":
        return _per_table(tables, lambda key, rows: [r for r in rows if args["fn"](r)])
    if name == "pivot":
        return _pivot(tables, args["rowKey"], args["columnKey"], args["valueColumn"])
    if name == "group":
        return _regroup([r for _, rows in tables for r in rows], args.get("columns", []))
    if name == "sort":
        columns, desc = args.get("columns", ["_value"]), args.get("desc", False)
        return _per_table(tables, lambda key, rows: sorted(rows, key=_sort_key(columns), reverse=desc))
    if name == "limit":
        return _per_table(tables, lambda key, rows: rows[: args["n"]])
    if name == "keep":
        keep = args["columns"]
        return [([c for c in key if c in keep], [{c: r[c] for c in keep if c in r} for r in rows]) for key, rows in tables]
    if name == "unique":
        return _per_table(tables, lambda key, rows: _first_of_each(rows, column))
    if name == "count":
        return _per_table(tables, lambda key, rows: _aggregate(key, rows, column, sum(r.get(column) is not None for r in rows)))
    if name == "sum":
        return _per_table(tables, lambda key, rows: _aggregate(key, rows, column, sum(r[column] for r in rows)))
    if name == "last":
        return _per_table(tables, lambda key, rows: [r for r in rows if r.get(column) is not None][-1:])
    if name == "max":
        return _per_table(tables, lambda key, rows: [max(rows, key=lambda r: r[column])])
    if name == "distinct":
        return _per_table(
            tables, lambda key, rows: [{**{k: rows[0].get(k) for k in key}, "_value": v} for v in dict.fromkeys(r.get(column) for r in rows)]
        )
    raise FluxError(f'undefined identifier "{name}"')


# --- annotated CSV ----------------------------------------------------------------------------

_ORDER = ["_start", "_stop", "_time", "_value", "_field", "_measurement"]


def _datatype(values: list[Any], column: str) -> str:
    kinds = set()
    for v in values:
        if v is None:
            continue
        kinds.add(
            "dateTime:RFC3339" if isinstance(v, Instant) else "boolean" if isinstance(v, bool)
            else "long" if isinstance(v, int) else "double" if isinstance(v, float) else "string"
        )
    if len(kinds) > 1:
        raise FluxError(f"schema collision: column {column} would hold {sorted(kinds)}", status=500)
    return kinds.pop() if kinds else "string"


def _cell(v: Any) -> str:
    if v is None:
        return ""
    if isinstance(v, Instant):
        return format_time(v)
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, float):
        return repr(v).replace("inf", "Inf")
    return str(v)


def _csv_field(text: str) -> str:
    return '"' + text.replace('"', '""') + '"' if any(c in text for c in ',"\r\n') else text


def to_annotated_csv(tables: list[Table]) -> str:
    out, previous = [], None
    for index, (key, rows) in enumerate(tables):
        names = sorted({c for r in rows for c in r} | set(key), key=lambda c: (c not in _ORDER, _ORDER.index(c) if c in _ORDER else 0, c))
        types = [_datatype([r.get(c) for r in rows], c) for c in names]
        schema = (tuple(names), tuple(types), tuple(c in key for c in names))
        if schema != previous:
            if previous is not None:
                out.append("")
            out.append(",".join(["#datatype", "string", "long", *types]))
            out.append(",".join(["#group", "false", "false", *("true" if c in key else "false" for c in names)]))
            out.append(",".join(["#default", "_result", "", *[""] * len(names)]))
            out.append(",".join(["", "result", "table", *names]))
            previous = schema
        for row in rows:
            out.append(",".join(["", "", str(index), *(_csv_field(_cell(row.get(c))) for c in names)]))
    return "\r\n".join(out) + "\r\n\r\n" if out else "\r\n"
