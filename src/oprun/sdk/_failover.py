"""Several API URLs: which one each call goes to, and which to leave alone for a while.

A client (the SDK's and the worker's) may be given several URLs of one oprun
deployment, ``OPRUN_URL=http://api1:8710,http://api2:8711``, and a URL's host may be a
DNS name with several addresses. Each URL, or each address of such a name, is an
`Endpoint`. `Endpoints` hands calls to them in turn from a random start (so that
many clients spread their load), and after a connection failure or a 503 leaves that
endpoint aside for a cool-down that doubles with each failure in a row (1 s, 2 s, ...
up to 30 s) while calls go to the others. When every endpoint is cooling down, the
one that recovers first is tried: a client never refuses to try.

Selection is pure (the clock is injected). `resolve` and `aresolve` are this module's
only I/O: they look up a name's addresses (``getaddrinfo``), and a name with several
becomes one endpoint per address, reached by address with the name kept in the
``Host`` header and in TLS's server name (SNI), which the certificate is checked
against.
"""

from __future__ import annotations

import asyncio
import ipaddress
import random
import socket
import time
import urllib.request
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import httpx

COOL_DOWN = 1.0
"""Seconds an endpoint is left alone after a failure; doubled for each next one in a row."""
MAX_COOL_DOWN = 30.0
"""The longest cool-down: a dead endpoint is tried again at least this often."""
CONNECT_TIMEOUT = 5.0
"""The longest wait for a connection when another endpoint could take the call instead."""
LOOKUP_EVERY = 30.0
"""Seconds after which a DNS name's addresses are looked up again."""
LOOKUP_WHEN_ALL_DOWN = 2.0
"""Seconds after which a name whose every address fails is looked up again."""


def split_urls(urls: str | Iterable[str]) -> tuple[str, ...]:
    """URLs from a comma-separated string or a list, stripped of spaces and trailing ``/``.

    Empty items are dropped and repeats are kept once, in order.
    """
    items = urls.split(",") if isinstance(urls, str) else [p for u in urls for p in u.split(",")]
    cleaned = (item.strip().rstrip("/") for item in items)
    return tuple(dict.fromkeys(item for item in cleaned if item))


def not_sent(outcome: httpx.Response | Exception) -> bool:
    """Whether the request surely never reached a server (no connection was made)."""
    return isinstance(outcome, httpx.ConnectError | httpx.ConnectTimeout)


def endpoint_failed(outcome: httpx.Response | Exception) -> bool:
    """Whether `outcome` says the endpoint, not the call, is in trouble: skip it a while.

    A connection that could not be made or broke, and a 503, are; a pool timeout (this
    client is busy) and every other answer are not.
    """
    if isinstance(outcome, httpx.Response):
        return outcome.status_code == 503
    return isinstance(outcome, httpx.TransportError) and not isinstance(outcome, httpx.PoolTimeout)


@dataclass(eq=False)
class Endpoint:
    """Where one call is sent: a configured URL, or one address of its DNS name."""

    url: str
    """The base URL requests go to (the configured one, or with an address as its host)."""
    origin: str
    """The configured URL this endpoint stands for."""
    address: str | None = None
    """The address the name of `origin` was resolved to, when it was."""
    failures: int = 0
    down_until: float = 0.0

    @property
    def label(self) -> str:
        """The endpoint for a message: its URL, and the address when it is one of a name's."""
        return self.origin if self.address is None else f"{self.origin} ({self.address})"

    def join(self, path: str) -> str:
        """The full URL of `path` (``/v1/...``) at this endpoint."""
        return self.url + path

    @property
    def headers(self) -> dict[str, str]:
        """Headers a request needs here: the name as ``Host`` when sent to an address."""
        if self.address is None:
            return {}
        return {"Host": httpx.URL(self.origin).netloc.decode("ascii")}

    @property
    def extensions(self) -> dict[str, Any]:
        """Request extensions for httpcore: the name for TLS (SNI, certificate check)."""
        if self.address is None:
            return {}
        parsed = httpx.URL(self.origin)
        return {"sni_hostname": parsed.host} if parsed.scheme == "https" else {}


