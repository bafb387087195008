"""Several API URLs: calls spread over them, fail over from a dead one, and a deadline budget."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from collections import Counter
from typing import Any

import httpx
import pytest

from oprun import ServerError, Unavailable, ValidationError
from oprun.domain.protocol import Heartbeat, HeartbeatResponse
from oprun.sdk import AsyncClient, Client, HttpRetry, _failover
from oprun.sdk import _endpoints as E
from oprun.sdk._config import resolve as resolve_connection
from oprun.sdk._config import save_profile
from oprun.sdk._failover import Endpoints, split_urls
from oprun.sdk._requests import ConnectionSettings
from oprun.worker.client import WorkerClient, redact_url

from ._sdk_stub import TOKEN, error, ok, op_json
from .test_sdk_events import event, stream

A, B = "http://a.test", "http://b.test"
OP = "/v1/operations/op_1"


class Clock:
    """A clock that moves only when told."""

    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


class Hosts:
    """A transport handler answering by host: an exception is raised, a response returned."""

    def __init__(self, **answers: Any) -> None:
        self.answers = {f"{host}.test": answer for host, answer in answers.items()}
        self.requests: list[httpx.Request] = []
        self.sleeps: list[float] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        answer = self.answers.get(request.url.host, ok(op_json()))
        if callable(answer) and not isinstance(answer, httpx.Response):
            answer = answer(request)
        if isinstance(answer, Exception):
            raise answer
        return answer

    def hosts(self) -> list[str]:
        return [r.url.host.removesuffix(".test") for r in self.requests]

    def client(self, urls: Any = (A, B), start: int = 0, **kwargs: Any) -> Client:
        client = Client(urls, TOKEN, transport=httpx.MockTransport(self), **kwargs)
        client._endpoints = Endpoints(client._settings.urls, start=start)
        client._sleep = self.sleeps.append
        return client

    def async_client(self, urls: Any = (A, B), start: int = 0, **kwargs: Any) -> AsyncClient:
        client = AsyncClient(urls, TOKEN, transport=httpx.MockTransport(self), **kwargs)
        client._endpoints = Endpoints(client._settings.urls, start=start)

        async def sleep(seconds: float) -> None:
            self.sleeps.append(seconds)

        client._sleep = sleep
        return client


# -- the URLs ---------------------------------------------------------------------------
def test_urls_come_as_a_comma_separated_string_or_a_list():
    assert split_urls(" http://a/ ,http://b,, http://a") == ("http://a", "http://b")
    assert split_urls(["http://a", "http://b/,http://c"]) == ("http://a", "http://b", "http://c")
    assert ConnectionSettings.resolve(f"{A}, {B}/", None, None).urls == (A, B)
    assert Client([A, B]).url == f"{A},{B}"
    with pytest.raises(ValidationError, match=r"got 'b\.test'"):
        ConnectionSettings.resolve(f"{A},b.test", None, None)
    with pytest.raises(ValidationError, match="http:// or https://"):
        ConnectionSettings.resolve(" , ", None, None)


def test_oprun_url_may_name_several_servers(monkeypatch):
    monkeypatch.setenv("OPRUN_URL", f"{A},{B}")
    monkeypatch.setenv("OPRUN_TOKEN", "tok-env")
    with Client() as client:
        assert client._settings.urls == (A, B) and client._settings.token == "tok-env"


def test_a_profile_token_goes_only_to_the_profiles_own_urls(tmp_path, monkeypatch):
    monkeypatch.delenv("OPRUN_URL", raising=False)
    monkeypatch.delenv("OPRUN_TOKEN", raising=False)
    path = save_profile("default", [A, B], "tok-ab", tmp_path / "config.toml")
    assert 'url = "http://a.test,http://b.test"' in path.read_text()
    assert resolve_connection(path=path).url == f"{A},{B}"
    assert resolve_connection(B, path=path).token == "tok-ab"  # one of its own
    assert resolve_connection([B, A], path=path).token == "tok-ab"
    assert resolve_connection(f"{A},http://c.test", path=path).token is None
    path.write_text(f'[default]\nurl = ["{A}", "{B}"]\ntoken = "tok-ab"\n')  # a TOML list
    assert resolve_connection(path=path).url == f"{A},{B}"
    assert resolve_connection(A, path=path).token == "tok-ab"


# -- selection --------------------------------------------------------------------------
def test_endpoints_take_turns_from_a_start_and_skip_one_that_failed_lately():
    clock = Clock()
    endpoints = Endpoints(["http://a", "http://b", "http://c"], clock=clock, start=1)
    assert [endpoints.pick().url for _ in range(4)] == [
        "http://b",
        "http://c",
        "http://a",
        "http://b",
    ]
    b = endpoints.all[1]
    endpoints.observe(b, httpx.ConnectError("refused"))
    assert [endpoints.pick().url for _ in range(4)] == ["http://c", "http://a"] * 2
    clock.now += _failover.COOL_DOWN
    assert "http://b" in {endpoints.pick().url for _ in range(3)}
    endpoints.observe(b, httpx.ConnectError("refused"))  # a second failure in a row: longer
    assert b.down_until == clock.now + 2 * _failover.COOL_DOWN
    endpoints.observe(b, httpx.Response(404))  # any answer but a 503 means it is up
    assert b.failures == 0 and b.down_until == 0


def test_when_every_endpoint_cools_down_the_first_to_recover_is_tried():
    clock = Clock()
    endpoints = Endpoints(["http://a", "http://b"], clock=clock, start=0)
    a, b = endpoints.all
    for _ in range(3):
        endpoints.observe(a, httpx.Response(503))
    endpoints.observe(b, httpx.ReadError("reset"))
    assert endpoints.pick() is b and not endpoints.others_up(a)
    for _ in range(20):
        endpoints.observe(b, httpx.ConnectError("refused"))
    assert b.down_until == clock.now + _failover.MAX_COOL_DOWN
    assert endpoints.pick() is a


def test_only_a_broken_connection_or_a_503_sets_an_endpoint_aside():
    assert _failover.endpoint_failed(httpx.ConnectError("refused"))
    assert _failover.endpoint_failed(httpx.RemoteProtocolError("server disconnected"))
    assert _failover.endpoint_failed(httpx.Response(503))
    assert not _failover.endpoint_failed(httpx.PoolTimeout("busy here"))
    assert not _failover.endpoint_failed(httpx.Response(429))
    assert not _failover.endpoint_failed(httpx.Response(500))
    assert _failover.not_sent(httpx.ConnectTimeout("slow"))
    assert not _failover.not_sent(httpx.ReadError("reset"))


# -- the SDK ----------------------------------------------------------------------------
def test_calls_are_spread_over_every_url():
    hosts = Hosts()
    client = hosts.client()
    for _ in range(4):
        client.operations.get("op_1")
    assert Counter(hosts.hosts()) == {"a": 2, "b": 2}


def test_a_refused_connection_fails_over_at_once_even_for_a_call_not_safe_to_repeat():
    hosts = Hosts(a=httpx.ConnectError("refused"))
    client = hosts.client()
    assert client.operations.cancel("op_1").id == "op_1"  # POST :cancel, never retried
    assert hosts.hosts() == ["a", "b"] and hosts.sleeps == []
    client.operations.get("op_1")
    client.operations.get("op_1")
    assert hosts.hosts()[2:] == ["b", "b"]  # a is left alone while it cools down


def test_a_call_not_safe_to_repeat_that_may_have_arrived_is_not_sent_again():
    hosts = Hosts(a=httpx.ReadError("connection reset"), b=error("UNAVAILABLE", 503))
    with pytest.raises(Unavailable, match=r"cannot reach oprun at http://a\.test"):
        hosts.client().operations.cancel("op_1")
    assert hosts.hosts() == ["a"]
    with pytest.raises(Unavailable):
        hosts.client(start=1).operations.cancel("op_1")
    assert hosts.hosts() == ["a", "b"]


def test_a_503_is_retried_on_the_other_url_without_waiting():
    hosts = Hosts(a=error("UNAVAILABLE", 503))
    invoked = Hosts(a=httpx.RemoteProtocolError("server disconnected"))
    assert hosts.client().operations.get("op_1").id == "op_1"
    assert invoked.client().operations.invoke("resize", idempotency_key="k1").id == "op_1"
    for seen in (hosts, invoked):
        assert seen.hosts() == ["a", "b"] and seen.sleeps == []
    keys = {r.content for r in invoked.requests}
    assert len(keys) == 1  # the same body, so the same idempotency key


def test_a_throttled_call_waits_its_retry_after_on_the_same_terms():
    throttled = error("THROTTLED", 429)
    throttled.headers["Retry-After"] = "2"
    answers = iter([throttled, ok(op_json())])
    hosts = Hosts(a=lambda request: next(answers))
    hosts.client(urls=A).operations.get("op_1")
    assert hosts.sleeps == [2.0]


def test_when_every_url_fails_the_client_backs_off_until_its_budget_is_spent():
    hosts = Hosts(a=httpx.ConnectError("refused"), b=error("UNAVAILABLE", 503))
    with pytest.raises(Unavailable):
        hosts.client(retry=HttpRetry(budget=10)).operations.get("op_1")
    assert 9 <= sum(hosts.sleeps) <= 10 + 1e-9
    assert max(hosts.sleeps) <= HttpRetry().max_outage_backoff
    assert set(hosts.hosts()) == {"a", "b"}


def test_by_default_a_call_safe_to_repeat_rides_out_thirty_seconds_of_outage():
    hosts = Hosts(a=httpx.ConnectError("refused"))
    with pytest.raises(Unavailable):
        hosts.client(urls=A).operations.get("op_1")
    assert HttpRetry().budget == 30 and HttpRetry().retries is None
    assert 29 <= sum(hosts.sleeps) <= 30 + 1e-9

    def restarting(request: httpx.Request) -> httpx.Response | Exception:
        return httpx.ConnectError("down") if len(restarted.requests) < 12 else ok(op_json())

    restarted = Hosts(a=restarting)  # back after 11 refusals, some 15 s of backoff
    assert restarted.client(urls=A).operations.invoke("resize", idempotency_key="k").id == "op_1"
    assert len(restarted.requests) == 12 and sum(restarted.sleeps) > 10


def test_a_retry_count_still_counts_when_set():
    hosts = Hosts(a=error("UNAVAILABLE", 503), b=error("UNAVAILABLE", 503))
    with pytest.raises(Unavailable):
        hosts.client(retries=2).operations.get("op_1")
    assert len(hosts.requests) == 3
    with pytest.raises(ValueError, match="budget"):
        HttpRetry(budget=-1)


def test_async_client_fails_over_by_the_same_rules():
    hosts = Hosts(a=httpx.ConnectError("refused"))

    async def scenario() -> list[str]:
        async with hosts.async_client() as client:
            await client.operations.cancel("op_1")
            await client.operations.get("op_1")
            return [r.url.host for r in hosts.requests]

    assert asyncio.run(scenario()) == ["a.test", "b.test", "b.test"]
    assert hosts.sleeps == []


def test_an_event_stream_moves_to_the_other_url_when_its_server_dies():
    answers = iter([stream(event(1)), httpx.ReadError("gone")])
    hosts = Hosts(a=lambda request: next(answers), b=stream(event(2)))
    client = hosts.client(start=0)
    client._endpoints = Endpoints(client._settings.urls, start=0)
    with contextlib.closing(client.events.stream()) as events:
        assert [e.id for e in itertools.islice(events, 2)] == [1, 2]
    assert hosts.hosts()[:2] == ["a", "b"]
    assert hosts.requests[1].headers["last-event-id"] == "1"


# -- DNS names with several addresses ---------------------------------------------------
def test_a_name_with_several_addresses_is_one_endpoint_per_address(monkeypatch):
    clock = Clock()
    endpoints = Endpoints(["https://api.test:8443"], lookup=True, clock=clock)
    assert not endpoints.several  # one URL, its name not looked up yet
    endpoints.resolved("https://api.test:8443", ["10.0.0.1", "fd00::2"])
    assert endpoints.several
    endpoints = Endpoints(
        ["https://api.test:8443", "http://10.0.0.9:8710"], lookup=True, clock=clock
    )
    assert endpoints.lookups_due() == [("https://api.test:8443", "api.test", 8443)]
    endpoints.resolved("https://api.test:8443", ["10.0.0.1", "fd00::2"])
    assert [e.url for e in endpoints.all] == [
        "https://10.0.0.1:8443",
        "https://[fd00::2]:8443",
        "http://10.0.0.9:8710",
    ]
    first = endpoints.all[0]
    assert first.headers == {"Host": "api.test:8443"}
    assert first.extensions == {"sni_hostname": "api.test"}
    assert first.label == "https://api.test:8443 (10.0.0.1)"
    assert endpoints.all[2].headers == {} and endpoints.all[2].extensions == {}
    assert endpoints.lookups_due() == []
    endpoints.observe(first, httpx.ConnectError("refused"))
    endpoints.resolved("https://api.test:8443", [])  # a failed lookup keeps what was known
    assert endpoints.all[0] is first
    clock.now += _failover.LOOKUP_EVERY
    assert len(endpoints.lookups_due()) == 1
    endpoints.resolved("https://api.test:8443", ["10.0.0.1"])
    assert [e.url for e in endpoints.all] == ["https://api.test:8443", "http://10.0.0.9:8710"]


def test_a_client_sends_to_each_address_with_the_name_as_host(monkeypatch):
    hosts = Hosts()
    client = Client("http://api.test:8710", TOKEN, transport=httpx.MockTransport(hosts))
    assert client._endpoints.lookups_due() == []  # a transport of its own: no lookups
    client._endpoints = Endpoints(client._settings.urls, lookup=True, start=0)
    looked_up: list[tuple[str, int]] = []

    def fake_resolve(host: str, port: int) -> list[str]:
        looked_up.append((host, port))
        return ["127.0.0.7", "127.0.0.8"]

    monkeypatch.setattr("oprun.sdk.client.resolve", fake_resolve)
    client.operations.get("op_1")
    client.operations.get("op_1")
    assert looked_up == [("api.test", 8710)]
    assert [str(r.url) for r in hosts.requests] == [
        f"http://127.0.0.7:8710{OP}",
        f"http://127.0.0.8:8710{OP}",
    ]
    assert {r.headers["host"] for r in hosts.requests} == {"api.test:8710"}


def test_names_are_looked_up_only_without_a_proxy_or_a_transport(monkeypatch):
    for name in ("http_proxy", "https_proxy", "all_proxy", "HTTP_PROXY", "HTTPS_PROXY"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.delenv("ALL_PROXY", raising=False)
    assert Client("http://api.test:8710")._endpoints.lookups_due() != []
    assert Client("http://127.0.0.1:8710")._endpoints.lookups_due() == []  # an address
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.test:3128")
    assert Client("http://api.test:8710")._endpoints.lookups_due() == []
    assert "127.0.0.1" in _failover.resolve("localhost", 80)
    assert _failover.resolve("no-such-host.invalid", 80) == []


# -- the worker -------------------------------------------------------------------------
def test_the_worker_client_fails_over_to_the_next_url_at_once():
    hosts = Hosts(
        a=httpx.ConnectError("refused"),
        b=ok(HeartbeatResponse(lease_seconds=30).model_dump(mode="json")),
    )
    client = WorkerClient(f"{A},{B}", TOKEN, transport=httpx.MockTransport(hosts))
    client._endpoints = Endpoints((A, B), start=0)
    assert client.url == f"{A},{B}"

    async def scenario() -> None:
        for _ in range(2):
            answer = await client.heartbeat("wk_1", Heartbeat(), 0.0)
            assert answer.lease_seconds == 30
        await client.aclose()

    asyncio.run(scenario())
    assert hosts.hosts() == ["a", "b", "b"]
    assert hosts.requests[0].headers["authorization"] == f"Bearer {TOKEN}"
    assert redact_url("http://u:p@a.test,http://b.test") == "http://a.test,http://b.test"


def test_the_worker_client_backs_off_when_the_error_is_the_calls_not_the_urls(monkeypatch):
    hosts = Hosts(a=error("INTERNAL", 500), b=error("INTERNAL", 500))
    delays: list[int] = []
    monkeypatch.setattr(
        "oprun.worker.client._delay", lambda attempt, error: delays.append(attempt) or 0.0
    )
    client = WorkerClient([A, B], TOKEN, transport=httpx.MockTransport(hosts), max_attempts=3)

    async def scenario() -> None:
        try:
            await client.heartbeat("wk_1", Heartbeat(), 0.0)
        finally:
            await client.aclose()

    with pytest.raises(ServerError):
        asyncio.run(scenario())
    assert len(hosts.requests) == 3 and delays == [1, 2]  # a 500 is no reason to hurry


def test_with_several_urls_connecting_gives_up_sooner():
    settings = ConnectionSettings.resolve(A, None, 60)
    call = E.get_operation("op_1")
    assert settings.timeout_for(call).connect == 60
    assert settings.timeout_for(call, failover=True).connect == _failover.CONNECT_TIMEOUT
    assert settings.timeout_for(call, failover=True).read == 60
