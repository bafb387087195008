"""The request's edge: limits that hold before any work is done for anyone.

`RequestLimits` is a pure ASGI middleware, outside authentication and routing:

- the body is counted as it arrives, whatever the framing (`Content-Length` or
  chunked): over `MAX_REQUEST_BYTES` it answers 413 `TOO_LARGE` and reads no further;
- an `Authorization` header over `MAX_AUTHORIZATION_BYTES` is 401, never hashed;
- a NUL in the path or in a query parameter (text no backend stores) is 400 naming it.

It reads the whole body (at most the limit) before the app runs and hands it on; the
app's later reads of the channel (a long poll watching for a hang-up) go through.
"""

from __future__ import annotations

from urllib.parse import parse_qsl

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from oprun.api.errors import error_response
from oprun.domain.errors import AuthenticationError, OprunError, TooLarge, ValidationError
from oprun.domain.limits import MAX_AUTHORIZATION_BYTES, MAX_REQUEST_BYTES


def _refusal(scope: Scope) -> OprunError | None:
    """Why the request's head is refused, or None."""
    if "\x00" in scope["path"]:
        return ValidationError("the path must not contain a NUL character", field="path")
    query = scope.get("query_string", b"").decode("latin-1")
    for name, value in parse_qsl(query, keep_blank_values=True):
        if "\x00" in name or "\x00" in value:
            field = name.replace("\x00", "\\x00")
            return ValidationError(f"{field}: must not contain a NUL character", field=field)
    for name, value in scope["headers"]:
        if name == b"authorization" and len(value) > MAX_AUTHORIZATION_BYTES:
            return AuthenticationError(
                f"the Authorization header is longer than {MAX_AUTHORIZATION_BYTES} bytes"
            )
    return None


def _too_large(read: int | str) -> TooLarge:
    return TooLarge(
        f"request body is {read} bytes; the limit is {MAX_REQUEST_BYTES}",
        limit=MAX_REQUEST_BYTES,
    )


class RequestLimits:
    """Refuses an oversized body, an oversized credential or a NUL in the URL, early."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Check the head, read the body within the limit, then run the app."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        refusal = _refusal(scope)
        if refusal is None:
            for name, value in scope["headers"]:
                if name == b"content-length" and value.isdigit() and int(value) > MAX_REQUEST_BYTES:
                    refusal = _too_large(value.decode())
        if refusal is not None:
            await self._answer(refusal, scope, receive, send)
            return
        body = bytearray()
        while True:
            message = await receive()
            if message["type"] != "http.request":
                first = message  # the client left: the app hears it
                break
            body += message.get("body", b"")
            if len(body) > MAX_REQUEST_BYTES:
                await self._answer(_too_large(f"over {MAX_REQUEST_BYTES}"), scope, receive, send)
                return
            if not message.get("more_body", False):
                first = {"type": "http.request", "body": bytes(body), "more_body": False}
                break
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return first
            return await receive()

        await self.app(scope, replay, send)

    @staticmethod
    async def _answer(error: OprunError, scope: Scope, receive: Receive, send: Send) -> None:
        response = error_response(error)
        if isinstance(error, TooLarge):
            # The rest of the body is never read: this connection cannot carry another request.
            response.headers["Connection"] = "close"
        await response(scope, receive, send)
