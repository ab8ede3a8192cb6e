"""The routes Forward `tb` calls on Tinybird Local, in process: what each answers, field by field,
as the CLI's source reads it (`build_common.py`, `deployment_common.py`, `client.py`)."""

from __future__ import annotations

import gzip
import json

import pytest
from starlette.testclient import TestClient

from evtrack.engine import Engine
from evtrack.server.app import create_app

from .conftest import ROOT

FILES = sorted(str(p.relative_to(ROOT)) for folder in ("datasources", "pipes") for p in (ROOT / folder).iterdir()
               if p.suffix in (".datasource", ".pipe"))
NO_CHANGES = {f"{change}_{kind}_names": [] for kind in ("datasource", "pipe", "data_connector")
              for change in ("new", "changed", "deleted")}
EVENT = {"event_type": "click", "user_id": "u1", "timestamp": "2024-03-01 10:00:00"}


def _parts(*names: str, extra: dict[str, str] | None = None) -> list:
    parts = [("context://", ("cli-version", "1.0.0", "text/plain"))]
    parts += [("data_project://", (name, (ROOT / name).read_text(), "text/plain")) for name in names]
    parts += [("data_project://", (name, text, "text/plain")) for name, text in (extra or {}).items()]
    return parts


@pytest.fixture
def served(tmp_path):
    with Engine.open(tmp_path / "store") as engine:
        workspace = engine.create_workspace("forward")
        with TestClient(create_app(engine), base_url="http://127.0.0.1:7181") as http:
            http.headers["Authorization"] = f"Bearer {workspace.tokens.admin.token}"
            yield http, workspace


def test_build_creates_then_reports_no_changes_then_deletes_what_is_absent(served):
    http, _ = served
    first = http.post("/v1/build", files=_parts(*FILES))
    assert first.status_code == 200
    assert first.json() == {"result": "success", "build": {
        **NO_CHANGES, "new_datasource_names": ["events", "events_by_day", "events_by_user", "events_sessions_by_type", "events_users_by_type"],
        "new_pipe_names": ["event_stats", "event_timeseries", "get_events", "ingest_errors", "metrics", "user_activity", "events_by_day_mv",
                           "events_by_user_mv", "events_sessions_by_type_mv", "events_users_by_type_mv"],
        "feedback": []}}
    assert http.post("/v1/build", files=_parts(*FILES)).json() == {"result": "success",
                                                                   "build": {**NO_CHANGES, "feedback": []}}
    fewer = [name for name in FILES if name != "pipes/event_timeseries.pipe"]
    assert http.post("/v1/build", files=_parts(*fewer)).json()["build"] == {
        **NO_CHANGES, "deleted_pipe_names": ["event_timeseries"], "feedback": []}


def test_build_names_each_file_it_cannot_build(served):
    http, workspace = served
    answer = http.post("/v1/build", files=_parts(*FILES, extra={
        "connections/kafka.connection": "TYPE kafka\n", "pipes/broken.pipe": "NODE n\nSQL >\n    SELECT 1\nTYPE nonsense\n"}))
    assert answer.status_code == 400
    errors = answer.json()["errors"]
    assert answer.json()["result"] == "failed"
    assert [e["filename"] for e in errors] == ["connections/kafka.connection", "pipes/broken.pipe"]
    assert errors[0]["error"] == "connections are not supported by evtrack serve"
    assert workspace.pipe_names() == []  # nothing of a failed build is applied


