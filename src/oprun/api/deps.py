"""Request dependencies: the services and the authenticated caller."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from oprun.service import Principal, Services


def services(request: Request) -> Services:
    """The services of this app."""
    svc: Services = request.app.state.services
    return svc


def principal(request: Request, svc: Annotated[Services, Depends(services)]) -> Principal:
    """The caller, from `Authorization: Bearer <token>` or the web session cookie."""
    header = request.headers.get("authorization", "")
    scheme, _, secret = header.partition(" ")
    if scheme.lower() != "bearer":
        secret = request.cookies.get("oprun_session", "")
    return svc.auth.authenticate(secret.strip() or None)


Svc = Annotated[Services, Depends(services)]
Caller = Annotated[Principal, Depends(principal)]
