"""Signing in and out of the web UI, and routes that answer people with pages, not JSON.

The session cookie holds the API token itself (HttpOnly, SameSite=Strict, Secure over
HTTPS, never in a URL), so every page and every `/v1` call the pages make runs under
exactly the token's project and role. `oprun.api.deps.principal` reads it and refuses
cookie-authenticated state changes that do not come from this server's own pages.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from functools import partial
from typing import Annotated, Any
from urllib.parse import parse_qs, quote

from anyio.to_thread import run_sync
from fastapi import APIRouter, Depends, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import RedirectResponse
from fastapi.routing import APIRoute

from oprun.api.deps import (
    SESSION_COOKIE,
    Caller,
    Svc,
    client_address,
    request_id,
    same_origin,
)
from oprun.domain.errors import (
    AccessDenied,
    AuthenticationError,
    OprunError,
    ServerError,
    Throttled,
    ValidationError,
)
from oprun.domain.models import Project
from oprun.domain.roles import Permission
from oprun.service import Principal
from oprun.web.templating import render, secure

log = logging.getLogger("oprun.web")

HOME = "/jobs"

TITLES = {
    400: "That request is not valid",
    401: "Sign in required",
    403: "Not allowed",
    404: "Not found",
    409: "Conflict",
    429: "Too many failed attempts",
}


@dataclass(frozen=True)
class PageContext:
    """What every signed-in page shows in its header, and the store's clock."""

    caller: Principal
    project: Project
    now: float
    can_invoke: bool
    """Whether the caller's role may cancel and retry (operator, admin)."""


def page_context(request: Request, caller: Caller, svc: Svc) -> PageContext:
    """The signed-in caller, their project and the store's clock (a dependency)."""
    context = PageContext(
        caller=caller,
        project=svc.tokens.current_project(caller),
        now=svc.now(),
        can_invoke=caller.role.allows(Permission.INVOKE),
    )
    request.state.page = context
    return context


Page = Annotated[PageContext, Depends(page_context)]


def safe_next(value: str | None) -> str:
    """A local path to go to after signing in; anything else (another site) goes home."""
    if not value or not value.startswith("/") or value.startswith("//") or "\\" in value:
        return HOME
    if value.startswith(("/sign-in", "/sign-out")):
        return HOME
    return value


def sign_in_redirect(request: Request) -> Response:
    """Send the browser to the sign-in page, coming back here afterwards."""
    here = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    response = RedirectResponse(f"/sign-in?next={quote(here, safe='')}", status_code=303)
    if SESSION_COOKIE in request.cookies:
        response.delete_cookie(SESSION_COOKIE, path="/")
    return secure(response)


def error_page(request: Request, error: OprunError) -> Response:
    """The HTML page for an error, with its status code."""
    status = error.http_status
    page = render(
        request,
        "error.html",
        {
            "page": getattr(request.state, "page", None),
            "section": "",
            "title": TITLES.get(status, "Something went wrong"),
            "status": status,
            "error": error,
        },
        status_code=status,
    )
    if isinstance(error, Throttled):
        page.headers["Retry-After"] = str(error.details.get("retry_after", 1))
    return page


class WebRoute(APIRoute):
    """A page: a missing or revoked session goes to sign-in; other errors become pages."""

    sign_in_on_401 = True

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        """Wrap the handler so every answer is HTML with the security headers."""
        handler = super().get_route_handler()
        redirect = self.sign_in_on_401

        async def handle(request: Request) -> Response:
            try:
                response = await handler(request)
            except AuthenticationError as exc:
                if redirect:
                    return sign_in_redirect(request)
                return error_page(request, exc)
            except RequestValidationError as exc:
                first: dict[str, Any] = next(iter(exc.errors()), {})
                where = ".".join(str(p) for p in first.get("loc", ()) if p != "query")
                return error_page(request, ValidationError(f"{where}: {first.get('msg', '')}"))
            except OprunError as exc:
                return error_page(request, exc)
            except Exception:
                log.exception("event=web_unhandled path=%s", request.url.path)
                return error_page(request, ServerError("the server failed to show this page"))
            return secure(response)

        return handle


class FragmentRoute(WebRoute):
    """A piece of a page fetched by its script: a lost session answers 401, not a redirect."""

    sign_in_on_401 = False


router = APIRouter(route_class=WebRoute, include_in_schema=False)


def _sign_in_page(
    request: Request, next_path: str, error: str | None = None, status_code: int = 200
) -> Response:
    context: dict[str, Any] = {
        "page": None,
        "section": "sign-in",
        "next": next_path,
        "error": error,
    }
    return render(request, "sign_in.html", context, status_code=status_code)


@router.get("/sign-in")
def sign_in_form(request: Request, svc: Svc, next: str | None = None) -> Response:
    """The sign-in form (or straight on, with a valid session)."""
    secret = request.cookies.get(SESSION_COOKIE, "").strip()
    if secret:
        try:
            svc.auth.authenticate(secret)
        except AuthenticationError:
            pass
        else:
            return RedirectResponse(safe_next(next), status_code=303)
    return _sign_in_page(request, safe_next(next))


@router.post("/sign-in")
async def sign_in(request: Request, svc: Svc) -> Response:
    """Check the token and keep it in the session cookie; the token never enters a URL."""
    form = parse_qs((await request.body()).decode("utf-8", "replace"))
    next_path = safe_next(form.get("next", [HOME])[0])
    if not same_origin(request):
        return _sign_in_page(
            request, next_path, "Sign-in refused: the form was not sent from this server.", 403
        )
    token = form.get("token", [""])[0].strip()
    if not token:
        return _sign_in_page(request, next_path, "Paste an API token to sign in.", 400)
    try:
        caller = await run_sync(
            partial(
                svc.auth.authenticate,
                token,
                client_address(request),
                request_id=request_id(),
                via="sign-in",
            )
        )
    except AuthenticationError:
        return _sign_in_page(request, next_path, "That token is not valid or was revoked.", 401)
    except Throttled as exc:
        wait = exc.details.get("retry_after", 1)
        page = _sign_in_page(
            request, next_path, f"Too many failed sign-ins: try again in {wait} s.", 429
        )
        page.headers["Retry-After"] = str(wait)
        return page
    log.info("event=web_sign_in token_id=%s role=%s", caller.token_id, caller.role.value)
    response = RedirectResponse(next_path, status_code=303)
    response.set_cookie(
        SESSION_COOKIE,
        token,
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
        path="/",
    )
    return response


@router.post("/sign-out")
def sign_out(request: Request) -> Response:
    """Forget the session cookie."""
    if not same_origin(request):
        return error_page(request, AccessDenied("sign-out must come from this server's pages"))
    response = RedirectResponse("/sign-in", status_code=303)
    response.delete_cookie(SESSION_COOKIE, path="/", httponly=True, samesite="strict")
    return response