def test_appends_ndjson_gzip_and_csv_are_jobs_the_cli_can_poll(served):
    http, _ = served
    http.post("/v1/build", files=_parts(*FILES))
    ndjson = http.post("/v1/datasources/events/append?format=ndjson", content=gzip.compress(
        (json.dumps(EVENT) + "\n").encode()), headers={"Content-Type": "application/x-ndjson",
                                                      "Content-Encoding": "gzip"})
    assert ndjson.status_code == 200 and "error" not in ndjson.json()  # the CLI fails on any "error" field
    job = http.get(f"/v0/jobs/{ndjson.json()['id']}?debug=blocks,block_log").json()
    assert (job["kind"], job["status"], job["import_id"], job["statistics"]) == (
        "import", "done", ndjson.json()["id"], {"row_count": 1})
    with_header = "user_id,timestamp,event_type\nu2,2024-03-02 10:00:00,purchase\n"
    without_header = "e9,view,u3,s3,2024-03-03 10:00:00,web,1.0,phone,ios,FR,{}\n"
    for body in (with_header, without_header):
        csv = http.post("/v1/datasources/events/append?format=csv", content=body, headers={"Content-Type": "text/csv"})
        assert (csv.status_code, csv.json()["statistics"], csv.json()["quarantine_rows"]) == (200, {"row_count": 1}, 0)
    rows = http.get("/v0/sql", params={"q": "SELECT event_type, user_id, country FROM events ORDER BY timestamp "
                                             "FORMAT JSON"}).json()["data"]
    assert rows == [{"event_type": "click", "user_id": "u1", "country": ""},
                    {"event_type": "purchase", "user_id": "u2", "country": ""},
                    {"event_type": "view", "user_id": "u3", "country": "FR"}]
    refused = http.post("/v1/datasources/events/append?format=avro", content=b"x")
    assert (refused.status_code, refused.json()["error"]) == (
        400, "Format 'avro' is not supported: append NDJSON, CSV or Parquet")


def test_deploy_is_live_when_answered_and_deletes_a_datasource_only_when_allowed(served):
    http, _ = served
    deployed = http.post("/v1/deploy?auto_promote=true", files=_parts(*FILES)).json()
    assert deployed["result"] == "success"
    first = deployed["deployment"]
    assert (first["status"], first["live"], first["errors"], first["new_datasource_names"]) == (
        "data_ready", True, [], ["events", "events_by_day", "events_by_user", "events_sessions_by_type", "events_users_by_type"])
    assert http.get(f"/v1/deployments/{first['id']}").json()["deployment"]["live"] is True
    assert http.post("/v1/deploy?auto_promote=true", files=_parts(*FILES)).json()["result"] == "no_changes"

    readers = ("events_by_user", "user_activity", "get_events")  # the datasource, and the pipes that read it
    without = [name for name in FILES if not any(reader in name for reader in readers)]
    check = http.post("/v1/deploy?check=true&allow_destructive_operations=true", files=_parts(*without)).json()
    assert (check["result"], check["deployment"]["deleted_datasource_names"], check["deployment"]["deleted_pipe_names"]) \
        == ("success", ["events_by_user"], ["events_by_user_mv", "get_events", "user_activity"])
    refused = http.post("/v1/deploy?auto_promote=true", files=_parts(*without))
    assert (refused.status_code, refused.json()["result"], refused.json()["deployment"]["errors"]) == (400, "failed", [
        {"filename": "", "error": "The deployment would delete events_by_user.datasource and its data: deploy with "
                                  "--allow-destructive-operations to delete it"}])
    allowed = http.post("/v1/deploy?auto_promote=true&allow_destructive_operations=true", files=_parts(*without))
    assert allowed.json()["deployment"]["deleted_datasource_names"] == ["events_by_user"]
    listed = http.get("/v1/deployments").json()["deployments"]
    assert [(d["id"], d["live"], d["status"]) for d in listed] == [(allowed.json()["deployment"]["id"], True, "data_ready")]
    every = http.get("/v1/deployments?include_deleted=true").json()["deployments"]
    assert [d["status"] for d in every][:-1] == ["deleted"] * (len(every) - 1)  # oldest first
    assert http.get(f"/v1/deployments/{first['id']}").json()["deployment"]["status"] == "deleted"


def test_version_example_url_and_variables(served):
    http, workspace = served
    version = http.get("/version")
    assert (version.headers["content-type"], version.text) == ("text/plain", "evtrack 0.1.0")
    example = http.get("/examples/query.http?format=json&pipe=get_events&q=&token=T")
    assert (example.headers["content-type"], example.text) == (
        "text/plain", "http://127.0.0.1:7181/v0/pipes/get_events.json?token=T")
    assert http.get("/v0/variables/API_KEY").status_code == 404
    created = http.post("/v0/variables", data={"name": "API_KEY", "value": "one"}).json()
    assert (created["name"], created["type"], "value" in created) == ("API_KEY", "secret", False)
    assert http.put("/v0/variables/API_KEY", data={"value": "two"}).status_code == 200
    assert [v["name"] for v in http.get("/v0/variables").json()["variables"]] == ["API_KEY"]
    assert http.delete("/v0/variables/API_KEY").status_code == 200
    assert http.get("/v0/variables").json() == {"variables": []}


