"""`evtrack serve`'s app in-process (Starlette's TestClient): Tinybird's routes, shapes, errors and scopes."""

from __future__ import annotations

import gzip
import json
import time

import pytest
from starlette.testclient import TestClient

from evtrack.client import Client, RemoteError
from evtrack.server.app import create_app

from . import reference
from .conftest import FIXTURE, data
from .test_endpoints import GET_EVENTS, RANGES, STATS, USERS, _normalise

SEED_BODY = """{
      "event_id": "e123456",
      "event_type": "page_view",
      "user_id": "user_abc",
      "session_id": "sess_123",
      "timestamp": "2023-07-15 14:30:00",
      "platform": "web",
      "app_version": "1.2.3",
      "device_type": "desktop",
      "os": "Windows",
      "country": "US",
      "properties": "{\\"page\\":\\"home\\",\\"referrer\\":\\"google\\"}"
    }"""


# The client address a request from this machine comes from: `GET /tokens` answers no other.
LOOPBACK = ("127.0.0.1", 50000)


@pytest.fixture
def http(engine):
    with TestClient(create_app(engine), base_url="http://127.0.0.1:7181", client=LOOPBACK) as client:
        yield client


@pytest.fixture
def fresh_http(fresh_engine):
    with TestClient(create_app(fresh_engine), base_url="http://127.0.0.1:7181", client=LOOPBACK) as client:
        yield client


def admin(engine) -> dict:
    return {"Authorization": f"Bearer {engine.tokens.admin.token}"}


def token_of(engine, name: str) -> str:
    return engine.tokens.get(name).token


# -- the description's four curl calls ------------------------------------------------------------
def test_seed_ingest_of_one_pretty_printed_object_stores_one_event(fresh_engine, fresh_http):
    response = fresh_http.post("/v0/events?name=events", headers=admin(fresh_engine), content=SEED_BODY)
    assert response.status_code == 202
    assert response.text == '{"successful_rows":1,"quarantined_rows":0}'
    [row] = eventually(lambda: data(fresh_engine.sql("SELECT * FROM events")))
    assert row["event_id"] == "e123456" and row["timestamp"] == "2023-07-15 14:30:00"


def eventually(read, seconds: float = 10.0):
    """What ``read`` returns once it is not empty: rows accepted with 202 are stored at the next flush."""
    deadline = time.monotonic() + seconds
    while not (found := read()) and time.monotonic() < deadline:
        time.sleep(0.05)
    return found


def test_seed_endpoint_calls(engine, http, rows):
    t = engine.tokens.admin.token
    got = http.get(f"/v0/pipes/get_events.json?token={t}&event_type=page_view&platform=web"
                   "&start_date=2023-07-01%2000:00:00&end_date=2023-07-31%2023:59:59&limit=50")
    assert got.status_code == 200 and got.headers["content-type"] == "application/json"
    assert _normalise(got.json()["data"]) == _normalise(reference.get_events(
        rows, event_type="page_view", platform="web", start_date="2023-07-01 00:00:00",
        end_date="2023-07-31 23:59:59", limit=50))
    got = http.get(f"/v0/pipes/user_activity.json?token={t}&user_id=user_abc"
                   "&start_date=2023-01-01%2000:00:00&end_date=2023-12-31%2023:59:59")
    assert got.json()["data"] == reference.user_activity(rows, "user_abc", "2023-01-01 00:00:00", "2023-12-31 23:59:59")
    got = http.get(f"/v0/pipes/event_stats.json?token={t}&start_date=2023-06-01%2000:00:00"
                   "&end_date=2023-06-30%2023:59:59&platform=mobile")
    assert got.json()["data"] == reference.event_stats(rows, "2023-06-01 00:00:00", "2023-06-30 23:59:59", "mobile")
    assert set(got.json()) == {"meta", "data", "rows", "statistics"}


# -- one matrix, three ways: engine, client over HTTP, raw HTTP -----------------------------------
CALLS = ([("get_events", p) for p in GET_EVENTS] + [("event_stats", p) for p in STATS]
         + [("user_activity", {"user_id": u, **r}) for u in USERS[:3] for r in RANGES])


