"""Request building, response parsing and error mapping: the SDK's I/O-free core."""

from __future__ import annotations

import httpx
import pytest

from oprun.domain import models
from oprun.domain.errors import ERRORS_BY_CODE, NotFound, ServerError, Unavailable, ValidationError
from oprun.sdk import _endpoints as E
from oprun.sdk._requests import (
    DEFAULT_URL,
    Call,
    ConnectionSettings,
    connection_error,
    error_from_response,
    handle,
    parse_json_value,
)

from ._sdk_stub import TOKEN, URL, Stub, action_json, body, error, ok, op_json


def _response(status: int, request: httpx.Request | None = None, **kw) -> httpx.Response:
    return httpx.Response(
        status, request=request or httpx.Request("GET", f"{URL}/v1/operations/op_1"), **kw
    )


# -- settings --------------------------------------------------------------------------
def test_settings_default_to_environment_then_local_server(monkeypatch):
    monkeypatch.delenv("OPRUN_URL", raising=False)
    monkeypatch.delenv("OPRUN_TOKEN", raising=False)
    assert (
        ConnectionSettings.resolve(None, None, None).url == DEFAULT_URL == "http://127.0.0.1:8710"
    )
    monkeypatch.setenv("OPRUN_URL", "https://ops.example.com/")
    monkeypatch.setenv("OPRUN_TOKEN", "from-env")
    settings = ConnectionSettings.resolve(None, None, None)
    assert (settings.url, settings.token) == ("https://ops.example.com", "from-env")
    assert ConnectionSettings.resolve("http://other:1", "given", 5).token == "given"


def test_settings_refuse_a_url_without_scheme():
    with pytest.raises(ValidationError, match="http:// or https://"):
        ConnectionSettings.resolve("localhost:8710", None, None)


def test_token_travels_in_the_header_and_never_in_repr():
    settings = ConnectionSettings.resolve(URL, TOKEN, None)
    assert settings.headers()["Authorization"] == f"Bearer {TOKEN}"
    assert TOKEN not in repr(settings)
    stub = Stub().on("GET", "/v1/operations/op_1", ok(op_json()))
    client = stub.client()
    client.operations.get("op_1")
    request = stub.requests[0]
    assert request.headers["authorization"] == f"Bearer {TOKEN}"
    assert TOKEN not in str(request.url)
    assert TOKEN not in repr(client)


def test_long_poll_adds_its_wait_to_the_read_timeout():
    settings = ConnectionSettings.resolve(URL, None, 10)
    timeout = settings.timeout_for(E.wait_operation("op_1", 30))
    assert (timeout.connect, timeout.read) == (10, 40)


# -- request building ------------------------------------------------------------------
def test_ids_are_escaped_into_a_single_path_segment():
    assert E.get_operation("../tokens").path == "/v1/operations/..%2Ftokens"
    assert E.wait_operation("op_1", 5).path == "/v1/operations/op_1:wait"
    with pytest.raises(ValidationError):
        E.get_operation("")


def test_unset_query_parameters_are_left_out():
    call = E.list_operations(status="RUNNING", action=None, created_by=None, cursor=None, limit=50)
    assert call.query() == {"status": "RUNNING", "limit": 50}
    with pytest.raises(ValidationError, match="status must be one of"):
        E.list_operations(status="RUNING", action=None, created_by=None, cursor=None, limit=None)


def test_invocation_always_carries_an_idempotency_key():
    first = E.invocation("resize", {"width": "640"})
    second = E.invocation("resize", {"width": "640"})
    assert first.idempotency_key and second.idempotency_key
    assert first.idempotency_key != second.idempotency_key
    assert E.invocation("resize", idempotency_key="mine").idempotency_key == "mine"
    call = E.invoke(first)
    assert call.retry_safe
    assert call.json["idempotency_key"] == first.idempotency_key


def test_invalid_invocation_fails_before_sending_with_oprun_validation_error():
    with pytest.raises(ValidationError) as info:
        E.invocation("resize", version=0)
    assert info.value.details["field"] == "version"
    with pytest.raises(ValidationError):
        E.create_token("ci", "superuser")


def test_only_calls_that_cannot_do_anything_twice_are_retry_safe():
    assert E.get_operation("op_1").retry_safe
    assert E.delete_operation("op_1").retry_safe
    assert E.invoke(E.invocation("resize")).retry_safe
    assert not E.cancel_operation("op_1").retry_safe
    assert not E.retry_operation("op_1").retry_safe
    assert not E.save_action(models.ActionDefinition(name="x", entrypoint="a:b")).retry_safe


def test_bulk_invocations_get_keys_and_accept_mappings():
    bodies = [E.as_invocation({"action": "resize", "parameters": {"width": 1}})]
    bodies.append(E.as_invocation(models.Invocation(action="resize")))
    assert all(b.idempotency_key for b in bodies)
    call = E.invoke_many(bodies)
    assert call.retry_safe
    assert [i["action"] for i in call.json["invocations"]] == ["resize", "resize"]
    with pytest.raises(ValidationError):
        E.as_invocation({"parameters": {}})