def test_jobs_are_listed_newest_first_filtered_and_only_in_their_workspace(served):
    http, workspace = served
    http.post("/v1/build", files=_parts(*FILES))
    ids = [http.post("/v1/datasources/events/append?format=ndjson", content=json.dumps(EVENT) + "\n",
                     headers={"Content-Type": "application/x-ndjson"}).json()["id"] for _ in range(2)]
    listed = http.get("/v0/jobs")
    assert listed.status_code == 200
    jobs = listed.json()["jobs"]
    assert [job["id"] for job in jobs] == ids[::-1]
    assert [(job["kind"], job["status"], job["job_url"]) for job in jobs] == [
        ("import", "done", f"http://127.0.0.1:7181/v0/jobs/{i}") for i in ids[::-1]]
    assert all(job["created_at"] and job["updated_at"] for job in jobs)  # `tb job ls` prints both
    assert [job["id"] for job in http.get("/v0/jobs?kind=import&status=done").json()["jobs"]] == ids[::-1]
    assert http.get("/v0/jobs?status=error").json() == {"jobs": []}
    assert http.get("/v0/jobs?kind=copy").json() == {"jobs": []}
    other = http.app.state.engine.create_workspace("other").tokens.admin.token
    assert http.get("/v0/jobs", headers={"Authorization": f"Bearer {other}"}).json() == {"jobs": []}
    assert http.get(f"/v0/jobs/{ids[0]}", headers={"Authorization": f"Bearer {other}"}).status_code == 404
    assert http.get("/v0/jobs", headers={"Authorization": "Bearer nope"}).status_code == 403


def test_v1_workspace_is_the_tokens_workspace(served):
    http, workspace = served
    answer = http.get("/v1/workspace")
    assert answer.status_code == 200
    assert (answer.json()["id"], answer.json()["name"]) == (workspace.id, "forward")


def test_a_deployment_whose_sql_fails_is_refused_when_checked_or_staged(served):
    """`tb deploy --check` and `tb deployment create` deploy the project into a scratch database first:
    a pipe whose SQL cannot run fails them under its file name, and the live deployment stays alone."""
    http, _ = served
    deployed = http.post("/v1/deploy?auto_promote=true", files=_parts(*FILES)).json()["deployment"]
    broken = {"pipes/broken.pipe": "NODE broken\nSQL >\n    SELECT no_such_column FROM events\n\nTYPE endpoint\n"}
    for query in ("check=true", "allow_destructive_operations=false"):
        answer = http.post(f"/v1/deploy?{query}", files=_parts(*FILES, extra=broken))
        assert (answer.status_code, answer.json()["result"]) == (400, "failed"), answer.text
        (error,) = answer.json()["deployment"]["errors"]
        assert error["filename"] == "pipes/broken.pipe" and "no_such_column" in error["error"], error
    listed = http.get("/v1/deployments").json()["deployments"]
    assert [(d["id"], d["live"]) for d in listed] == [(deployed["id"], True)]
    assert http.get("/v0/pipes/broken").status_code == 404


def test_a_replace_needs_more_than_an_append_token(served):
    """The tracker's token, published in web pages, may append but not replace what is stored."""
    http, workspace = served
    assert http.post("/v1/deploy?auto_promote=true", files=_parts(*FILES)).json()["result"] == "success"
    tracker = {"Authorization": f"Bearer {workspace.tokens.get('tracker').token}",
               "Content-Type": "application/x-ndjson"}
    line = b'{"event_id":"r1","event_type":"click","timestamp":"2024-03-01 10:00:00"}\n'
    assert http.post("/v1/datasources/events/append?format=ndjson", content=line, headers=tracker).status_code == 200
    refused = http.post("/v1/datasources/events/replace?format=ndjson", content=b"", headers=tracker)
    assert (refused.status_code, refused.json()["error"]) == (403, "token needs scope DATASOURCES:CREATE")
    assert http.get("/v0/sql", params={"q": "SELECT count() AS n FROM events FORMAT JSON"}).json()["data"] == [{"n": 1}]
