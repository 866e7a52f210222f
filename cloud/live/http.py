"""One HTTP client for every outside service, with the behaviour a scheduled job needs.

* **Where**: each service has a default base URL, overridable by ``DER_<SERVICE>_URL``
  (:meth:`Service.base_url`), so tests and mirrors point it elsewhere.
* **Keys** come from the environment only (:meth:`Service.key`) and are registered with
  :mod:`der_core.redact` before first use, so no message, log line or traceback shows one.
* **Failures**: every request has a timeout; connection errors, timeouts, ``5xx`` and
  ``429`` are retried with exponential backoff and full jitter, and a ``Retry-After`` header
  (seconds or an HTTP date) is waited out when the service sends one (up to
  :attr:`RetryPolicy.max_wait_s`). What still fails raises :class:`SourceUnavailable`, which a
  job answers by planning on the data it has stored and marking the plan stale. A refusal
  (``4xx`` other than 429: a bad key, a bad area) raises :class:`SourceRefused` at once, since
  asking again changes nothing. A body that is not what the service documents raises
  :class:`MalformedResponse` naming the service and the field (:func:`field`); an answer in
  the documented shape with nothing for the present, :class:`NoData`.
"""

from __future__ import annotations

import email.utils
import logging
import os
import random
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import httpx

from der_core.errors import ConfigError, DERError
from der_core.redact import RedactingFilter, redact, register_secret

# httpx logs each request's full URL, query string and any key in it included, at INFO; its
# own logger masks them, so no handler (a job's, a test's) ever receives one.
logging.getLogger("httpx").addFilter(RedactingFilter())


class SourceError(DERError):
    """An outside service gave no usable answer; the job goes on with what is stored."""


class SourceUnavailable(SourceError):
    """The service could not be reached, or kept failing, within the retry policy."""


class SourceRefused(SourceError):
    """The service refused the request (a ``4xx`` other than 429): asking again will not help."""


class MalformedResponse(SourceError):
    """The service answered, but not in the shape its documentation gives."""


class NoData(SourceError):
    """The service answered as it documents, with nothing for the time a plan starts from (no
    weather from this hour on, no price in force now): the plan runs on what is stored and is
    marked stale, as for a service that is down."""


@dataclass(frozen=True)
class Service:
    """An outside service: its name in messages, the ``<SERVICE>`` of ``DER_<SERVICE>_URL``,
    its documented base URL and the variable holding its key (None: it needs none)."""

    name: str
    env_name: str
    default_url: str
    key_variable: str | None = None

    @property
    def url_variable(self) -> str:
        return f"DER_{self.env_name}_URL"

    def base_url(self, environ: Mapping[str, str] = os.environ) -> str:
        """The base URL requests go to, without a trailing slash."""
        return (environ.get(self.url_variable) or self.default_url).rstrip("/")

    def key(self, environ: Mapping[str, str] = os.environ) -> str:
        """The service's key from its variable; a ConfigError naming the variable without one."""
        if self.key_variable is None:
            raise ConfigError(f"{self.name} takes no key")
        value = environ.get(self.key_variable, "").strip()
        if not value:
            raise ConfigError(f"{self.name} needs a key: set {self.key_variable}")
        register_secret(value)
        return value


@dataclass(frozen=True)
class RetryPolicy:
    """How long one request may take and how a failing one is retried: ``attempts`` in all,
    waiting ``backoff_s * 2**n`` (at most ``max_backoff_s``) with full jitter between them,
    or what ``Retry-After`` asks for, up to ``max_wait_s``."""

    attempts: int = 4
    timeout_s: float = 10.0
    backoff_s: float = 1.0
    max_backoff_s: float = 30.0
    max_wait_s: float = 120.0


RETRIED_STATUS = frozenset({429, 500, 502, 503, 504})


def retry_after_s(response: httpx.Response, now: float | None = None) -> float | None:
    """The wait ``Retry-After`` asks for, in seconds (None without a usable header); without
    one, the wait until the ISO 8601 instant of ``X-Ratelimit-Retry-At``, which Forecast.Solar
    sends instead (asking again before that instant extends its ban, doc.forecast.solar/facing429)."""
    value = response.headers.get("retry-after")
    if value is None:
        return _retry_at_s(response.headers.get("x-ratelimit-retry-at"), now)
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(when.timestamp() - (time.time() if now is None else now), 0.0)


def _retry_at_s(value: str | None, now: float | None) -> float | None:
    if not value:
        return None
    try:
        when = datetime.fromisoformat(value.strip())
    except ValueError:
        return None
    if when.tzinfo is None:
        return None
    return max(when.timestamp() - (time.time() if now is None else now), 0.0)


