"""The outside-service client: base URLs from DER_<SERVICE>_URL, keys from the environment and
never shown, retries with backoff, Retry-After, refusals and malformed bodies as one line."""

from __future__ import annotations

import email.utils
import time

import pytest

from cloud.live.http import (
    HttpClient, MalformedResponse, RetryPolicy, Service, SourceRefused, SourceUnavailable, field, retry_after_s,
)
from der_core.errors import ConfigError
from der_core.redact import redact
from tests.fakes.http_service import FakeService, Reply

SERVICE = Service("Example prices", "EXAMPLE", "https://api.example.invalid/v1", key_variable="EXAMPLE_API_KEY")
FAST = RetryPolicy(attempts=4, timeout_s=2.0, backoff_s=1.0, max_backoff_s=8.0, max_wait_s=60.0)


@pytest.fixture
def service():
    with FakeService() as fake:
        yield fake


def client(fake: FakeService, waits: list[float], policy: RetryPolicy = FAST) -> HttpClient:
    return HttpClient(SERVICE, policy, environ={"DER_EXAMPLE_URL": fake.url + "/"}, sleep=waits.append,
                      jitter=lambda: 0.5)


def test_base_url_is_overridden_by_its_variable_and_defaults_to_the_documented_one():
    assert SERVICE.base_url({}) == "https://api.example.invalid/v1"
    assert SERVICE.base_url({"DER_EXAMPLE_URL": "http://127.0.0.1:9/x/"}) == "http://127.0.0.1:9/x"
    assert SERVICE.url_variable == "DER_EXAMPLE_URL"


def test_a_missing_key_names_its_variable_and_a_given_one_is_masked_from_then_on():
    with pytest.raises(ConfigError, match="set EXAMPLE_API_KEY"):
        SERVICE.key({})
    key = "s3cr3t-key-of-the-example-service"
    assert SERVICE.key({"EXAMPLE_API_KEY": key}) == key
    assert key not in redact(f"GET /prices failed for {key}")


def test_server_errors_are_retried_with_growing_jittered_waits_then_succeed(service):
    service.route("/prices", Reply(503), Reply(502), Reply(200, {"ok": True}))
    waits: list[float] = []
    assert client(service, waits).json("prices") == {"ok": True}
    assert waits == [0.5, 1.0] and len(service.requests) == 3


def test_retry_after_is_waited_out_in_seconds_or_as_a_date(service):
    later = email.utils.formatdate(time.time() + 30, usegmt=True)
    service.route("/prices", Reply(429, headers={"Retry-After": "7"}), Reply(429, headers={"Retry-After": later}),
                  Reply(200, {"ok": True}))
    waits: list[float] = []
    client(service, waits).json("prices")
    assert waits[0] == 7.0 and 25.0 < waits[1] <= 31.0


def test_a_retry_after_longer_than_the_policy_allows_gives_up_at_once(service):
    service.route("/prices", Reply(429, headers={"Retry-After": "3600"}))
    waits: list[float] = []
    with pytest.raises(SourceUnavailable, match="asks to wait 3600 s"):
        client(service, waits).json("prices")
    assert waits == [] and len(service.requests) == 1


def test_a_service_that_keeps_failing_is_unavailable_after_every_attempt(service):
    service.route("/prices", Reply(500))
    waits: list[float] = []
    with pytest.raises(SourceUnavailable, match=r"Example prices at .*/prices: HTTP 500 after 4 attempt"):
        client(service, waits).json("prices", {"securityToken": "abcdef123456"})
    assert len(service.requests) == 4 and waits == [0.5, 1.0, 2.0]


def test_a_refusal_is_not_retried_and_shows_no_key(service):
    key = "refused-key-0123456789"
    service.route("/prices", Reply(401, f"invalid token {key}"))
    with pytest.raises(SourceRefused) as caught:
        HttpClient(SERVICE, FAST, environ={"DER_EXAMPLE_URL": service.url, "EXAMPLE_API_KEY": key},
                   sleep=lambda s: None).json("prices", {"token": SERVICE.key({"EXAMPLE_API_KEY": key})})
    assert "HTTP 401" in str(caught.value) and key not in str(caught.value) and len(service.requests) == 1


def test_nothing_listening_is_unavailable_not_a_traceback():
    with FakeService() as fake:
        url = fake.url
    waits: list[float] = []
    with pytest.raises(SourceUnavailable, match="cannot connect"):
        HttpClient(SERVICE, FAST, environ={"DER_EXAMPLE_URL": url}, sleep=waits.append, jitter=lambda: 0.0).get("x")
    assert len(waits) == FAST.attempts - 1


def test_a_body_that_is_not_json_is_malformed_naming_the_service(service):
    service.route("/prices", Reply(200, "<html>maintenance</html>", content_type="text/html"))
    with pytest.raises(MalformedResponse, match="Example prices: the answer to .* is not JSON"):
        client(service, []).json("prices")


def test_a_body_nested_beyond_any_service_is_malformed_not_a_recursion_traceback(service):
    service.route("/prices", Reply(200, "[" * 100_000 + "]" * 100_000, content_type="application/json"))
    with pytest.raises(MalformedResponse, match="Example prices: the answer to .* is JSON nested too deeply to read"):
        client(service, []).json("prices")


def test_field_follows_keys_and_indexes_and_names_what_is_missing():
    payload = {"hourly": {"time": ["2026-01-01T00:00"], "rows": [{"v": 1.5}]}}
    assert field(payload, "hourly.rows.0.v", "Open-Meteo") == 1.5
    with pytest.raises(MalformedResponse, match="Open-Meteo: the response has no field 'hourly.ghi'"):
        field(payload, "hourly.ghi", "Open-Meteo")


def test_retry_after_without_a_usable_header_is_none():
    import httpx
    assert retry_after_s(httpx.Response(429)) is None
    assert retry_after_s(httpx.Response(429, headers={"Retry-After": "soon"})) is None


def test_x_ratelimit_retry_at_stands_in_for_a_missing_retry_after():
    import httpx
    now = time.time()
    later = email.utils.formatdate(now + 90, usegmt=True)
    iso = time.strftime("%Y-%m-%dT%H:%M:%S+00:00", time.gmtime(now + 600))
    assert 595.0 <= retry_after_s(httpx.Response(429, headers={"X-Ratelimit-Retry-At": iso}), now) <= 600.0
    assert retry_after_s(httpx.Response(429, headers={"Retry-After": later, "X-Ratelimit-Retry-At": iso}), now) < 100
    assert retry_after_s(httpx.Response(429, headers={"X-Ratelimit-Retry-At": "2026-01-01T10:00:00"}), now) is None
