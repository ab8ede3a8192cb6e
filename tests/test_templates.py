"""Template errors carry Tinybird's own texts and statuses (tinybird-cli's engine renders them)."""

from __future__ import annotations

import json

import pytest

from evtrack.errors import EvtrackError


def error_of(engine, pipe, params):
    with pytest.raises(EvtrackError) as caught:
        engine.query_pipe(pipe, params)
    return caught.value.status, caught.value.message


@pytest.mark.parametrize(
    "pipe, params, status, message",
    [
        ("get_events", {"start_date": "2023-07-01"}, 400, "Template Syntax Error: Error validating '2023-07-01' to type DateTime"),
        ("get_events", {"end_date": "yesterday"}, 400, "Template Syntax Error: Error validating 'yesterday' to type DateTime"),
        ("event_stats", {"start_date": "2023-06-01"}, 400, "Template Syntax Error: Error validating '2023-06-01' to type DateTime"),
        ("user_activity", {"user_id": "u", "end_date": "2023/07/01"}, 400, "Template Syntax Error: Error validating '2023/07/01' to type DateTime"),
        ("get_events", {"limit": "abc"}, 400, "Template Syntax Error: Error validating 'abc' to type Int32"),
        ("get_events", {"offset": "1.5"}, 400, "Template Syntax Error: Error validating '1.5' to type Int32"),
        ("get_events", {"limit": "10001"}, 400, "limit must be between 0 and 10000"),
        ("get_events", {"limit": "-1"}, 400, "limit must be between 0 and 10000"),
        ("get_events", {"offset": "-5"}, 400, "offset must be 0 or more"),
        ("user_activity", {}, 400, "user_id (String) query param is required"),
        ("user_activity", {"start_date": "2023-01-01 00:00:00"}, 400, "user_id (String) query param is required"),
        ("nope", {}, 404, "The pipe 'nope' does not exist"),
    ],
)
def test_template_error_texts(engine, pipe, params, status, message):
    assert error_of(engine, pipe, params) == (status, message)


def test_q_with_a_template_is_refused(engine):
    with pytest.raises(EvtrackError) as caught:
        engine.query_pipe("get_events", {}, q="% SELECT 1")
    assert (caught.value.status, caught.value.message) == (400, "'q' parameter doesn't support templates")


def test_reserved_names_never_reach_the_template(fresh_engine):
    from evtrack.project import parse_pipe

    echo = parse_pipe("echo", """NODE echo
SQL >
    %
    SELECT {{ String(token, 'absent') }} AS t, {{ String(pipeline, 'absent') }} AS p, {{ String(other, 'absent') }} AS o

TYPE endpoint
""")
    fresh_engine.deploy_pipe(echo)
    body = fresh_engine.query_pipe("echo", {"token": "secret", "pipeline": "x", "other": "passed"})
    assert json.loads(body)["data"] == [{"t": "absent", "p": "absent", "o": "passed"}]


def test_format_and_q_cannot_be_template_variables():
    from evtrack.errors import BadRequest
    from evtrack.project import parse_pipe

    with pytest.raises(BadRequest, match='"format" can not be used as a variable name'):
        parse_pipe("bad", "NODE n\nSQL >\n    %\n    SELECT {{ String(format, 'x') }}\n\nTYPE endpoint\n")


@pytest.mark.parametrize("query, message", [
    ("SELECT * FROM file('/etc/passwd', 'LineAsString')", "Usage of function file is restricted"),
    ("SELECT * FROM url('http://127.0.0.1:1/x', 'CSV')", "Usage of function url is restricted"),
    ("INSERT INTO events (event_type) VALUES ('x')", "Only SELECT or DESCRIBE queries are supported"),
    ("DROP TABLE events", "Only SELECT or DESCRIBE queries are supported"),
    ("SELECT * FROM system.tables", "Resource 'system.tables' not found"),
    ("SELECT * FROM secrets", "Resource 'secrets' not found"),
])
def test_sql_is_read_only_over_datasources(engine, query, message):
    with pytest.raises(EvtrackError) as caught:
        engine.sql(query)
    assert caught.value.status == 400 and message in caught.value.message


def test_sql_format_suffix_picks_the_output(engine):
    assert engine.sql("SELECT count() AS n FROM events WHERE user_id = 'user_abc' FORMAT CSVWithNames") == b'"n"\n7\n'


def test_the_endpoint_node_renders_first_and_a_node_only_when_read(fresh_engine):
    """As Tinybird renders a pipe: the endpoint's own `error()` answers before an earlier node's
    missing parameter, and a node the query does not read is never rendered."""
    from evtrack.project import parse_pipe

    pipe = parse_pipe("bounded", """NODE bounds
SQL >
    %
    SELECT {{ DateTime(start_date) }} AS since

NODE unused
SQL >
    %
    SELECT {{ Int32(never_given) }} AS x

NODE bounded
SQL >
    %
    {% if not defined(start_date) %}
        {{ error('start_date (DateTime) query param is required') }}
    {% end %}
    SELECT since FROM bounds

TYPE endpoint
""")
    fresh_engine.deploy_pipe(pipe)
    assert error_of(fresh_engine, "bounded", {}) == (400, "start_date (DateTime) query param is required")
    body = fresh_engine.query_pipe("bounded", {"start_date": "2024-01-02 03:04:05"})
    assert json.loads(body)["data"] == [{"since": "2024-01-02 03:04:05"}]
