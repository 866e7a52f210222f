"""A local HTTP server speaking the PostgREST subset supabase-py uses, over in-memory tables.

Enough of PostgREST to prove the Supabase adapter right: upserts with ``Prefer:
resolution=merge-duplicates`` and ``on_conflict`` (which must name the primary key, as
Postgres requires a matching unique constraint), plain inserts that conflict with 409,
PATCH and DELETE with filters, selects with ``eq/gte/gt/lt/lte`` filters, ``in.(a,"b,c")`` (a
list, values holding reserved characters double-quoted, as PostgREST's operator docs show) and
``or=(…,and(…))`` logic trees (quoted alike: URL grammar, "Reserved characters"), ``order``, ``offset``/``limit``
or a ``Range`` header, ``Prefer: count=exact``, HEAD, and a server-side ``max_rows`` cap that
silently shortens every response, as PostgREST's ``db-max-rows`` does. A float8 infinity
travels as the text ``"Infinity"`` both ways (PostgreSQL's ``json_populate_recordset``, which
PostgREST inserts with, reads it, and ``to_json`` writes it so): the fake keeps such text as sent.
"""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Iterable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, urlparse

import pandas as pd

_OPS = {"eq": lambda a, b: a == b, "gte": lambda a, b: a >= b, "gt": lambda a, b: a > b,
        "lt": lambda a, b: a < b, "lte": lambda a, b: a <= b}


class FakeTable:
    def __init__(self, keys: Iterable[str], time_columns: Iterable[str] = (), serial: str | None = None) -> None:
        self.keys, self.time_columns, self.serial = tuple(keys), set(time_columns), serial
        self.rows: dict[tuple, dict[str, Any]] = {}
        self.next_id = 1