@pytest.mark.parametrize("pipe, params", CALLS, ids=[f"{p}-{i}" for i, (p, _) in enumerate(CALLS)])
def test_same_rows_through_engine_client_and_raw_http(engine, http, pipe, params):
    direct = data(engine.query_pipe(pipe, params))
    client = Client("http://127.0.0.1:7181", token_of(engine, "dashboard"), http=http)
    assert data(client.query_pipe(pipe, params)) == direct
    raw = http.get(f"/v0/pipes/{pipe}.json", params={**params, "token": token_of(engine, "dashboard")})
    assert raw.json()["data"] == direct


def test_post_parameters_as_form_and_json(engine, http):
    expected = data(engine.query_pipe("event_stats", {"platform": "web"}))
    form = http.post("/v0/pipes/event_stats.json", headers=admin(engine), data={"platform": "web"})
    body = http.post("/v0/pipes/event_stats.json", headers=admin(engine), json={"platform": "web"})
    assert form.json()["data"] == body.json()["data"] == expected


@pytest.mark.parametrize("fmt, media_type", [("csv", "text/csv"), ("ndjson", "application/x-ndjson"),
                                             ("parquet", "application/vnd.apache.parquet")])
def test_formats(engine, http, fmt, media_type):
    response = http.get(f"/v0/pipes/event_stats.{fmt}", headers=admin(engine))
    assert response.status_code == 200 and response.headers["content-type"].startswith(media_type)
    if fmt == "parquet":
        assert response.content[:4] == b"PAR1"


def test_q_over_the_pipe(engine, http, rows):
    response = http.get("/v0/pipes/get_events.json", headers=admin(engine),
                        params={"limit": "10000", "q": "SELECT count() AS n FROM _"})
    assert response.json()["data"] == [{"n": len(rows)}]


# -- every failure path, through one assertion helper --------------------------------------------
DOCUMENTATION = "https://www.tinybird.co/docs/api-reference"


def assert_error(response, status: int, text: str, *, plain: bool = False) -> None:
    """Tinybird's error shape: JSON ``{"error", "documentation"}``, or one plain-text line on the Events API."""
    assert response.status_code == status, response.text
    if plain:
        assert response.text == text + "\n"
    else:
        assert response.json() == {"error": text, "documentation": DOCUMENTATION}


def bearer(engine, token: str | None) -> dict:
    """The Authorization header of the store's token named ``token``; none for None."""
    return {} if token is None else {"Authorization": f"Bearer {token_of(engine, token)}"}


ADMIN = "admin token"
JSON_FAILURES = [
    pytest.param("/v0/pipes/nope.json", ADMIN, 404, "The pipe 'nope' does not exist", id="pipe-unknown"),
    pytest.param("/v0/pipes/get_events.xml", ADMIN, 400,
                 "Format 'xml' is not supported; use .json, .csv, .ndjson, .parquet or .prometheus", id="pipe-format-unknown"),
    pytest.param("/v0/pipes/get_events.json?start_date=2023-07-01", ADMIN, 400,
                 "Template Syntax Error: Error validating '2023-07-01' to type DateTime", id="pipe-datetime-malformed"),
    pytest.param("/v0/pipes/user_activity.json", ADMIN, 400, "user_id (String) query param is required",
                 id="pipe-required-param-missing"),
    pytest.param("/v0/pipes/get_events.json?limit=20000", ADMIN, 400, "limit must be between 0 and 10000",
                 id="pipe-limit-out-of-range"),
    pytest.param("/v0/pipes/get_events.json?q=%25select%201", ADMIN, 400, "'q' parameter doesn't support templates",
                 id="pipe-q-templated"),
    pytest.param("/v0/pipes/get_events.json", None, 403, "invalid authentication token", id="pipe-no-token"),
    pytest.param("/v0/pipes/get_events.json?token=wrong", None, 403, "invalid authentication token",
                 id="pipe-wrong-token"),
    pytest.param("/v0/pipes/get_events.json", "tracker", 403,
                 "The token you have provided doesn't have access to this resource", id="pipe-append-token"),
    pytest.param("/v0/sql?q=select%20count()%20from%20events", "tracker", 403,
                 "token needs scope DATASOURCES:READ:events", id="sql-append-token"),
    pytest.param("/v0/sql", ADMIN, 400, "missing q parameter. example q=select%201", id="sql-q-missing"),
    pytest.param("/v0/sql?q=SELECT%20*%20FROM%20file('/etc/passwd')", ADMIN, 400,
                 "[Error] DB::Exception: Usage of function file is restricted. "
                 "Contact support@tinybird.co if you require access to this feature", id="sql-table-function"),
    pytest.param("/v0/sql?q=DROP%20TABLE%20events", ADMIN, 400,
                 "[Error] DB::Exception: Only SELECT or DESCRIBE queries are supported. Got: DropQuery", id="sql-write"),
    pytest.param("/v0/workspace", "dashboard", 403, "token needs scope ADMIN", id="workspace-read-token"),
    pytest.param("/v0/datasources/nope", ADMIN, 404, "Data Source 'nope' not found", id="datasource-unknown"),
]


