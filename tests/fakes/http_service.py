"""A local HTTP server standing in for an outside service (weather, prices) in tests.

Each route answers from a queue of :class:`Reply` objects (the last one repeats), so a test
scripts what the service does: a documented body, a 503 then a success, a 429 with
``Retry-After``, a body that is not JSON. Every request is recorded with its path, query and
headers. The bodies themselves live with the tests, each saying which page of the service's
documentation it follows.
"""

from __future__ import annotations

import json
import threading
from collections import deque
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlparse


@dataclass(frozen=True)
class Reply:
    status: int = 200
    body: Any = None  # dict/list: sent as JSON; str/bytes: sent as is
    headers: dict[str, str] = field(default_factory=dict)
    content_type: str | None = None


@dataclass(frozen=True)
class Seen:
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]


class FakeService:
    """``with FakeService() as service:`` serves on ``service.url`` until the block ends."""

    def __init__(self) -> None:
        self.routes: dict[str, deque[Reply]] = {}
        self.requests: list[Seen] = []
        self.lock = threading.Lock()
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self))
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self._thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)

    def route(self, path: str, *replies: Reply) -> None:
        """Answer ``GET path`` with ``replies`` in turn, repeating the last."""
        self.routes[path] = deque(replies)

    def __enter__(self) -> FakeService:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.server.shutdown()
        self.server.server_close()

    def answer(self, path: str) -> Reply:
        with self.lock:
            queue = self.routes.get(path)
            if not queue:
                return Reply(404, {"error": f"no route {path}"})
            return queue.popleft() if len(queue) > 1 else queue[0]


def _handler(service: FakeService) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *_: object) -> None:
            pass

        def do_GET(self) -> None:  # noqa: N802 (the standard library's name)
            parts = urlparse(self.path)
            with service.lock:
                service.requests.append(Seen(parts.path, parse_qs(parts.query), dict(self.headers)))
            reply = service.answer(parts.path)
            if isinstance(reply.body, (dict, list)):
                data, kind = json.dumps(reply.body).encode(), "application/json"
            elif isinstance(reply.body, str):
                data, kind = reply.body.encode(), "text/plain; charset=utf-8"
            else:
                data, kind = reply.body or b"", "application/octet-stream"
            self.send_response(reply.status)
            self.send_header("Content-Type", reply.content_type or kind)
            self.send_header("Content-Length", str(len(data)))
            for name, value in reply.headers.items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(data)

    return Handler