class FakePostgrest:
    def __init__(self, tables: dict[str, FakeTable], max_rows: int = 1000,
                 views: dict[str, Any] | None = None) -> None:
        self.tables, self.max_rows, self.views = tables, max_rows, views or {}
        self.requests: list[tuple[str, str, int]] = []  # (method, table, rows in the body or response)
        self.lock = threading.Lock()
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self))
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"

    def __enter__(self) -> FakePostgrest:
        threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()

    # table semantics ---------------------------------------------------------------------
    def value(self, table: str, column: str, value: Any) -> Any:
        """Comparable form: instants compare as instants whatever their text looks like."""
        time_columns = self.tables[table].time_columns if table in self.tables else {"ts", "first_ts", "last_ts"}
        if value is not None and column in time_columns:
            return pd.Timestamp(value).tz_convert("UTC") if pd.Timestamp(value).tzinfo else pd.Timestamp(value, tz="UTC")
        return value

    def select(self, table: str, params: list[tuple[str, str]]) -> list[dict]:
        rows = list(self.views[table](self)) if table in self.views else list(self.tables[table].rows.values())
        for column, expression in params:
            if column in ("select", "order", "offset", "limit", "columns", "on_conflict"):
                continue
            if column in ("or", "and"):
                tree = _logic_tree(column, expression)
                rows = [r for r in rows if self._holds(table, tree, r)]
                continue
            rows = [r for r in rows if self._holds(table, (column, expression), r)]
        order = dict(params).get("order")
        for part in reversed(order.split(",") if order else []):
            column, _, rest = part.partition(".")
            direction, _, nulls = rest.partition(".")
            desc = direction.startswith("desc")
            nulls_first = nulls == "nullsfirst" if nulls else desc  # PostgreSQL's default: NULLS FIRST when descending
            missing_rank = (2 if nulls_first else -1) if desc else (-1 if nulls_first else 2)
            rows.sort(key=lambda r: (missing_rank, 0) if r.get(column) is None else (1, self._cmp(table, column, r)),  # noqa: B023
                      reverse=desc)
        return rows

    def _holds(self, table: str, condition: Any, row: dict, in_tree: bool = False) -> bool:
        """Whether ``row`` meets a filter ``(column, "op.value")`` or a logic tree
        ``("or" | "and", [conditions])``. A NULL meets no comparison, as in SQL. A value may
        be double-quoted inside a tree or an ``in`` list; a filter's own value is taken as it
        stands (PostgREST's parser reads the two apart)."""
        name, rest = condition
        if name in ("or", "and") and isinstance(rest, list):
            met = (self._holds(table, part, row, True) for part in rest)
            return any(met) if name == "or" else all(met)
        op, _, raw = rest.partition(".")
        if row.get(name) is None:
            return False
        if op == "in":
            listed = {self._parse(table, name, _unquoted(v), row[name]) for v in _split(raw.strip()[1:-1])}
            return self._cmp(table, name, row) in listed
        return _OPS[op](self._cmp(table, name, row), self._parse(table, name, _unquoted(raw) if in_tree else raw, row[name]))

    def _parse(self, table: str, column: str, raw: str, like: Any) -> Any:
        """A filter's text as the type of the stored value it is compared with."""
        if isinstance(like, bool):
            return raw == "true"
        if isinstance(like, (int, float)):
            return float(raw)
        return self.value(table, column, raw)

    def _cmp(self, table: str, column: str, row: dict) -> Any:
        value = self.value(table, column, row.get(column))
        return str(value) if column in ("device_id",) else value

    def write(self, table: str, body: list[dict], on_conflict: str | None, merge: bool) -> tuple[int, Any]:
        spec = self.tables[table]
        if on_conflict and tuple(on_conflict.split(",")) != spec.keys:
            return 400, {"code": "42P10", "message": "there is no unique or exclusion constraint matching the "
                                                     "ON CONFLICT specification"}
        if _holds_nul(body):
            # PostgreSQL's json -> text refuses U+0000 (its docs, "JSON Types"), and PostgREST answers 400.
            return 400, {"code": "22P05", "message": "unsupported Unicode escape sequence",
                         "details": "\\u0000 cannot be converted to text."}
        written = []
        for row in body:
            row = dict(row)
            if spec.serial and row.get(spec.serial) is None:
                row[spec.serial], spec.next_id = spec.next_id, spec.next_id + 1
            key = tuple(self.value(table, k, row.get(k)) for k in spec.keys)
            if key in spec.rows and not merge:
                return 409, {"code": "23505", "message": "duplicate key value violates unique constraint"}
            spec.rows[key] = {**spec.rows.get(key, {}), **row}
            written.append(spec.rows[key])
        return 201, written


