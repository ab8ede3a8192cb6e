"""No SQL text can crash `evtrack serve`: ClickHouse's parser limits are applied before
tinybird-cli's SQL toolset (a C extension in the server's process) parses anything.

Before the guard, ``SELECT 1+1+...`` with 10,000 terms killed the server (exit 139), with any
token that may send SQL: the tracker's public append token on /v0/sql, a dashboard token or a
JWT through ``q=`` on an endpoint.
"""

from __future__ import annotations

import subprocess
import sys

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from evtrack.engine.sql.guard import MAX_QUERY_SIZE, SHORT
from evtrack.engine.tokens import TokenStore

from .served import Served, evtrack

# Shapes of deep or long expressions, each built to a depth (or length) n.
SHAPES = {
    "plus chain": lambda n: "SELECT " + "+".join(["1"] * n),
    "parentheses": lambda n: "SELECT " + "(" * n + "1" + ")" * n,
    "function calls": lambda n: "SELECT " + "abs(" * n + "1" + ")" * n,
    "arrays": lambda n: "SELECT " + "[" * n + "1" + "]" * n,
    "NOT chain": lambda n: "SELECT " + "NOT " * n + "1",
    "IN list": lambda n: "SELECT 1 IN (" + ",".join(map(str, range(n))) + ")",
    "AND chain": lambda n: "SELECT " + " AND ".join(["1=1"] * n),
    "subqueries": lambda n: "SELECT * FROM " + "(SELECT * FROM " * n + "events" + ")" * n,
}
TOO_DEEP = 10_000  # the plus chain at this depth crashed the toolset


def test_the_toolset_survives_every_shape_three_times_deeper_than_clickhouse_allows():
    """The margin the guard relies on: ClickHouse refuses an AST deeper than 1,000 nodes (about 500
    levels), and a text of at most SHORT characters nests at most SHORT levels; the toolset parses
    3,000 levels of each shape. Run in a child process, since a failure here is a crash."""
    assert SHORT <= 1000
    script = (
        "import sys\n"
        "from tinybird.sql_toolset import replace_tables, sql_get_used_tables\n"
        "for text in sys.stdin.read().split('\\0'):\n"
        "    for parse in (lambda: sql_get_used_tables(text, raising=True, table_functions=True),\n"
        "                  lambda: replace_tables(text, {})):\n"
        "        try:\n"
        "            parse()\n"
        "        except Exception:\n"
        "            pass  # a refusal is fine; only a crash fails\n"
        "print('survived')\n"
    )
    texts = "\0".join(shape(3000) for shape in SHAPES.values())
    child = subprocess.run([sys.executable, "-c", script], input=texts, capture_output=True, text=True, timeout=300)
    assert (child.returncode, child.stdout) == (0, "survived\n"), child.stderr[-2000:]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    data = tmp_path_factory.mktemp("guarded")
    served = Served(data)
    try:
        assert evtrack("--host", served.url, "--token", served.admin, "deploy").returncode == 0
        yield served
    finally:
        assert served.stop() == 0


def alive(server) -> bool:
    return server.process.poll() is None and httpx.get(f"{server.url}/tokens", timeout=30).status_code == 200


def test_the_tracker_token_gets_its_403_without_the_sql_being_parsed(server):
    deep = "SELECT count() FROM events WHERE " + SHAPES["plus chain"](TOO_DEEP).removeprefix("SELECT ") + " > 0"
    answer = httpx.post(f"{server.url}/v0/sql", params={"token": server.token("tracker")}, data={"q": deep}, timeout=30)
    assert (answer.status_code, answer.json()["error"]) == (403, "token needs scope DATASOURCES:READ:events")
    assert alive(server)


@pytest.mark.parametrize("shape", ["plus chain", "function calls", "NOT chain"])
def test_a_deep_expression_is_a_400_naming_clickhouses_limit(server, shape):
    answer = httpx.post(f"{server.url}/v0/sql", params={"token": server.admin}, data={"q": SHAPES[shape](TOO_DEEP)},
                        timeout=30)
    assert answer.status_code == 400
    assert answer.json()["error"] == "[Error] Code: 167. DB::Exception: AST is too deep. Maximum: 1000"
    assert alive(server)


