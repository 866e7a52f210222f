"""The two calls of Home Assistant's REST API a gateway makes, over httpx, with its failures
turned into ours (https://developers.home-assistant.io/docs/api/rest/):

* ``GET /api/states/<entity_id>``: the entity's state object (``entity_id``, ``state``,
  ``attributes``, ``last_changed``); 404 when there is no such entity.
* ``POST /api/services/<domain>/<service>`` with the service data as a JSON object: the list
  of states changed while the service ran.

Every call carries ``Authorization: Bearer <token>``; Home Assistant answers 401 without a
valid one. The edge has its own client rather than the cloud's (``cloud/live/http.py``): a
gateway never imports the cloud, and a sample that fails is simply the next sample's to
retry, so no retry policy is needed here.
"""

from __future__ import annotations

from typing import Any

import httpx


class HomeAssistantError(Exception):
    """Home Assistant gave no usable answer."""


class Unreachable(HomeAssistantError):
    """No connection, a timeout, or a server error (Home Assistant restarting, a proxy's 502)."""


class Unauthorized(HomeAssistantError):
    """401 or 403: the token is missing, wrong or revoked."""


class NotFound(HomeAssistantError):
    """404: no such entity or service."""


class Unexpected(HomeAssistantError):
    """An answer that is not what the API documents."""


class HomeAssistantApi:
    def __init__(self, url: str, token: str, timeout_s: float) -> None:
        self._client = httpx.Client(base_url=url, timeout=timeout_s,
                                    headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"})

    def _request(self, method: str, path: str, body: dict | None = None) -> Any:
        try:
            response = self._client.request(method, path, json=body)
        except httpx.HTTPError as error:
            raise Unreachable(str(error) or type(error).__name__) from None
        if response.status_code in (401, 403):
            raise Unauthorized(f"{response.status_code} {response.reason_phrase}")
        if response.status_code == 404:
            raise NotFound(f"404 for {method} {path}")
        if response.status_code >= 500:
            raise Unreachable(f"{response.status_code} {response.reason_phrase}")
        if response.status_code >= 400:
            raise Unexpected(f"{response.status_code} {response.reason_phrase} for {method} {path}")
        try:
            return response.json()
        except ValueError:
            raise Unexpected(f"{method} {path} answered with something other than JSON") from None

    def state(self, entity_id: str) -> dict:
        """The state object of ``entity_id``."""
        body = self._request("GET", f"/api/states/{entity_id}")
        if not isinstance(body, dict) or not isinstance(body.get("attributes", {}), dict):
            raise Unexpected(f"the state of {entity_id} is not a state object")
        return body

    def call(self, service: str, data: dict) -> list:
        """Call ``service`` ('domain.service') with ``data``; the states it changed."""
        domain, _, name = service.partition(".")
        body = self._request("POST", f"/api/services/{domain}/{name}", data)
        if not isinstance(body, list):
            raise Unexpected(f"{service} did not answer with the list of changed states")
        return body

    def close(self) -> None:
        self._client.close()
