"""`WorkerClient`: the worker's HTTP calls to the API, retried through server restarts.

Connection errors, 5xx and 429 are retried with exponential backoff and jitter
(429 honours `Retry-After`) until the call succeeds or is cancelled; any
other error is raised as the typed `oprun.domain.errors` class. The token is
sent in the `Authorization` header only and never logged.

Given several API URLs (``OPRUN_URL=http://api1:8710,http://api2:8711``), or a DNS
name with several addresses, the client spreads its calls over them and, after a
failure, sends the retry at once to another that is up, leaving the failed one alone
for a while: the same endpoint selection as the SDK's (`oprun.sdk._failover`).
"""

from __future__ import annotations

import asyncio
import copy
import json
import logging
import random
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import httpx

from oprun._version import __version__
from oprun.domain.backoff import backoff
from oprun.domain.errors import OprunError, ServerError, Throttled, Unavailable, error_from_body
from oprun.domain.models import ActionDefinition, Worker
from oprun.domain.protocol import (
    ClaimRequest,
    ClaimResponse,
    Heartbeat,
    HeartbeatResponse,
    ReportBatchResponse,
    WorkerRegistration,
)
from oprun.sdk._failover import (
    CONNECT_TIMEOUT,
    Endpoint,
    Endpoints,
    aresolve,
    not_sent,
    proxied,
    split_urls,
)
from oprun.worker._http import LeanTransport

log = logging.getLogger("oprun.worker.client")

T = TypeVar("T")

MAX_ACTIONS_KEPT = 256
"""How many action definitions a worker keeps validated, to reuse for the claims that repeat them."""

BACKOFF_FIRST = 0.25
BACKOFF_MAX = 10.0
REQUEST_TIMEOUT = 30.0
"""For calls that do not long-poll; a long poll gets its wait on top."""


def redact_url(url: str) -> str:
    """`url` (one or several, comma-separated) without user info, fit for a log line."""
    parts = []
    for one in split_urls(url):
        parsed = httpx.URL(one)
        parts.append(
            str(parsed.copy_with(username=None, password=None)) if parsed.userinfo else one
        )
    return ",".join(parts)


class WorkerClient:
    """Register, claim, heartbeat and report over HTTP."""

    def __init__(
        self,
        url: str | Sequence[str],
        token: str,
        *,
        transport: httpx.AsyncBaseTransport | None = None,
        max_attempts: int | None = None,
    ) -> None:
        """A client of the API at `url` using `token`.

        Args:
            url: the server's base URL, e.g. `http://127.0.0.1:8710`; or several, as a
                list or comma-separated, to spread calls over and fail over between.
            token: a worker (or admin) token.
            transport: an httpx transport (tests pass an in-process one).
            max_attempts: give up after this many tries; retry forever when None.
        """
        urls = split_urls(url)
        if not urls:
            raise ValueError("a server URL is needed")
        self._endpoints = Endpoints(urls, lookup=transport is None and not proxied())
        lean = LeanTransport() if transport is None else None
        self._http = httpx.AsyncClient(
            headers={
                "Authorization": f"Bearer {token}",
                "User-Agent": f"oprun-worker/{__version__}",
                "Content-Type": "application/json",
            },
            timeout=httpx.Timeout(REQUEST_TIMEOUT, connect=CONNECT_TIMEOUT),
            transport=transport if transport is not None else lean,
        )
        # Without a proxy, every http:// call goes to the lean transport: hand it the
        # request directly, without httpx's client layer (cookies, auth, redirects, URL
        # merging), as much CPU again as the transport itself.
        self._direct = lean if lean is not None and not proxied() else None
        self._headers = dict(self._http.headers)
        self._urls: dict[tuple[str, tuple[tuple[str, str], ...]], httpx.URL] = {}
        self._max_attempts = max_attempts
        self._actions = _Actions()
        self.url = redact_url(",".join(urls))

    async def aclose(self) -> None:
        """Close the connections."""
        await self._http.aclose()

    async def register(self, registration: WorkerRegistration) -> Worker:
        """POST /v1/workers."""
        return await self._post(
            "/v1/workers", registration.model_dump_json(), Worker.model_validate_json
        )

    async def claim(self, worker_id: str, request: ClaimRequest) -> ClaimResponse:
        """POST /v1/workers/{id}:claim, a long poll of up to `request.wait` seconds."""
        return await self._post(
            f"/v1/workers/{worker_id}:claim",
            request.model_dump_json(),
            self._actions.claim_response,
            wait=request.wait,
        )

    async def heartbeat(
        self, worker_id: str, beat: Heartbeat, wait: float, *, retry: bool = True
    ) -> HeartbeatResponse:
        """POST /v1/workers/{id}:heartbeat?wait=S, a long poll for cancels."""
        return await self._post(
            f"/v1/workers/{worker_id}:heartbeat",
            beat.model_dump_json(),
            HeartbeatResponse.model_validate_json,
            params={"wait": f"{wait:g}"},
            wait=wait,
            retry=retry,
        )

    async def report(self, worker_id: str, body: str) -> ReportBatchResponse:
        """POST /v1/workers/{id}:report with an encoded `ReportBatch`."""
        return await self._post(
            f"/v1/workers/{worker_id}:report", body, ReportBatchResponse.model_validate_json
        )

    async def _post(
        self,
        path: str,
        body: str,
        parse: Callable[[bytes], T],
        *,
        params: dict[str, str] | None = None,
        wait: float = 0.0,
        retry: bool = True,
    ) -> T:
        timeout = httpx.Timeout(REQUEST_TIMEOUT + wait, connect=CONNECT_TIMEOUT)
        attempt = 0
        while True:
            attempt += 1
            endpoint = await self._endpoint()
            outcome: httpx.Response | Exception
            try:
                outcome = response = await self._send(endpoint, path, body, params, timeout)
                self._endpoints.observe(endpoint, response)
                if response.is_success:
                    return parse(response.content)
                error = _error(response)
            except httpx.TransportError as exc:
                outcome = exc
                self._endpoints.observe(endpoint, exc)
                error = Unavailable(
                    f"cannot reach the server at {_where(endpoint)}: {type(exc).__name__}: {exc}"
                )
            elsewhere = self._endpoints.elsewhere(endpoint, outcome)
            if elsewhere and not_sent(outcome) and attempt != self._max_attempts:
                # It never reached a server: the next endpoint takes it at once.
                log.warning(
                    "server_failover path=%s from=%s error=%s",
                    _short(path),
                    _where(endpoint),
                    error.message,
                )
                continue
            if not retry or not _retryable(error) or attempt == self._max_attempts:
                raise error
            delay = 0.0 if elsewhere else _delay(attempt, error)
            log.warning(
                "server_call_retry path=%s attempt=%s code=%s delay=%.2f error=%s",
                _short(path),
                attempt,
                error.code,
                delay,
                error.message,
            )
            if delay:
                await asyncio.sleep(delay)

    async def _send(
        self,
        endpoint: Endpoint,
        path: str,
        body: str,
        params: dict[str, str] | None,
        timeout: httpx.Timeout,
    ) -> httpx.Response:
        url = endpoint.join(path)
        if self._direct is not None and url.startswith("http://"):
            key = (url, tuple(params.items()) if params else ())
            parsed = self._urls.get(key)
            if parsed is None:  # a handful of URLs, parsed once each
                if len(self._urls) >= 64:
                    self._urls.clear()
                parsed = self._urls[key] = httpx.URL(url, params=params)
            request = httpx.Request(
                "POST",
                parsed,
                content=body,
                headers={**self._headers, **endpoint.headers},
                extensions={"timeout": timeout.as_dict(), **endpoint.extensions},
            )
            return await self._direct.handle_async_request(request)
        return await self._http.post(
            url,
            content=body,
            params=params,
            headers=endpoint.headers,
            extensions=endpoint.extensions,
            timeout=timeout,
        )

    async def _endpoint(self) -> Endpoint:
        """The endpoint of the next call, once any DNS name due a lookup is looked up."""
        for url, host, port in self._endpoints.lookups_due():
            self._endpoints.resolved(url, await aresolve(host, port))
        return self._endpoints.pick()