def test_deep_nesting_is_refused_by_the_parser_depth_limit(server):
    answer = httpx.post(f"{server.url}/v0/sql", params={"token": server.admin},
                        data={"q": SHAPES["parentheses"](TOO_DEEP)}, timeout=30)
    assert answer.status_code == 400
    assert answer.json()["error"].startswith("[Error] Code: 306. DB::Exception: Maximum parse depth (1000) exceeded.")
    assert alive(server)


@pytest.mark.parametrize("reader", [
    pytest.param(lambda server: server.token("dashboard"), id="dashboard-token"),
    pytest.param(lambda server: TokenStore(server.data).sign_jwt("viewer", {"get_events": {}}, 60), id="jwt"),
])
def test_a_deep_q_on_an_endpoint_is_a_400_with_a_dashboard_token_and_a_jwt(server, reader):
    q = SHAPES["plus chain"](TOO_DEEP) + " FROM _"
    answer = httpx.post(f"{server.url}/v0/pipes/get_events.json", params={"token": reader(server)}, data={"q": q},
                        timeout=30)
    assert answer.status_code == 400
    assert answer.json()["error"] == "[Error] Code: 167. DB::Exception: AST is too deep. Maximum: 1000"
    assert alive(server)


def test_a_query_over_max_query_size_is_a_400_naming_the_limit(server):
    text = "SELECT 1 IN (" + ",".join(["1"] * (MAX_QUERY_SIZE // 2)) + ")"
    answer = httpx.post(f"{server.url}/v0/sql", params={"token": server.admin}, data={"q": text}, timeout=30)
    assert (answer.status_code, answer.json()["error"]) == (
        400, f"[Error] Max query size exceeded: the query is {len(text)} bytes, at most 262144 (max_query_size)")
    assert alive(server)


def test_a_long_legitimate_query_still_answers(server):
    text = "SELECT count() AS n FROM events WHERE event_id IN (" + ",".join(f"'e{i}'" for i in range(5000)) + ")"
    answer = httpx.post(f"{server.url}/v0/sql", params={"token": server.admin}, data={"q": text}, timeout=30)
    assert (answer.status_code, answer.json()["data"]) == (200, [{"n": 0}])


# A mix of the shapes, nested in each other and joined, up to sizes past every limit.
_expression = st.recursive(
    st.sampled_from(["1", "number", "'a'", "[1, 2]", "(1)"]),
    lambda inner: st.one_of(
        st.tuples(inner, st.sampled_from(sorted(SHAPES)), st.integers(1, 12_000)).map(
            lambda t: SHAPES[t[1]](t[2]).removeprefix("SELECT ").replace("1", f"({t[0]})", 1)),
        st.lists(inner, min_size=2, max_size=4).map(lambda xs: " + ".join(xs)),
        inner.map(lambda x: f"toString({x})"),
    ),
    max_leaves=4,
)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                  HealthCheck.too_slow, HealthCheck.data_too_large])
@given(expression=_expression, through=st.sampled_from(["sql", "q"]))
def test_the_server_answers_every_deep_or_long_expression(server, expression, through):
    if through == "sql":
        answer = httpx.post(f"{server.url}/v0/sql", params={"token": server.admin},
                            data={"q": f"SELECT {expression} AS x FROM numbers(1)"}, timeout=60)
    else:
        answer = httpx.post(f"{server.url}/v0/pipes/event_stats.json", params={"token": server.token("dashboard")},
                            data={"q": f"SELECT {expression} AS x FROM _ LIMIT 1"}, timeout=60)
    assert answer.status_code in (200, 400, 408), answer.text[:300]
    assert "error" in answer.json() or answer.status_code == 200
    assert alive(server)