def _handler(fake: FakePostgrest) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: Any) -> None:  # keep test output clean
            pass

        def _route(self) -> tuple[str, list[tuple[str, str]]]:
            url = urlparse(self.path)
            match = re.fullmatch(r"/rest/v1/(\w+)", url.path)
            if not match or not self.headers.get("apikey"):
                raise LookupError(url.path)
            return match.group(1), parse_qsl(url.query, keep_blank_values=True)

        def _send(self, status: int, payload: Any, headers: dict[str, str] | None = None, body: bool = True) -> None:
            data = json.dumps(payload).encode() if payload is not None else b""
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            for name, value in (headers or {}).items():
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(data) if body else 0))
            self.end_headers()
            if body:
                self.wfile.write(data)

        def _read(self, body: bool) -> None:
            try:
                table, params = self._route()
            except LookupError:
                return self._send(404, {"code": "42P01", "message": "relation does not exist"})
            if table not in fake.tables and table not in fake.views:
                return self._send(404, {"code": "42P01", "message": f'relation "{table}" does not exist'})
            with fake.lock:
                try:
                    rows = fake.select(table, params)
                except ValueError as error:
                    return self._send(400, {"code": "PGRST100", "message": str(error)})
            query = dict(params)
            offset, limit = int(query.get("offset", 0)), int(query.get("limit", len(rows)))
            if "Range" in self.headers:
                first, _, last = self.headers["Range"].partition("-")
                offset, limit = int(first), int(last) - int(first) + 1
            page = rows[offset:offset + min(limit, fake.max_rows)]
            total = str(len(rows)) if "count=exact" in self.headers.get("Prefer", "") else "*"
            span = f"{offset}-{offset + len(page) - 1}" if page else "*"
            fake.requests.append((self.command, table, len(page)))
            self._send(200, page, {"Content-Range": f"{span}/{total}"}, body=body)

        def do_GET(self) -> None:
            self._read(body=True)

        def do_HEAD(self) -> None:
            self._read(body=False)

        def do_POST(self) -> None:
            table, params = self._route()
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            body = body if isinstance(body, list) else [body]
            prefer = self.headers.get("Prefer", "")
            with fake.lock:
                status, result = fake.write(table, body, dict(params).get("on_conflict"),
                                            "resolution=merge-duplicates" in prefer)
            fake.requests.append(("POST", table, len(body)))
            if "return=representation" in prefer or status >= 400:
                self._send(status, result)
            else:
                self._send(status, None, body=False)

        def do_DELETE(self) -> None:
            """PostgREST's delete: the filtered rows go; with ``Prefer: count=exact`` and
            ``return=minimal``, 204 and ``Content-Range: */N``."""
            table, params = self._route()
            with fake.lock:
                rows = fake.select(table, params)
                spec = fake.tables[table]
                gone = {id(row) for row in rows}
                spec.rows = {key: row for key, row in spec.rows.items() if id(row) not in gone}
            fake.requests.append(("DELETE", table, len(rows)))
            counted = {"Content-Range": f"*/{len(rows)}"} if "count=exact" in self.headers.get("Prefer", "") else {}
            if "return=representation" in self.headers.get("Prefer", ""):
                self._send(200, rows, counted)
            else:
                self._send(204, None, counted, body=False)

        def do_PATCH(self) -> None:
            table, params = self._route()
            values = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            with fake.lock:
                rows = fake.select(table, params)
                for row in rows:
                    row.update(values)
            fake.requests.append(("PATCH", table, len(rows)))
            if "return=representation" in self.headers.get("Prefer", ""):
                self._send(200, rows)
            else:
                self._send(204, None, body=False)

    return Handler


def _split(text: str) -> list[str]:
    """``text`` cut at its top-level commas: not inside double quotes (where a backslash
    escapes the next character) nor inside parentheses."""
    parts, depth, quoted, escaped, current = [], 0, False, False, ""
    for char in text:
        if escaped:
            escaped = False
        elif quoted and char == "\\":
            escaped = True
        elif char == '"':
            quoted = not quoted
        elif not quoted and char in "()":
            depth += 1 if char == "(" else -1
        elif not quoted and depth == 0 and char == ",":
            parts.append(current)
            current = ""
            continue
        current += char
    return [*parts, current] if current or parts else []


def _unquoted(value: str) -> str:
    """A filter value as PostgREST reads it: one wrapped in double quotes (how a value with
    reserved characters ``,.:()`` is sent) loses them and its backslash escapes."""
    if len(value) >= 2 and value[0] == value[-1] == '"':
        return re.sub(r"\\(.)", r"\1", value[1:-1])
    return value


def _logic_tree(operator: str, text: str) -> tuple[str, list]:
    """``or=(a.gt.1,and(a.eq.1,b.gt."x,y"))`` as nested ``(operator, [conditions])``, as
    PostgREST's "Logical operators" (docs.postgrest.org, Tables and Views, Operators) nest them."""
    conditions: list = []
    for part in _split(text.strip()[1:-1]):
        head = part.split("(", 1)[0]
        if head in ("or", "and") and part.endswith(")"):
            conditions.append(_logic_tree(head, part[len(head):]))
        else:
            column, _, rest = part.partition(".")
            if rest.partition(".")[0] not in (*_OPS, "in"):
                raise ValueError(f"failed to parse logic tree ({text})")  # PostgREST answers PGRST100
            conditions.append((column, rest))
    return operator, conditions


def _holds_nul(value: Any) -> bool:
    if isinstance(value, str):
        return "\x00" in value
    if isinstance(value, dict):
        return any(_holds_nul(k) or _holds_nul(v) for k, v in value.items())
    return isinstance(value, list) and any(_holds_nul(v) for v in value)
