"""How the SDK speaks HTTP, with no I/O: calls, response parsing, error mapping, connection.

`Client` and `AsyncClient` differ only in how they send a `Call`; everything about
what is sent and what an answer means lives here (and in `_endpoints/`), once.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar
from urllib.parse import quote

import httpx
import pydantic

from oprun._version import __version__
from oprun.domain.errors import (
    ERRORS_BY_CODE,
    OprunError,
    ServerError,
    Unavailable,
    ValidationError,
    error_from_body,
)
from oprun.sdk import _config, _failover

T = TypeVar("T")

DEFAULT_URL = _config.DEFAULT_URL
DEFAULT_TIMEOUT = 30.0
"""Seconds to connect, send or read before a request fails (long polls add their wait)."""
URL_ENV = _config.URL_ENV
TOKEN_ENV = _config.TOKEN_ENV
PROFILE_ENV = _config.PROFILE_ENV
USER_AGENT = f"oprun-python/{__version__}"

Params = Mapping[str, str | int | float | bool | None]


@dataclass(frozen=True)
class Call(Generic[T]):
    """One API call: what to send, whether a retry is safe, and how to read the answer.

    `parse` sees only successful (2xx) responses; errors are mapped before it runs.
    `wait` is how long the server may hold the request (a long poll): it is added to
    the read timeout so the client never gives up on an answer the server still owes.
    """

    method: str
    path: str
    parse: Callable[[httpx.Response], T]
    params: Params | None = None
    json: Any = None
    retry_safe: bool = False
    wait: float = 0.0

    def query(self) -> dict[str, str | int | float | bool]:
        """The query parameters with unset (None) values left out."""
        return {k: v for k, v in (self.params or {}).items() if v is not None}


@dataclass(frozen=True)
class ConnectionSettings:
    """Where and how a client connects; resolved once from arguments and environment.

    `url` holds one server URL or several, comma-separated (`urls` lists them).
    """

    url: str
    token: str | None = field(repr=False)
    timeout: float

    @property
    def urls(self) -> tuple[str, ...]:
        """The server URLs, in the order given."""
        return _failover.split_urls(self.url)

    @classmethod
    def resolve(
        cls,
        url: str | Iterable[str] | None,
        token: str | None,
        timeout: float | None,
        profile: str | None = None,
    ) -> ConnectionSettings:
        """Arguments, then ``OPRUN_URL`` / ``OPRUN_TOKEN``, then the profile file, then defaults.

        A profile named by `profile` ranks with the arguments; ``OPRUN_PROFILE`` picks
        the profile used after the environment (``[default]`` when unset). A profile's
        token is only ever sent to that profile's URL. See `oprun.sdk._config`.
        """
        connection = _config.resolve(url, token, profile)
        resolved = connection.url
        for one in _failover.split_urls(resolved) or ("",):
            if not one.startswith(("http://", "https://")):
                raise ValidationError(
                    f"server url must start with http:// or https://, got {one!r} "
                    f"(from {connection.url_source})",
                    field="url",
                )
        return cls(
            url=resolved,
            token=connection.token,
            timeout=DEFAULT_TIMEOUT if timeout is None else timeout,
        )

    def headers(self) -> dict[str, str]:
        """Headers sent with every request (the token only ever travels in a header)."""
        headers = {"User-Agent": USER_AGENT, "Accept": "application/json"}
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        return headers

    def timeout_for(self, call: Call[Any], *, failover: bool = False) -> httpx.Timeout:
        """The timeout of one call: the default, with a long poll's wait added to reads.

        With `failover` (another endpoint could take the call), connecting gives up
        after `oprun.sdk._failover.CONNECT_TIMEOUT` at most: a host that is gone
        holds a call up for seconds, not for the whole timeout.
        """
        connect = min(self.timeout, _failover.CONNECT_TIMEOUT) if failover else self.timeout
        return httpx.Timeout(self.timeout, connect=connect, read=self.timeout + call.wait)


def segment(value: str) -> str:
    """A path segment, escaped so that an id can never change the path it is put in."""
    if not value:
        raise ValidationError("an id or name must not be empty", field="id")
    return quote(value, safe="")


def handle(call: Call[T], response: httpx.Response) -> T:
    """The parsed answer of a call, or the typed error its response carries."""
    raise_for_error(response)
    try:
        return call.parse(response)
    except (pydantic.ValidationError, ValueError) as exc:
        raise unexpected(response, exc) from exc


def succeeded(outcome: httpx.Response | Exception) -> bool:
    """Whether a call's outcome is an answer that is not an error (2xx or 3xx)."""
    return isinstance(outcome, httpx.Response) and outcome.status_code < 400