def test_cli_values_that_look_like_json_are_decoded():
    assert parse_json_value('{"a": 1}') == {"a": 1}
    assert parse_json_value("[1, 2]") == [1, 2]
    assert parse_json_value("640") == "640"
    assert parse_json_value("true") == "true"
    with pytest.raises(ValidationError, match="not valid JSON"):
        parse_json_value("{oops")


# -- response parsing and error mapping ------------------------------------------------
@pytest.mark.parametrize("code", sorted(ERRORS_BY_CODE))
def test_every_error_code_maps_to_its_class_with_message_and_details(code):
    cls = ERRORS_BY_CODE[code]
    response = error(code, cls.http_status, "it went wrong", parameter="width")
    response.request = httpx.Request("GET", f"{URL}/v1/x")
    err = error_from_response(response)
    assert type(err) is cls
    assert err.message == "it went wrong"
    assert err.details["parameter"] == "width"
    assert str(err) == "it went wrong"


def test_a_bare_httpx_status_error_never_escapes():
    call = E.get_operation("op_1")
    for status in (400, 404, 418, 500, 502, 503):
        with pytest.raises(Exception) as info:
            handle(call, _response(status, text="<html>bad gateway</html>"))
        assert not isinstance(info.value, httpx.HTTPStatusError)


def test_a_body_not_in_the_error_shape_maps_by_status_and_names_the_request():
    err = error_from_response(_response(502, text="<html>bad gateway</html>"))
    assert isinstance(err, ServerError)
    assert "HTTP 502" in err.message
    assert f"GET {URL}/v1/operations/op_1" in err.message
    assert isinstance(error_from_response(_response(404, text="")), NotFound)


def test_an_unknown_code_keeps_its_message_and_is_classed_by_status():
    response = _response(
        404, json={"error": {"code": "GONE_FISHING", "message": "later", "details": {"a": 1}}}
    )
    err = error_from_response(response)
    assert isinstance(err, NotFound)
    assert (err.message, err.details) == ("later", {"a": 1, "code": "GONE_FISHING"})


def test_retry_after_is_kept_in_the_details_of_a_throttled_error():
    response = _response(
        429,
        json={"error": {"code": "THROTTLED", "message": "slow down", "details": {}}},
        headers={"Retry-After": "7"},
    )
    assert error_from_response(response).details["retry_after"] == 7.0


def test_a_success_the_sdk_cannot_read_is_a_server_error_not_a_pydantic_one():
    with pytest.raises(ServerError, match="unexpected response"):
        handle(E.get_operation("op_1"), _response(200, json={"id": "op_1"}))
    with pytest.raises(ServerError):
        handle(E.get_operation("op_1"), _response(200, text="not json"))


def test_parsers_read_the_domain_models():
    op = handle(E.get_operation("op_1"), _response(200, json=op_json(status="RUNNING")))
    assert isinstance(op, models.Operation)
    assert op.status == "RUNNING"
    action = handle(E.get_action("resize"), _response(200, json=action_json()))
    assert action.definition.parameters[0].name == "width"
    assert handle(E.invoke(E.invocation("resize")), _response(204)) is None
    assert handle(E.delete_operation("op_1"), _response(204)) is None


def test_connection_errors_become_unavailable_naming_the_url():
    err = connection_error(URL, httpx.ConnectError("[Errno 111] Connection refused"))
    assert isinstance(err, Unavailable)
    assert err.message == f"cannot reach oprun at {URL}: [Errno 111] Connection refused"
    assert err.details == {"url": URL}
    assert "timed out" in connection_error(URL, httpx.ReadTimeout("")).message


def test_a_client_maps_an_unreachable_server_to_unavailable():
    stub = Stub().on("GET", "/v1/operations/op_1", httpx.ConnectError("refused"))
    with pytest.raises(Unavailable, match=f"cannot reach oprun at {URL}"):
        stub.client(retries=0).operations.get("op_1")


def test_call_query_keeps_false_and_zero():
    call = Call("GET", "/x", lambda r: None, params={"a": 0, "b": False, "c": None})
    assert call.query() == {"a": 0, "b": False}


def test_register_sends_the_definition_and_apps_send_each():
    stub = Stub().on("POST", "/v1/actions", ok(action_json(), 201))
    client = stub.client()
    definition = models.ActionDefinition(name="resize", entrypoint="pkg.mod:fn")
    assert client.actions.register(definition).name == "resize"
    assert body(stub.requests[0])["entrypoint"] == "pkg.mod:fn"

    class App:
        def definitions(self):
            return [definition, definition.model_copy(update={"name": "crop"})]

    assert len(client.actions.register(App())) == 2
    assert [body(r)["name"] for r in stub.requests[1:]] == ["resize", "crop"]