class _Actions:
    """The action definitions of recent claims, each validated once.

    Every assignment of a claim carries its action's definition, which validating
    again and again (each of its fields through the text rule's validator) was the
    larger part of reading a claim. A definition equal to one seen before (the same
    JSON value, compared in full) is answered with the model it gave then: models are
    immutable, so sharing one is safe, and anything else is validated as before.
    """

    def __init__(self, size: int = MAX_ACTIONS_KEPT) -> None:
        self._size = size
        self._seen: dict[tuple[Any, Any, Any], tuple[dict[str, Any], ActionDefinition]] = {}

    def definition(self, raw: dict[str, Any]) -> ActionDefinition:
        """The validated definition of `raw`, reused when `raw` was seen before.

        Raises:
            pydantic.ValidationError: `raw` is not a valid definition.
        """
        key = (raw.get("name"), raw.get("kind"), raw.get("entrypoint"))
        seen = self._seen.get(key)
        if seen is not None and seen[0] == raw:
            return seen[1]
        definition = ActionDefinition.model_validate(raw)
        self._seen.pop(key, None)
        if len(self._seen) >= self._size:
            del self._seen[next(iter(self._seen))]  # the oldest
        self._seen[key] = (copy.deepcopy(raw), definition)
        return definition

    def claim_response(self, content: bytes) -> ClaimResponse:
        """A claim's answer, its action definitions reused where they were seen before.

        Raises:
            pydantic.ValidationError: the answer is not a `ClaimResponse`.
        """
        try:
            data = json.loads(content)
        except ValueError:
            return ClaimResponse.model_validate_json(content)  # says what is wrong
        assignments = data.get("assignments") if isinstance(data, dict) else None
        for assignment in assignments if isinstance(assignments, list) else ():
            action = assignment.get("action") if isinstance(assignment, dict) else None
            if isinstance(action, dict):
                assignment["action"] = self.definition(action)
        return ClaimResponse.model_validate(data)


def _error(response: httpx.Response) -> OprunError:
    try:
        body: Any = response.json()
    except (json.JSONDecodeError, UnicodeDecodeError):
        body = None
    error = error_from_body(response.status_code, body)
    if isinstance(error, Throttled):
        error.details.setdefault("retry_after", response.headers.get("Retry-After"))
    return error


def _where(endpoint: Endpoint) -> str:
    """An endpoint for a log line: its URL without user info, and its address if any."""
    where = redact_url(endpoint.origin)
    return where if endpoint.address is None else f"{where} ({endpoint.address})"


def _short(path: str) -> str:
    """A call's name for a log line: the verb after ``:`` (``claim``), else the path."""
    return path.rsplit(":", 1)[-1] if ":" in path else path


def _retryable(error: OprunError) -> bool:
    return isinstance(error, ServerError | Unavailable | Throttled)


def _delay(attempt: int, error: OprunError) -> float:
    if isinstance(error, Throttled):
        try:
            return max(0.0, float(error.details.get("retry_after") or ""))
        except ValueError:
            pass
    return backoff(attempt - 1, BACKOFF_FIRST, BACKOFF_MAX, random.random())  # jitter, not a secret
