"""What browsers need from the API: CORS on every /v0/ answer, and JWTs for per-user endpoint reads."""

from __future__ import annotations

import time

import jwt
import pytest
from starlette.testclient import TestClient

from evtrack.server.app import create_app

from . import reference
from .conftest import data
from .test_server import LOOPBACK, admin, assert_error

ORIGIN = "http://127.0.0.1:9999"


@pytest.fixture
def http(engine):
    with TestClient(create_app(engine), base_url="http://127.0.0.1:7181", client=LOOPBACK) as client:
        yield client


# -- CORS -------------------------------------------------------------------------------------
@pytest.mark.parametrize("path, method", [
    ("/v0/events?name=events", "POST"), ("/v0/pipes/get_events.json", "GET"),
    ("/v0/sql", "GET"), ("/v0/datasources?name=events&mode=append", "POST")])
def test_preflight_is_a_204_allowing_methods_and_headers(http, path, method):
    response = http.options(path, headers={"Origin": ORIGIN, "Access-Control-Request-Method": method,
                                           "Access-Control-Request-Headers": "authorization, content-type"})
    assert response.status_code == 204
    assert response.headers["access-control-allow-origin"] == "*"
    assert method in response.headers["access-control-allow-methods"].split(", ")
    assert response.headers["access-control-allow-headers"] == "authorization, content-type"
    assert response.content == b""


@pytest.mark.parametrize("call", [
    lambda http, e: http.get("/v0/pipes/event_stats.json", headers=admin(e)),
    lambda http, e: http.get("/v0/pipes/event_stats.json"),  # 403
    lambda http, e: http.get("/v0/pipes/nope.json", headers=admin(e)),  # 404
    lambda http, e: http.post("/v0/events?name=events", content=b"{}"),  # 403, plain text
    lambda http, e: http.get("/v0/sql?q=select%201", headers=admin(e)),
    lambda http, e: http.get("/v0/pipes/event_timeseries.json?granularity=week", headers=admin(e)),  # 400
])
def test_every_api_answer_carries_allow_origin(http, engine, call):
    response = call(http, engine)
    assert response.headers["access-control-allow-origin"] == "*"
    assert "Retry-After" in response.headers["access-control-expose-headers"]


def test_cors_opens_nothing_a_token_would_not(http, engine):
    tracker = engine.tokens.get("tracker").token
    response = http.get(f"/v0/pipes/get_events.json?token={tracker}", headers={"Origin": ORIGIN})
    assert response.status_code == 403
    assert response.json()["error"] == "The token you have provided doesn't have access to this resource"
    assert response.headers["access-control-allow-origin"] == "*"


def test_token_discovery_is_not_open_to_other_origins(http):
    response = http.get("/tokens", headers={"Origin": ORIGIN})
    assert response.status_code == 200  # loopback, as before; but no page of another origin may read it
    assert "access-control-allow-origin" not in response.headers
    preflight = http.options("/tokens", headers={"Origin": ORIGIN, "Access-Control-Request-Method": "GET"})
    assert preflight.status_code == 405


# -- JWTs -------------------------------------------------------------------------------------
def sign(engine, scopes, exp=None, key=None, workspace_id=None) -> str:
    payload = {"workspace_id": workspace_id or engine.tokens.workspace_id, "name": "frontend_jwt",
               "exp": exp or int(time.time()) + 3600, "scopes": scopes}
    return jwt.encode(payload, key or engine.tokens.admin.token, algorithm="HS256")


def user_scope(pipe="user_activity", user_id="user_abc"):
    return [{"type": "PIPES:READ", "resource": pipe, "fixed_params": {"user_id": user_id}}]


def test_jwt_fixed_params_override_the_request(http, engine, rows):
    token = sign(engine, user_scope())
    for call in (
        lambda: http.get(f"/v0/pipes/user_activity.json?token={token}&user_id=user_0001"),
        lambda: http.get("/v0/pipes/user_activity.json?user_id=user_0001", headers={"Authorization": f"Bearer {token}"}),
        lambda: http.post(f"/v0/pipes/user_activity.json?token={token}", json={"user_id": "user_0001"}),
        lambda: http.get(f"/v0/pipes/user_activity.json?token={token}"),
    ):
        response = call()
        assert response.status_code == 200, response.text
        assert data(response.content) == reference.user_activity(rows, "user_abc")


def test_jwt_q_reads_only_the_fixed_result(http, engine, rows):
    token = sign(engine, user_scope("get_events"))
    response = http.get("/v0/pipes/get_events.json", params={
        "token": token, "user_id": "user_0001", "limit": "10000", "q": "SELECT count() AS n FROM _"})
    assert data(response.content) == [{"n": len(reference.get_events(rows, user_id="user_abc", limit=10000))}]


