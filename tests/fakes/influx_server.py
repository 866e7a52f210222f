"""An in-process fake of the InfluxDB 2.x HTTP API, for tests on machines without a server.

Implements what ``influxdb-client`` calls for the edge store: ``/ping``, ``/health``,
``/api/v2/orgs``, ``/api/v2/buckets`` (lookup and creation), ``/api/v2/write`` (line protocol
parsed strictly, as the server's own parser does: malformed lines get 400, a field whose type
changes gets 422) and ``/api/v2/query`` (the Flux subset in :mod:`tests.fakes.influx_flux`,
answered as annotated CSV from the points actually written).

Failure modes for tests: :meth:`FakeInfluxServer.fail_next` answers the next N API requests
with an error status; :meth:`stop` closes the listening socket (connection refused) and
:meth:`start` brings the server back on the same port with its data; a wrong token gets 401.
"""

from __future__ import annotations

import gzip
import itertools
import json
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlparse

from tests.fakes.influx_flux import FluxError, Instant, evaluate, to_annotated_csv

PRECISION_NS = {"ns": 1, "us": 1_000, "ms": 1_000_000, "s": 1_000_000_000}
_FLOAT = re.compile(r"[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?")
_BOOLS = {"t": True, "T": True, "true": True, "True": True, "TRUE": True,
          "f": False, "F": False, "false": False, "False": False, "FALSE": False}


class LineProtocolError(ValueError):
    pass


def _scan(text: str, i: int, stops: str, escapable: str) -> tuple[str, int]:
    """Read up to an unescaped stop character; ``\\`` escapes only ``escapable`` (else literal)."""
    out = []
    while i < len(text) and text[i] not in stops:
        if text[i] == "\\" and i + 1 < len(text) and text[i + 1] in escapable:
            out.append(text[i + 1])
            i += 2
        else:
            out.append(text[i])
            i += 1
    return "".join(out), i


def _field_value(text: str, i: int) -> tuple[Any, int]:
    if text[i] == '"':
        out, i = [], i + 1
        while i < len(text) and text[i] != '"':
            if text[i] == "\\" and i + 1 < len(text) and text[i + 1] in '"\\':
                i += 1
            out.append(text[i])
            i += 1
        if i >= len(text):
            raise LineProtocolError("unbalanced quotes")
        return "".join(out), i + 1
    raw, i = _scan(text, i, ", ", "")
    if raw.endswith("i") and re.fullmatch(r"[+-]?\d+i", raw):
        value = int(raw[:-1])
        if not -(2**63) <= value < 2**63:
            raise LineProtocolError(f"unable to parse integer {raw}: value out of range")
        return value, i
    if raw.endswith("u") and re.fullmatch(r"\d+u", raw):
        return int(raw[:-1]), i
    if raw in _BOOLS:
        return _BOOLS[raw], i
    if _FLOAT.fullmatch(raw):
        return float(raw), i
    raise LineProtocolError(f"invalid field value {raw!r}")


def parse_line(line: str, precision: str = "ns", now_ns: int = 0) -> tuple[str, dict, dict, int]:
    """(measurement, tags, fields, time in ns) of one line, or :class:`LineProtocolError`."""
    measurement, i = _scan(line, 0, ", ", ", ")
    if not measurement:
        raise LineProtocolError("missing measurement")
    tags: dict[str, str] = {}
    while i < len(line) and line[i] == ",":
        key, i = _scan(line, i + 1, ",= ", ",= ")
        if i >= len(line) or line[i] != "=" or not key:
            raise LineProtocolError("missing tag key" if not key else f"missing tag value for {key}")
        value, i = _scan(line, i + 1, ",= ", ",= ")
        if not value or (i < len(line) and line[i] == "="):
            raise LineProtocolError(f"invalid tag value for {key}")
        if key in tags:
            raise LineProtocolError(f"duplicate tag {key}")
        tags[key] = value
    if i >= len(line) or line[i] != " ":
        raise LineProtocolError("missing fields")
    fields: dict[str, Any] = {}
    i += 1
    while True:
        key, i = _scan(line, i, ",= ", ",= ")
        if not key or i >= len(line) or line[i] != "=" or i + 1 >= len(line):
            raise LineProtocolError("missing fields" if not fields and not key else f"invalid field format near {key!r}")
        value, i = _field_value(line, i + 1)
        fields[key] = value
        if i < len(line) and line[i] == ",":
            i += 1
            continue
        break
    stamp = now_ns
    if i < len(line):
        if line[i] != " " or not re.fullmatch(r"-?\d+", line[i + 1 :]):
            raise LineProtocolError(f"bad timestamp {line[i + 1:]!r}")
        stamp = int(line[i + 1 :]) * PRECISION_NS[precision]
    return measurement, tags, fields, stamp