@pytest.mark.parametrize("url, token, status, text", JSON_FAILURES)
def test_failure_answers_tinybirds_json_error(engine, http, url, token, status, text):
    assert_error(http.get(url, headers=bearer(engine, token)), status, text)


EVENTS_FAILURES = [
    pytest.param("/v0/events", ADMIN, {}, b"{}", 400, "Missing 'name' parameter", id="name-missing"),
    pytest.param("/v0/events?name=events", None, {}, b"{}", 403, "Invalid token", id="no-token"),
    pytest.param("/v0/events?name=events", "dashboard", {}, b"{}", 403, "Invalid token", id="read-token"),
    pytest.param("/v0/events?name=events&token=wrong", None, {}, b"{}", 403, "Invalid token", id="wrong-token"),
    pytest.param("/v0/events?name=nope", ADMIN, {}, b"{}", 404, "Data Source 'nope' not found",
                 id="datasource-unknown"),
    pytest.param("/v0/events?name=events", ADMIN, {"Content-Encoding": "gzip"}, b"not gzip", 400,
                 "Invalid gzip body: incorrect header check", id="gzip-invalid"),
]


@pytest.mark.parametrize("url, token, headers, body, status, text", EVENTS_FAILURES)
def test_events_api_failure_answers_plain_text(engine, http, url, token, headers, body, status, text):
    response = http.post(url, headers={**bearer(engine, token), **headers}, content=body)
    assert_error(response, status, text, plain=True)


BROKEN_VALUES = {"empty": "", "percent": "%", "quote": "'", "backslash": "\\",
                 "sql-injection": "2023-07-01 00:00:00' OR 1=1 --", "nul": "\x00", "400-digits": "9" * 400}


@pytest.mark.parametrize("pipe", ["get_events", "event_stats"])
@pytest.mark.parametrize("value", BROKEN_VALUES.values(), ids=BROKEN_VALUES.keys())
def test_template_syntax_of_a_broken_value_is_never_a_500(engine, http, pipe, value):
    response = http.get(f"/v0/pipes/{pipe}.json", headers=admin(engine),
                        params={"start_date": value, "platform": value, "event_type": value})
    assert response.status_code in (200, 400), response.text


# -- ingestion over HTTP ----------------------------------------------------------------------
def test_events_wait_true_answers_200(fresh_engine, fresh_http):
    response = fresh_http.post("/v0/events?name=events&wait=true", headers=admin(fresh_engine),
                               content=b'{"event_type":"a","timestamp":"2023-01-01 00:00:00"}\n')
    assert (response.status_code, response.json()) == (200, {"successful_rows": 1, "quarantined_rows": 0})


@pytest.mark.parametrize("header", [True, False], ids=["content-encoding", "magic-bytes"])
def test_events_gzip(fresh_engine, fresh_http, header):
    headers = {**admin(fresh_engine), **({"Content-Encoding": "gzip"} if header else {})}
    response = fresh_http.post("/v0/events?name=events&wait=true", headers=headers,
                               content=gzip.compress(FIXTURE.read_bytes()))
    assert response.json() == {"successful_rows": 6000, "quarantined_rows": 0}


def test_events_json_array_and_ndjson_with_bad_lines(fresh_engine, fresh_http):
    array = json.dumps([{"event_type": "a", "timestamp": "2023-01-01 00:00:00"},
                        {"event_type": "b", "timestamp": "2023-01-01 00:00:01"}])
    response = fresh_http.post("/v0/events?name=events&wait=true", headers=admin(fresh_engine), content=array)
    assert response.json() == {"successful_rows": 2, "quarantined_rows": 0}
    ndjson = b'{"event_type":"a","timestamp":"2023-01-01 00:00:02"}\nnot json\n\n{"event_type":"c"}\n'
    response = fresh_http.post("/v0/events?name=events&wait=true", headers=admin(fresh_engine), content=ndjson)
    assert response.json() == {"successful_rows": 1, "quarantined_rows": 2}