def raise_for_error(response: httpx.Response) -> None:
    """Raise the `OprunError` subclass an error response stands for; do nothing on 2xx/3xx."""
    if response.status_code < 400:
        return
    raise error_from_response(response)


def error_from_response(response: httpx.Response) -> OprunError:
    """The typed error of an error response: by its body's code, else by its HTTP status.

    A body in oprun's error shape keeps its message and details even when its code is
    one this SDK does not know (a newer server); anything else (a proxy's HTML page)
    becomes the class of its status with a message naming the request.
    """
    try:
        body: Any = response.json()
    except (ValueError, UnicodeDecodeError):
        body = None
    shaped = body.get("error") if isinstance(body, dict) else None
    if isinstance(shaped, dict) and isinstance(shaped.get("message"), str):
        error = error_from_body(response.status_code, body)
        if shaped.get("code") not in ERRORS_BY_CODE:
            details = shaped.get("details")
            extra = dict(details) if isinstance(details, dict) else {}
            extra["code"] = shaped.get("code")
            error = type(error)(shaped["message"], **extra)
    else:
        cls = type(error_from_body(response.status_code, None))
        request = response.request
        reason = response.reason_phrase or "error"
        error = cls(f"HTTP {response.status_code} {reason} from {request.method} {request.url}")
    retry_after = retry_after_seconds(response)
    if retry_after is not None and "retry_after" not in error.details:
        error.details["retry_after"] = retry_after
    return error


def unexpected(response: httpx.Response, exc: Exception) -> ServerError:
    """The error for a successful response the SDK cannot read (a server of another version?)."""
    return ServerError(
        f"unexpected response to {response.request.method} {response.request.url}: {exc}",
        status=response.status_code,
    )


def finish(call: Call[T], outcome: httpx.Response | Exception, url: str) -> T:
    """A call's last outcome as its answer: parsed, or raised as the typed error.

    `url` names the server the last attempt went to, for a connection error.
    """
    if isinstance(outcome, httpx.RequestError):
        raise connection_error(url, outcome) from outcome
    if isinstance(outcome, Exception):
        raise outcome
    return handle(call, outcome)


def connection_error(url: str, exc: httpx.RequestError) -> Unavailable:
    """The error for a request that never got an answer, naming the server it tried."""
    if isinstance(exc, httpx.TimeoutException):
        problem = f"timed out ({type(exc).__name__})"
    else:
        problem = str(exc) or type(exc).__name__
    return Unavailable(f"cannot reach oprun at {url}: {problem}", url=url)


def retry_after_seconds(response: httpx.Response) -> float | None:
    """The ``Retry-After`` header in seconds, when it holds a number of seconds."""
    value = response.headers.get("retry-after")
    if value is None:
        return None
    try:
        seconds = float(value)
    except ValueError:
        return None
    return max(seconds, 0.0)


def parse_json_value(text: str) -> Any:
    """A ``-p key=value`` value: JSON for what looks like an object or array, else the text.

    Scalars stay strings: the server coerces them by the parameter's declared type.
    """
    stripped = text.strip()
    if stripped[:1] in ("{", "["):
        try:
            return json.loads(stripped)
        except ValueError as exc:
            raise ValidationError(f"value is not valid JSON: {exc}", value=text) from exc
    return text


def from_pydantic(exc: pydantic.ValidationError, what: str) -> ValidationError:
    """A client-side validation failure as oprun's `ValidationError`, naming the field."""
    errors = exc.errors()
    if not errors:
        return ValidationError(f"invalid {what}", field=what)
    where = ".".join(str(p) for p in errors[0]["loc"]) or what
    return ValidationError(f"invalid {what}: {where}: {errors[0]['msg']}", field=where)