class Endpoints:
    """The endpoints of a client's URLs: in turn, skipping those that failed lately.

    Args:
        urls: the configured base URLs (see `split_urls`); at least one.
        lookup: whether DNS names are to be resolved to all their addresses (see
            `lookups_due`); a client does so only over its own default transport and
            when no proxy is configured in the environment.
        clock: seconds, monotonic (tests pass their own).
        start: the first endpoint's index; random when None.

    A client shared by several threads may skew the turn order a little; nothing
    worse.
    """

    def __init__(
        self,
        urls: Sequence[str],
        *,
        lookup: bool = False,
        clock: Callable[[], float] = time.monotonic,
        start: int | None = None,
    ) -> None:
        if not urls:
            raise ValueError("at least one URL is needed")
        self.urls = tuple(urls)
        self._clock = clock
        self._by_url = {url: [Endpoint(url, url)] for url in self.urls}
        self._endpoints = [e for url in self.urls for e in self._by_url[url]]
        self._next = random.randrange(len(self.urls)) if start is None else start
        self._looked_up: dict[str, float] = {}
        self._names = [url for url in self.urls if lookup and _has_name(url)]

    @property
    def all(self) -> list[Endpoint]:
        """Every endpoint, URL after URL, each URL's addresses in the resolver's order."""
        return self._endpoints

    @property
    def several(self) -> bool:
        """Whether a failing call can go elsewhere: several URLs, or a name with several addresses."""
        return len(self._endpoints) > 1

    def pick(self) -> Endpoint:
        """The endpoint for the next attempt: the next one in turn that is not cooling down.

        When all are cooling down, the one whose cool-down ends first.
        """
        now = self._clock()
        endpoints = self._endpoints
        count = len(endpoints)
        for step in range(count):
            index = (self._next + step) % count
            if endpoints[index].down_until <= now:
                self._next = index + 1
                return endpoints[index]
        return min(endpoints, key=lambda e: e.down_until)

    def others_up(self, endpoint: Endpoint) -> bool:
        """Whether an endpoint other than `endpoint` is not cooling down."""
        now = self._clock()
        return any(e is not endpoint and e.down_until <= now for e in self._endpoints)

    def elsewhere(self, endpoint: Endpoint, outcome: httpx.Response | Exception) -> bool:
        """Whether the retry of a call that got `outcome` at `endpoint` can go elsewhere at once.

        So it can when the endpoint failed (`endpoint_failed`: a 429 or a 500 is the
        call's, not the endpoint's) and another endpoint is up.
        """
        return endpoint_failed(outcome) and self.others_up(endpoint)

    def observe(self, endpoint: Endpoint, outcome: httpx.Response | Exception) -> None:
        """Record how a call to `endpoint` went (see `endpoint_failed`)."""
        if endpoint_failed(outcome):
            endpoint.failures += 1
            cool = min(MAX_COOL_DOWN, COOL_DOWN * 2 ** min(endpoint.failures - 1, 16))
            endpoint.down_until = self._clock() + cool
        elif isinstance(outcome, httpx.Response):
            endpoint.failures = 0
            endpoint.down_until = 0.0

    # -- DNS names with several addresses -------------------------------------------------
    def lookups_due(self) -> list[tuple[str, str, int]]:
        """The URLs whose name is to be looked up now: ``(url, host, port)`` each.

        A name is looked up before its first use, then every `LOOKUP_EVERY` seconds,
        and sooner (`LOOKUP_WHEN_ALL_DOWN`) while every one of its addresses fails.
        """
        now = self._clock()
        due = []
        for url in self._names:
            last = self._looked_up.get(url)
            down = all(e.down_until > now for e in self._by_url[url])
            if (
                last is None
                or now - last >= LOOKUP_EVERY
                or (down and now - last >= LOOKUP_WHEN_ALL_DOWN)
            ):
                parsed = httpx.URL(url)
                port = parsed.port or (443 if parsed.scheme == "https" else 80)
                due.append((url, parsed.host, port))
        return due

    def resolved(self, url: str, addresses: Sequence[str]) -> None:
        """Take the addresses a lookup of `url`'s name found (none: it failed).

        A name with several addresses gets one endpoint per address, each keeping its
        failures across lookups; with one, the URL is used as it is; a failed lookup
        keeps what was known.
        """
        self._looked_up[url] = self._clock()
        if not addresses:
            return
        known = {e.address: e for e in self._by_url[url]}
        if len(addresses) == 1:
            endpoints = [known.get(None) or Endpoint(url, url)]
        else:
            template = httpx.URL(url)
            endpoints = [
                known.get(address)
                or Endpoint(str(template.copy_with(host=address)).rstrip("/"), url, address)
                for address in addresses
            ]
        self._by_url[url] = endpoints
        self._endpoints = [e for u in self.urls for e in self._by_url[u]]


def _has_name(url: str) -> bool:
    host = httpx.URL(url).host
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return bool(host)
    return False


def proxied() -> bool:
    """Whether the environment routes HTTP through a proxy (then the proxy resolves names)."""
    found = urllib.request.getproxies()
    return any(found.get(scheme) for scheme in ("http", "https", "all"))


def _addresses(found: Iterable[tuple[Any, ...]]) -> list[str]:
    # sockaddr[0] is the address; link-local IPv6 with a zone cannot go in a URL.
    return list(dict.fromkeys(str(info[4][0]) for info in found if "%" not in str(info[4][0])))


def resolve(host: str, port: int) -> list[str]:
    """Every address of `host` (empty when the lookup fails)."""
    try:
        return _addresses(socket.getaddrinfo(host, port, type=socket.SOCK_STREAM))
    except OSError:
        return []


async def aresolve(host: str, port: int) -> list[str]:
    """Every address of `host` (empty when the lookup fails), without blocking the loop."""
    try:
        loop = asyncio.get_running_loop()
        return _addresses(await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM))
    except OSError:
        return []