def test_jwt_made_by_the_cli_reads_its_pipe(http, engine, rows):
    token = engine.tokens.sign_jwt("cli", {"user_activity": {"user_id": "user_0042"}}, 60)
    response = http.get(f"/v0/pipes/user_activity.json?token={token}&user_id=user_abc")
    assert data(response.content) == reference.user_activity(rows, "user_0042")
    assert jwt.decode(token, options={"verify_signature": False})["scopes"] == [
        {"type": "PIPES:READ", "resource": "user_activity", "fixed_params": {"user_id": "user_0042"}}]


def test_jwt_scopes_of_one_pipe_merge_and_keep_every_fixed_param(http, engine, rows):
    bare = [{"type": "PIPES:READ", "resource": "user_activity"}]
    since = [{"type": "PIPES:READ", "resource": "user_activity", "fixed_params": {"start_date": "2023-06-01 00:00:00"}}]
    for scopes, expected in (
        (user_scope() + bare, reference.user_activity(rows, "user_abc")),
        (bare + user_scope(), reference.user_activity(rows, "user_abc")),
        (user_scope() + [{**bare[0], "fixed_params": {}}], reference.user_activity(rows, "user_abc")),
        (user_scope() + since, reference.user_activity(rows, "user_abc", start_date="2023-06-01 00:00:00")),
    ):
        response = http.get(f"/v0/pipes/user_activity.json?token={sign(engine, scopes)}&user_id=user_0001"
                            "&start_date=2023-01-01 00:00:00")
        assert response.status_code == 200, response.text
        assert data(response.content) == expected, scopes


@pytest.mark.parametrize("make, message", [
    pytest.param(lambda e: sign(e, user_scope(), exp=int(time.time()) - 60),
                 "invalid authentication token: the JWT has expired", id="expired"),
    pytest.param(lambda e: sign(e, user_scope(), key="p.not-the-admin-token-but-just-as-long-as-one"),
                 "invalid authentication token", id="signed-with-another-key"),
    pytest.param(lambda e: sign(e, user_scope(), workspace_id="another-workspace"), "invalid authentication token",
                 id="another-workspace"),
    pytest.param(lambda e: sign(e, user_scope())[:-4] + "AAAA", "invalid authentication token", id="signature-altered"),
    pytest.param(lambda e: jwt.encode({"name": "x", "scopes": user_scope()}, e.tokens.admin.token, algorithm="HS256"),
                 "invalid authentication token", id="exp-missing"),
    # Two scopes of the pipe fixing user_id differently, or fixed_params that is not an object: no safe reading.
    pytest.param(lambda e: sign(e, user_scope() + user_scope(user_id="user_0001")), "invalid authentication token",
                 id="fixed-params-conflicting"),
    pytest.param(lambda e: sign(e, [{"type": "PIPES:READ", "resource": "user_activity", "fixed_params": ["user_id"]}]),
                 "invalid authentication token", id="fixed-params-not-an-object"),
    pytest.param(lambda e: sign(e, user_scope("get_events")),
                 "The token you have provided doesn't have access to this resource", id="another-pipe"),
    pytest.param(lambda e: sign(e, [{"type": "ADMIN"}]),
                 "The token you have provided doesn't have access to this resource", id="admin-scope"),
    pytest.param(lambda e: sign(e, [{"type": "DATASOURCES:READ", "resource": "events"}]),
                 "The token you have provided doesn't have access to this resource", id="datasource-scope"),
])
def test_jwt_refused_on_endpoint_reads(http, engine, make, message):
    assert_error(http.get(f"/v0/pipes/user_activity.json?token={make(engine)}&user_id=user_abc"), 403, message)


@pytest.mark.parametrize("method, url, body, text, plain", [
    pytest.param("GET", "/v0/sql?q=SELECT%20count()%20FROM%20get_events", None, "invalid authentication token", False,
                 id="sql"),
    pytest.param("POST", "/v0/events?name=events", b'{"event_type": "x", "timestamp": 0}', "Invalid token", True,
                 id="events-api"),
    pytest.param("GET", "/v0/pipes", None, "invalid authentication token", False, id="pipes-listing"),
])
def test_jwt_works_on_endpoint_reads_only(http, engine, method, url, body, text, plain):
    token = sign(engine, user_scope("get_events") + [{"type": "ADMIN"}])
    response = http.request(method, url, content=body, headers={"Authorization": f"Bearer {token}"})
    assert_error(response, 403, text, plain=plain)


# -- the static files ---------------------------------------------------------------------------
def test_serve_answers_the_dashboard_and_the_tracker_from_the_package(http):
    from importlib import resources

    page = http.get("/")
    assert page.status_code == 200 and page.headers["content-type"] == "text/html; charset=utf-8"
    assert page.content == resources.files("evtrack.web").joinpath("dashboard.html").read_bytes()
    script = http.get("/tracker.js", headers={"Origin": ORIGIN})
    assert script.status_code == 200 and script.headers["content-type"] == "text/javascript; charset=utf-8"
    assert script.headers["access-control-allow-origin"] == "*"
    assert script.content == resources.files("evtrack.web").joinpath("tracker.js").read_bytes()