def test_tracker_token_appends_and_cannot_read(fresh_engine, fresh_http):
    tracker = token_of(fresh_engine, "tracker")
    ok = fresh_http.post(f"/v0/events?name=events&token={tracker}", content=SEED_BODY)
    assert ok.status_code == 202
    assert fresh_http.get(f"/v0/pipes/get_events.json?token={tracker}").status_code == 403


def test_a_datasource_read_token_reads_its_description_and_an_append_token_does_not(fresh_engine, fresh_http):
    made = fresh_http.post("/v0/tokens?name=reader&scope=DATASOURCES:READ:events", headers=admin(fresh_engine))
    described = fresh_http.get(f"/v0/datasources/events?token={made.json()['token']}")
    assert described.status_code == 200 and "event_type" in [c["name"] for c in described.json()["columns"]]
    tracker = token_of(fresh_engine, "tracker")
    assert_error(fresh_http.get(f"/v0/datasources/events?token={tracker}"), 403,
                 "token needs scope DATASOURCES:READ:events")


def test_a_token_for_one_pipe_cannot_read_another(fresh_engine, fresh_http):
    made = fresh_http.post("/v0/tokens?name=only_stats&scope=PIPES:READ:event_stats", headers=admin(fresh_engine))
    value = made.json()["token"]
    assert fresh_http.get(f"/v0/pipes/event_stats.json?token={value}").status_code == 200
    assert_error(fresh_http.get(f"/v0/pipes/get_events.json?token={value}"), 403,
                 "The token you have provided doesn't have access to this resource")


def test_tokens_route_answers_on_loopback(engine, http):
    body = http.get("/tokens").json()
    assert set(body) == {"user_token", "admin_token", "workspace_admin_token"}
    assert body["admin_token"] == engine.tokens.admin.token


def test_tokens_route_is_hidden_from_other_hosts(engine):
    with TestClient(create_app(engine), client=("203.0.113.9", 5000)) as remote:
        assert remote.get("/tokens").status_code == 404


def test_sql_api(engine, http, rows):
    response = http.get("/v0/sql", headers=admin(engine), params={"q": "SELECT count() AS n FROM events FINAL FORMAT JSON"})
    assert response.json()["data"] == [{"n": len(rows)}]
    csv = http.post("/v0/sql", headers=admin(engine), content="SELECT count() AS n FROM events FINAL FORMAT CSV")
    assert csv.text == f"{len(rows)}\n"
    piped = http.get("/v0/sql", headers=admin(engine), params={"q": "SELECT count() AS n FROM _", "pipeline": "event_stats"})
    assert piped.json()["data"] == [{"n": len(reference.event_stats(rows))}]


def test_client_errors_carry_status_and_text(engine, http):
    client = Client("http://127.0.0.1:7181", "wrong", http=http)
    with pytest.raises(RemoteError) as caught:
        client.query_pipe("get_events", {})
    assert (caught.value.status, caught.value.text) == (403, "invalid authentication token")


# -- regressions ----------------------------------------------------------------------------------
def test_q_reads_only_the_pipe_result(engine, http):
    dashboard = {"Authorization": f"Bearer {token_of(engine, 'dashboard')}"}
    for q, table in [("SELECT event_id, properties FROM evtrack.events", "evtrack.events"),
                     ("SELECT name FROM system.tables", "system.tables"),
                     ("SELECT * FROM events_quarantine", "events_quarantine")]:
        assert_error(http.get("/v0/pipes/get_events.json", headers=dashboard, params={"q": q}), 400,
                     f"[Error] Resource '{table}' not found")


def test_sql_renders_only_endpoints_it_reads(engine, http, rows):
    response = http.get("/v0/sql", headers=admin(engine),
                        params={"q": "SELECT count() AS n FROM events FINAL WHERE os = 'user_activity'"})
    assert response.status_code == 200 and response.json()["data"] == [{"n": 0}]
    piped = http.get("/v0/sql", headers=admin(engine), params={"q": "SELECT count() AS n FROM event_stats"})
    assert piped.json()["data"] == [{"n": len(reference.event_stats(rows))}]


