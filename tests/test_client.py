"""The client against Tinybird Cloud's contract, stood in for by httpx.MockTransport (no network)."""

from __future__ import annotations

import gzip
import json

import httpx
import pytest

from evtrack.client import Client, RemoteError
from evtrack.settings import Secret, resolve

HOST = "https://api.europe-west2.gcp.tinybird.co"


def cloud(handler):
    return Client(HOST, "p.cloud", http=httpx.Client(base_url=HOST, transport=httpx.MockTransport(handler)))


def test_send_posts_gzipped_ndjson_to_the_events_api_with_wait():
    seen = {}

    def handler(request: httpx.Request) -> httpx.Response:
        seen.update(url=str(request.url), headers=dict(request.headers), body=gzip.decompress(request.content))
        return httpx.Response(200, json={"successful_rows": 2, "quarantined_rows": 0})

    answer, retries = cloud(handler).send("events", b'{"a":1}\n{"a":2}\n')
    assert (answer, retries) == ({"successful_rows": 2, "quarantined_rows": 0}, 0)
    assert seen["url"] == f"{HOST}/v0/events?name=events&wait=true"
    assert seen["headers"]["authorization"] == "Bearer p.cloud"
    assert seen["headers"]["content-encoding"] == "gzip"
    assert seen["headers"]["content-type"] == "application/x-ndjson"
    assert seen["body"] == b'{"a":1}\n{"a":2}\n'


def test_no_gzip_to_loopback_where_it_only_costs_cpu():
    seen = {}

    def handler(request):
        seen.update(headers=dict(request.headers), body=request.content)
        return httpx.Response(200, json={"successful_rows": 1, "quarantined_rows": 0})

    local = Client("http://127.0.0.1:7181", "t", http=httpx.Client(transport=httpx.MockTransport(handler),
                                                                  base_url="http://127.0.0.1:7181"))
    local.send("events", b'{"a":1}\n')
    assert "content-encoding" not in seen["headers"] and seen["body"] == b'{"a":1}\n'


@pytest.mark.parametrize("status, body, text", [
    (400, "Missing 'name' parameter\n", "Missing 'name' parameter"),
    (403, "Invalid token\n", "Invalid token"),
    (429, "Too many requests\n", "Too many requests"),
    (503, "Service temporarily unavailable, no data ingested, please retry again\n",
     "Service temporarily unavailable, no data ingested, please retry again"),
])
def test_events_api_plain_text_errors(status, body, text):
    client = cloud(lambda request: httpx.Response(status, text=body, headers={"Content-Type": "text/plain"}))
    with pytest.raises(RemoteError) as caught:
        client.send("events", b"{}\n")
    assert (caught.value.status, caught.value.text) == (status, text)
    assert caught.value.message == f"{text} (HTTP {status})"


@pytest.mark.parametrize("status, error", [
    (403, "invalid authentication token"),
    (403, "The token you have provided doesn't have access to this resource"),
    (404, "The pipe 'nope' does not exist"),
    (400, "Template Syntax Error: Error validating '2023-07-01' to type DateTime"),
])
def test_json_errors_elsewhere(status, error):
    client = cloud(lambda request: httpx.Response(status, json={"error": error, "documentation": "https://docs"}))
    with pytest.raises(RemoteError) as caught:
        client.query_pipe("get_events", {"start_date": "2023-07-01"})
    assert (caught.value.status, caught.value.text) == (status, error)


def test_query_pipe_passes_parameters_in_the_query_string():
    seen = {}

    def handler(request):
        seen["url"] = request.url
        return httpx.Response(200, json={"meta": [], "data": [], "rows": 0, "statistics": {}})

    cloud(handler).query_pipe("user_activity", {"user_id": "user_abc", "start_date": "2023-01-01 00:00:00"})
    assert seen["url"].path == "/v0/pipes/user_activity.json"
    assert dict(seen["url"].params) == {"user_id": "user_abc", "start_date": "2023-01-01 00:00:00"}


def test_long_calls_go_as_post():
    seen = {}

    def handler(request):
        seen.update(method=request.method, body=request.content)
        return httpx.Response(200, text="1\n")

    cloud(handler).sql("SELECT " + "1 + " * 3000 + "1")
    assert seen["method"] == "POST" and seen["body"].startswith(b"SELECT 1 + 1")


def test_unreachable_host_is_one_clear_error():
    def handler(request):
        raise httpx.ConnectError("connection refused")

    with pytest.raises(Exception) as caught:
        cloud(handler).sql("SELECT 1")
    assert caught.value.message == f"cannot reach {HOST}: connection refused"


# -- target resolution, in tinybird-cli's order ------------------------------------------------------
def test_flags_win_over_environment_and_tinyb(tmp_path, monkeypatch):
    (tmp_path / ".tinyb").write_text(json.dumps({"host": "https://file", "token": "file"}))
    monkeypatch.setenv("TB_HOST", "https://env")
    monkeypatch.setenv("TB_TOKEN", "env")
    target = resolve(tmp_path / "store", "https://flag", "flag", cwd=tmp_path)
    assert (target.host, target.token.reveal(), target.origin) == ("https://flag", "flag", "--host")
    target = resolve(tmp_path / "store", cwd=tmp_path)
    assert (target.host, target.token.reveal(), target.origin) == ("https://env", "env", "TB_HOST")
    monkeypatch.delenv("TB_HOST")
    monkeypatch.delenv("TB_TOKEN")
    target = resolve(tmp_path / "store", cwd=tmp_path)
    assert (target.host, target.token.reveal(), target.origin) == ("https://file", "file", ".tinyb")
    (tmp_path / ".tinyb").unlink()
    assert not resolve(tmp_path / "store", cwd=tmp_path).remote


def test_a_host_without_a_token_names_every_place_to_set_one(tmp_path):
    with pytest.raises(Exception) as caught:
        resolve(tmp_path, "https://flag", None, cwd=tmp_path)
    assert caught.value.message == 'no token for https://flag: pass --token, set TB_TOKEN, or add "token" to .tinyb'


def test_tokens_never_print():
    secret = Secret("p.very-secret")
    assert "very-secret" not in repr(secret) + str(secret) + f"{secret}"
    assert "very-secret" not in repr(resolve.__globals__["Target"](data=".", host="h", token=secret))