class FakeInfluxServer:
    def __init__(self, token: str = "test-token", org: str = "edge-gateway") -> None:
        self.token = token
        self.orgs = {org: "0000000000000001"}
        self.buckets: dict[str, dict] = {}
        self._bucket_ids = itertools.count(1)  # never reused, as InfluxDB's are not
        self.points: dict[str, dict[tuple, Any]] = {}
        self.field_types: dict[tuple, type] = {}
        self.accepted_lines = 0
        self.write_requests = 0
        self.requests: list[tuple[str, str]] = []
        self._failures: list[int] = []
        self._lock = threading.Lock()
        self._httpd: ThreadingHTTPServer | None = None
        self.port = 0

    # --- control ---
    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> FakeInfluxServer:
        self._httpd = ThreadingHTTPServer(("127.0.0.1", self.port), _handler(self))
        self._httpd.daemon_threads = True
        self.port = self._httpd.server_address[1]
        threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
        return self

    def stop(self) -> None:
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._httpd = None

    def fail_next(self, n: int, status: int = 503) -> None:
        with self._lock:
            self._failures.extend([status] * n)

    def add_bucket(self, name: str, every_seconds: int = 0) -> dict:
        rules = [{"type": "expire", "everySeconds": every_seconds}] if every_seconds else []
        bucket = {"id": f"{next(self._bucket_ids):016x}", "name": name, "orgID": next(iter(self.orgs.values())),
                  "type": "user", "retentionRules": rules}
        self.buckets[name] = bucket
        self.points[name] = {}
        return bucket

    def delete_bucket(self, name: str) -> None:
        """As ``influx bucket delete``: the bucket and its points are gone; one made again
        under its name has a new id."""
        del self.buckets[name], self.points[name]

    def rows(self, bucket: str) -> list[dict]:
        """Stored points as Flux rows (what ``from()`` sees)."""
        return [{"_measurement": m, **dict(tags), "_field": f, "_value": v, "_time": Instant(t)}
                for (m, tags, f, t), v in self.points[bucket].items()]

    # --- request handling ---
    def handle(self, method: str, path: str, query: dict, headers, body: bytes) -> tuple[int, str, str]:
        self.requests.append((method, path))
        if path in ("/ping", "/health"):
            return (204, "", "") if path == "/ping" else (200, "application/json", json.dumps({"status": "pass"}))
        with self._lock:
            failure = self._failures.pop(0) if self._failures else None
        if failure is not None:
            return _error(failure, "unavailable", "service unavailable")
        if headers.get("Authorization") != f"Token {self.token}":
            return _error(401, "unauthorized", "unauthorized access")
        routes = {("GET", "/api/v2/orgs"): self._orgs, ("GET", "/api/v2/buckets"): self._get_buckets,
                  ("POST", "/api/v2/buckets"): self._post_bucket, ("POST", "/api/v2/write"): self._write,
                  ("POST", "/api/v2/query"): self._query}
        route = routes.get((method, path))
        if route is None:
            return _error(404, "not found", f"path not found: {path}")
        with self._lock:
            return route(query, body)

    def _orgs(self, query, body):
        name = query.get("org")
        if name is not None and name not in self.orgs:
            return _error(404, "not found", f'organization name "{name}" not found')
        orgs = [{"id": i, "name": n} for n, i in self.orgs.items() if name in (None, n)]
        return 200, "application/json", json.dumps({"orgs": orgs})

    def _get_buckets(self, query, body):
        found = [b for b in self.buckets.values() if query.get("name") in (None, b["name"])]
        return 200, "application/json", json.dumps({"buckets": found, "links": {"self": "/api/v2/buckets"}})

    def _post_bucket(self, query, body):
        request = json.loads(body)
        if request.get("orgID") not in self.orgs.values():
            return _error(400, "invalid", "organization id is invalid")
        if request["name"] in self.buckets:
            return _error(422, "conflict", f"bucket with name {request['name']} already exists")
        rules = request.get("retentionRules") or []
        bucket = self.add_bucket(request["name"], rules[0]["everySeconds"] if rules else 0)
        return 201, "application/json", json.dumps(bucket)

    def _write(self, query, body):
        self.write_requests += 1
        bucket, precision = query.get("bucket"), query.get("precision", "ns")
        if query.get("org") not in self.orgs and query.get("orgID") not in self.orgs.values():
            return _error(404, "not found", f'organization name "{query.get("org")}" not found')
        if bucket not in self.buckets:
            return _error(404, "not found", f'bucket "{bucket}" not found')
        if precision not in PRECISION_NS:
            return _error(400, "invalid", f"invalid precision {precision!r}")
        parsed = []
        for number, line in enumerate(body.decode("utf-8").split("\n"), start=1):
            if not line.strip() or line.lstrip().startswith("#"):
                continue
            try:
                parsed.append(parse_line(line, precision))
            except LineProtocolError as error:
                return _error(400, "invalid", f"unable to parse '{line}': {error} (line {number})")
        for measurement, tags, fields, stamp in parsed:
            for field, value in fields.items():
                known = self.field_types.setdefault((bucket, measurement, field), type(value))
                if known is not type(value):
                    return _error(422, "unprocessable entity", f"partial write: field type conflict: {field}")
        for measurement, tags, fields, stamp in parsed:
            for field, value in fields.items():
                self.points[bucket][(measurement, tuple(sorted(tags.items())), field, stamp)] = value
        self.accepted_lines += len(parsed)
        return 204, "", ""

    def _query(self, query, body):
        request = json.loads(body)
        if query.get("org") not in self.orgs and query.get("orgID") not in self.orgs.values():
            return _error(404, "not found", "organization not found")
        try:
            tables = evaluate(request["query"], {name: self.rows(name) for name in self.buckets})
            return 200, "text/csv; charset=utf-8", to_annotated_csv(tables)
        except FluxError as error:
            return _error(error.status, "invalid", f"error in query specification: {error}")


def _error(status: int, code: str, message: str) -> tuple[int, str, str]:
    return status, "application/json", json.dumps({"code": code, "message": message})


def _handler(server: FakeInfluxServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def _serve(self, method: str) -> None:
            url = urlparse(self.path)
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            if self.headers.get("Content-Encoding") == "gzip":
                body = gzip.decompress(body)
            query = {k: v[0] for k, v in parse_qs(url.query).items()}
            status, content_type, text = server.handle(method, url.path, query, self.headers, body)
            payload = text.encode("utf-8")
            self.send_response(status)
            if content_type:
                self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def do_GET(self) -> None:
            self._serve("GET")

        def do_POST(self) -> None:
            self._serve("POST")

        def do_HEAD(self) -> None:
            self._serve("HEAD")

        def log_message(self, *args: object) -> None:
            pass  # keep test output readable

    return Handler