def test_append_route_keeps_the_body_limits(fresh_engine):
    with TestClient(create_app(fresh_engine, max_body=64 * 1024), base_url="http://127.0.0.1:7181") as small:
        bomb = gzip.compress(b"\n" * (8 * 1024 * 1024))
        raw = small.post("/v0/datasources?name=events&mode=append&format=ndjson", headers=admin(fresh_engine),
                         content=bomb)
        upload = small.post("/v0/datasources?name=events&mode=append&format=ndjson", headers=admin(fresh_engine),
                            files={"ndjson": ("big.ndjson", b"x" * (65 * 1024))})
    assert_error(raw, 413, "The body inflates to more than 65536 bytes")
    assert_error(upload, 413, "The body is larger than 65536 bytes")


@pytest.mark.parametrize("body, stored, quarantined", [
    # a lone surrogate: the JSON parser of ClickHouse refuses it, so the line is quarantined (not a 500)
    ('{"event_type": "a", "timestamp": "2023-01-01 00:00:00", "user_id": "\\ud800"}', 0, 1),
    # a number beyond Float64: ClickHouse's parser refuses it too (the text is passed on as sent)
    ('{"event_type": "a", "timestamp": "2023-01-01 00:00:00", "properties": {"big": 1e400}}', 0, 1),
    ('[{"event_type": "a", "timestamp": "2023-01-01 00:00:00"},\n {"event_type": "b"}]', 1, 1),
    ('[1, {"event_type": "a", "timestamp": "2023-01-01 00:00:00"}]', 0, 1),  # not an array of objects: one line
])
def test_json_documents_are_split_not_rewritten(fresh_engine, fresh_http, body, stored, quarantined):
    response = fresh_http.post("/v0/events?name=events&wait=true", headers=admin(fresh_engine), content=body)
    assert response.status_code == 200, response.text
    assert response.json() == {"successful_rows": stored, "quarantined_rows": quarantined}


def test_names_are_validated(fresh_engine, fresh_http):
    response = fresh_http.post("/v0/datasources", headers=admin(fresh_engine),
                               data={"name": "x`y", "schema": "`a` String `json:$.a`"})
    assert_error(response, 400, "Invalid datasource name 'x`y': use letters, digits and underscores, "
                                "not starting with a digit")


def test_the_admin_tokens_scopes_cannot_be_replaced(fresh_engine, fresh_http):
    response = fresh_http.post("/v0/tokens?name=admin%20token&scope=PIPES:READ:get_events", headers=admin(fresh_engine))
    assert_error(response, 400, "The scopes of 'admin token', the workspace's admin token, cannot be changed")
    assert fresh_http.get("/tokens").json()["admin_token"] == fresh_engine.tokens.admin.token


def test_node_analysis_checks_a_materialized_node_against_its_target(fresh_engine, fresh_http):
    """What `tb push` asks of a materialized pipe before creating it (its checker pipe, standard nodes)."""
    headers = admin(fresh_engine)

    def checker(sql: str) -> None:
        body = {"name": "copy__checker", "nodes": [{"name": "rows", "sql": sql}]}
        assert fresh_http.post("/v0/pipes", json=body, headers=headers).status_code == 200

    checker("SELECT user_id, timestamp, event_id, event_type FROM events")
    answer = fresh_http.get("/v0/pipes/copy__checker/nodes/rows/analysis",
                            params={"datasource": "events_by_user", "dry_run": "true"}, headers=headers)
    assert answer.status_code == 200, answer.text
    assert answer.json()["warnings"] == []
    assert [c["name"] for c in answer.json()["analysis"]["columns"]] == ["user_id", "timestamp", "event_id", "event_type"]

    checker("SELECT user_id, timestamp AS ts FROM events")  # as ClickHouse: 'ts' ignored, the rest defaulted
    extra = fresh_http.get("/v0/pipes/copy__checker/nodes/rows/analysis",
                           params={"datasource": "events_by_user"}, headers=headers)
    assert extra.status_code == 200, extra.text
    checker("SELECT user_id, [1, 2] AS timestamp FROM events")
    refused = fresh_http.get("/v0/pipes/copy__checker/nodes/rows/analysis",
                             params={"datasource": "events_by_user"}, headers=headers)
    assert (refused.status_code, refused.json()["error"]) == (400, (
        "pipe 'copy__checker': the materialized node 'rows' returns columns of types the datasource 'events_by_user' "
        "cannot take: 'timestamp' is Array(UInt8), the datasource's 'timestamp' is DateTime"))
    missing = fresh_http.get("/v0/pipes/copy__checker/nodes/nope/analysis", headers=headers)
    assert missing.status_code == 404
