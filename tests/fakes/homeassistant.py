"""A local HTTP server speaking the part of Home Assistant's REST API a gateway uses, as
https://developers.home-assistant.io/docs/api/rest/ documents it:

* every call needs ``Authorization: Bearer <token>``; without the right one: 401;
* ``GET /api/states/<entity_id>``: the state object (``entity_id``, ``state``, ``attributes``,
  ``last_changed``, ``last_updated``), 404 for an entity it does not have;
* ``POST /api/services/<domain>/<service>`` with the service data: runs the service and
  answers with the list of states it changed. ``number.set_value`` / ``input_number.set_value``
  (data ``value``) and ``select.select_option`` / ``input_select.select_option`` (data
  ``option``) change their entity's state; any other service changes nothing.

The server can be stopped and started again on the same port (Home Assistant restarting).
"""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pandas as pd

VALUE_SERVICES = {"number.set_value": "value", "input_number.set_value": "value",
                  "select.select_option": "option", "input_select.select_option": "option"}


class FakeHomeAssistant:
    def __init__(self, token: str = "test-ha-token-0123456789") -> None:
        self.token = token
        self.states: dict[str, dict] = {}
        self.calls: list[tuple[str, dict]] = []  # (domain.service, service data) in order
        self.seen_auth: list[str | None] = []
        self.lock = threading.Lock()
        self.port = 0
        self.server: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def set(self, entity_id: str, state: object, unit: str | None = None, **attributes: object) -> None:
        """Give ``entity_id`` a state (as Home Assistant does, a string) and its attributes."""
        if unit is not None:
            attributes["unit_of_measurement"] = unit
        now = pd.Timestamp.now(tz="UTC").isoformat()
        with self.lock:
            old = self.states.get(entity_id, {}).get("attributes", {})
            self.states[entity_id] = {"entity_id": entity_id, "state": str(state), "attributes": {**old, **attributes},
                                      "last_changed": now, "last_updated": now}

    def start(self) -> FakeHomeAssistant:
        self.server = ThreadingHTTPServer(("127.0.0.1", self.port), _handler(self))
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
        return self

    def stop(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()
            self.server = None

    def _service(self, service: str, data: dict) -> list[dict]:
        with self.lock:
            self.calls.append((service, data))
        key = VALUE_SERVICES.get(service)
        entity_id = data.get("entity_id")
        if key is None or entity_id not in self.states or key not in data:
            return []
        self.set(entity_id, data[key])
        with self.lock:
            return [self.states[entity_id]]


def _handler(ha: FakeHomeAssistant) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *_: object) -> None:
            pass

        def _reply(self, status: int, body: object) -> None:
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def _authorized(self) -> bool:
            given = self.headers.get("Authorization")
            with ha.lock:
                ha.seen_auth.append(given)
            if given != f"Bearer {ha.token}":
                self._reply(401, {"message": "401: Unauthorized"})
                return False
            return True

        def do_GET(self) -> None:  # noqa: N802 (the standard library's name)
            if not self._authorized():
                return
            entity_id = self.path.removeprefix("/api/states/")
            with ha.lock:
                state = ha.states.get(entity_id) if self.path.startswith("/api/states/") else None
            if state is None:
                self._reply(404, {"message": "Entity not found."})
            else:
                self._reply(200, state)

        def do_POST(self) -> None:  # noqa: N802
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length)
            if not self._authorized():
                return
            parts = self.path.split("/")
            if len(parts) != 5 or parts[:3] != ["", "api", "services"]:
                self._reply(404, {"message": "not found"})
                return
            try:
                data = json.loads(raw or b"{}")
            except ValueError:
                self._reply(400, {"message": "Data should be valid JSON."})
                return
            self._reply(200, ha._service(f"{parts[3]}.{parts[4]}", data))

    return Handler