class HttpClient:
    """GET requests to one :class:`Service` under a :class:`RetryPolicy`. ``sleep`` and
    ``jitter`` (a uniform draw in [0, 1)) are parameters so that tests see the waits."""

    def __init__(self, service: Service, policy: RetryPolicy = RetryPolicy(), *,
                 environ: Mapping[str, str] = os.environ, sleep: Callable[[float], None] = time.sleep,
                 jitter: Callable[[], float] = random.random, transport: httpx.BaseTransport | None = None):
        self.service, self.policy = service, policy
        self.base_url = service.base_url(environ)
        self._sleep, self._jitter = sleep, jitter
        self._client = httpx.Client(timeout=policy.timeout_s, transport=transport, follow_redirects=True,
                                    headers={"User-Agent": "predictive-optimization-der"})
        self.waits: list[float] = []

    def close(self) -> None:
        self._client.close()

    def __enter__(self) -> HttpClient:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def url(self, path: str) -> str:
        return path if path.startswith(("http://", "https://")) else f"{self.base_url}/{path.lstrip('/')}"

    def get(self, path: str, params: Mapping[str, Any] | None = None,
            headers: Mapping[str, str] | None = None) -> httpx.Response:
        """The response to ``GET path``, retried as the module says; raises a SourceError."""
        url = self.url(path)
        problem = ""
        for attempt in range(self.policy.attempts):
            try:
                response = self._client.get(url, params=params, headers=headers)
            except httpx.TimeoutException:
                problem, wait = f"no answer within {self.policy.timeout_s:g} s", None
            except httpx.HTTPError as error:
                problem, wait = f"cannot connect ({type(error).__name__})", None
            else:
                if response.status_code < 400:
                    return response
                if response.status_code not in RETRIED_STATUS:
                    raise SourceRefused(f"{self.service.name} refused {redact(self._shown(url))}: "
                                        f"HTTP {response.status_code} {_excerpt(response)}")
                problem, wait = f"HTTP {response.status_code}", retry_after_s(response)
            if attempt + 1 == self.policy.attempts:
                break
            if wait is None:
                wait = self._jitter() * min(self.policy.max_backoff_s, self.policy.backoff_s * 2**attempt)
            elif wait > self.policy.max_wait_s:
                raise SourceUnavailable(f"{self.service.name} asks to wait {wait:.0f} s (Retry-After), longer "
                                        f"than {self.policy.max_wait_s:.0f} s; planning goes on with stored data")
            self.waits.append(wait)
            self._sleep(wait)
        raise SourceUnavailable(f"{self.service.name} at {redact(self._shown(url))}: {problem} after "
                                f"{self.policy.attempts} attempt(s)")

    def json(self, path: str, params: Mapping[str, Any] | None = None,
             headers: Mapping[str, str] | None = None) -> Any:
        """The JSON body of ``GET path``; MalformedResponse if the body is not JSON."""
        response = self.get(path, params, headers)
        try:
            return response.json()
        except ValueError:
            raise MalformedResponse(f"{self.service.name}: the answer to {redact(self._shown(self.url(path)))} "
                                    f"is not JSON ({_excerpt(response)})") from None
        except RecursionError:  # no service's answer is nested thousands deep; the reader's stack ends first
            raise MalformedResponse(f"{self.service.name}: the answer to {redact(self._shown(self.url(path)))} "
                                    "is JSON nested too deeply to read; expected the service's documented shape") from None

    def text(self, path: str, params: Mapping[str, Any] | None = None,
             headers: Mapping[str, str] | None = None) -> str:
        return self.get(path, params, headers).text

    @staticmethod
    def _shown(url: str) -> str:
        return url.split("?", 1)[0]


def _excerpt(response: httpx.Response, length: int = 120) -> str:
    body = " ".join(response.text.split())
    return redact(body[:length] + ("…" if len(body) > length else ""))


def field(payload: Any, path: str, service: str) -> Any:
    """``payload`` followed along ``path`` (keys and list indexes joined by dots, e.g.
    ``hourly.time`` or ``results.0.value_inc_vat``); MalformedResponse naming the service
    and the missing field otherwise."""
    value = payload
    for part in path.split("."):
        try:
            value = value[int(part)] if isinstance(value, list) else value[part]
        except (KeyError, IndexError, TypeError, ValueError):
            raise MalformedResponse(f"{service}: the response has no field {path!r} "
                                    f"(expected as the service documents it)") from None
    return value
