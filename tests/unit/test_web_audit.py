"""The Audit page without a browser: admins only, escaped, filtered and paged (issue 11)."""

from __future__ import annotations

import re

from tests.unit.test_web import ADMIN, SAME, Client, client, make_token, services, store

__all__ = ["client", "services", "store"]

HOSTILE = '<script>alert("x")</script>'


def test_admins_get_the_audit_page_escaped_and_linked_in_the_nav(client: Client) -> None:
    made = client.post(
        "/v1/tokens",
        json={"name": HOSTILE, "role": "viewer"},
        headers={"Authorization": f"Bearer {ADMIN}", "X-Request-ID": "req-web-1"},
    )
    assert made.status_code == 201, made.text
    assert client.post("/sign-in", data={"token": "oprun_nope"}, headers=SAME).status_code == 401
    client.cookies.set("oprun_session", ADMIN)
    page = client.get("/audit")
    assert page.status_code == 200, page.text
    assert '<a href="/audit" aria-current="page">Audit</a>' in page.text
    assert HOSTILE not in page.text and "&lt;script&gt;" in page.text
    assert made.json()["token"]["id"] in page.text and "req-web-1" in page.text
    assert "auth.failed" in page.text and "(server)" in page.text  # the first project's admin
    assert made.json()["secret"] not in page.text and "oprun_nope" not in page.text
    assert "token.created" in client.get("/audit?kind=token.created").text
    assert client.get("/audit?kind=nope").status_code == 400


def test_the_pager_keeps_the_filter(client: Client) -> None:
    make_token(client, "viewer")
    make_token(client, "operator")
    client.cookies.set("oprun_session", ADMIN)
    first = client.get("/audit?kind=token.created&limit=1")
    assert first.status_code == 200
    older = re.search(r'href="(/audit\?[^"]*cursor=[^"]+)"', first.text)
    assert older and "kind=token.created" in older.group(1)
    second = client.get(older.group(1).replace("&amp;", "&") + "&limit=1")
    assert second.status_code == 200 and "« Newest" in second.text


def test_other_roles_see_no_link_and_get_the_403_page(client: Client) -> None:
    for role in ("viewer", "operator", "deployer"):
        client.cookies.set("oprun_session", make_token(client, role))
        assert 'href="/audit"' not in client.get("/jobs").text, role
        denied = client.get("/audit")
        assert denied.status_code == 403, role
        assert "Not allowed" in denied.text
