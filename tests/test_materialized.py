"""Materialized pipes, pipes read by name, Forward's layout and what deploy refuses, on a small
project written here. Expected values are counted in Python from the rows the tests send."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner
from starlette.testclient import TestClient  # noqa: the suite's in-process client, as in test_server

from evtrack.cli import cli
from evtrack.engine import Engine
from evtrack.errors import BadRequest, QueryError, SchemaConflict
from evtrack.project import load_project, parse_datasource
from evtrack.server.app import create_app

CLICKS = """SCHEMA >
    `ts` DateTime `json:$.ts`,
    `page` String `json:$.page`,
    `user` String `json:$.user` DEFAULT '',
    `ms` UInt32 `json:$.ms` DEFAULT 0

ENGINE MergeTree
ENGINE_SORTING_KEY ts
"""

# AggregatingMergeTree with AggregateFunction and SimpleAggregateFunction columns, quoted keywords.
PAGES_MV = """SCHEMA >
    `page` String,
    `hits` AggregateFunction(count),
    `users` AggregateFunction(uniqExact, String),
    `slowest` SimpleAggregateFunction(max, UInt32)

ENGINE "AggregatingMergeTree"
ENGINE_SORTING_KEY "page"
"""

# The second link of a chain: fed by a view on pages_mv.
TOTALS_MV = """SCHEMA >
    `one` UInt8,
    `hits` UInt64

ENGINE SummingMergeTree
ENGINE_SORTING_KEY one
"""

LAST_CLICK = """SCHEMA >
    `user` String,
    `ts` DateTime,
    `page` String

ENGINE ReplacingMergeTree
ENGINE_SORTING_KEY user
ENGINE_VER ts
"""

# An endpoint that the materializations read by name: its template parameters are undefined there.
CLEAN_CLICKS = """NODE clean
SQL >
    %
    SELECT ts, lower(page) AS page, user, ms FROM clicks
    WHERE page != ''
    {% if defined(only_user) %} AND user = {{ String(only_user) }} {% end %}

TYPE Endpoint
"""

PAGES = """NODE rollup
SQL >
    SELECT page, countState() AS hits, uniqExactState(user) AS users, maxSimpleState(ms) AS slowest
    FROM clean_clicks
    GROUP BY page

TYPE MATERIALIZED
DATASOURCE pages_mv
"""

TOTALS = """NODE total
SQL >
    SELECT 1 AS one, countMerge(hits) AS hits FROM pages_mv GROUP BY one

TYPE materialized
DATASOURCE totals_mv
"""

LAST = """NODE last
SQL >
    SELECT user, ts, page FROM clicks WHERE user != ''

TYPE MATERIALIZED
DATASOURCE last_click_mv
"""

TOP_PAGES = """NODE endpoint
SQL >
    SELECT page, countMerge(hits) AS hits, uniqExactMerge(users) AS users, max(slowest) AS slowest
    FROM pages_mv GROUP BY page ORDER BY page

TYPE endpoint
"""


def write_project(root: Path, pipes: dict[str, str] | None = None) -> Path:
    files = {
        "datasources/clicks.datasource": CLICKS,
        "datasources/pages_mv.datasource": PAGES_MV,
        "datasources/totals_mv.datasource": TOTALS_MV,
        "datasources/last_click_mv.datasource": LAST_CLICK,
        "endpoints/clean_clicks.pipe": CLEAN_CLICKS,
        "endpoints/top_pages.pipe": TOP_PAGES,
        "materializations/pages.pipe": PAGES,
        "materializations/totals.pipe": TOTALS,
        "materializations/last_click.pipe": LAST,
        **(pipes or {}),
    }
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    return root


def clicks(n: int, start: int = 0) -> list[dict]:
    pages = ["Home", "pricing", "", "DOCS", "home"]
    return [{"ts": f"2024-01-{1 + (i % 28):02d} 10:00:{i % 60:02d}", "page": pages[i % 5],
             "user": f"u{i % 7}" if i % 4 else "", "ms": (i * 37) % 1000} for i in range(start, start + n)]


def ndjson(rows: list[dict]) -> bytes:
    return "".join(json.dumps(r) + "\n" for r in rows).encode()


def expected_pages(rows: list[dict]) -> list[dict]:
    """top_pages as counted in Python: pages lower-cased, empty pages dropped."""
    kept = [r for r in rows if r["page"]]
    out = []
    for page in sorted({r["page"].lower() for r in kept}):
        mine = [r for r in kept if r["page"].lower() == page]
        out.append({"page": page, "hits": len(mine), "users": len({r["user"] for r in mine}),
                    "slowest": max(r["ms"] for r in mine)})
    return out


def top_pages(engine: Engine) -> list[dict]:
    return json.loads(engine.query_pipe("top_pages", {}))["data"]


def sql_rows(engine: Engine, sql: str) -> list[dict]:
    return json.loads(engine.sql(sql))["data"]


def latest_by_user(rows: list[dict]) -> dict[str, str]:
    latest: dict[str, dict] = {}
    for r in rows:
        if r["user"] and (r["user"] not in latest or r["ts"] >= latest[r["user"]]["ts"]):
            latest[r["user"]] = r
    return {u: r["page"] for u, r in latest.items()}


@pytest.fixture
def mv_engine(tmp_path):
    root = write_project(tmp_path / "project")
    with Engine.open(tmp_path / "store") as engine:
        engine.deploy(load_project(root))
        yield engine, root


def test_every_ingest_path_feeds_the_rollups_and_the_chain(mv_engine):
    engine, _ = mv_engine
    first, second, third = clicks(40), clicks(25, 40), clicks(10, 65)
    engine.append("clicks", ndjson(first))                       # evtrack send, embedded
    engine.append_many("clicks", [ndjson(second[:12]), ndjson(second[12:])])  # the server's coalesced inserts
    with TestClient(create_app(engine)) as client:               # the Events API
        token = engine.tokens.admin.token
        answer = client.post("/v0/events?name=clicks&wait=true", content=ndjson(third),
                             headers={"Authorization": f"Bearer {token}"})
        assert answer.status_code == 200, answer.text
    everything = first + second + third
    assert top_pages(engine) == expected_pages(everything)
    # The chain: totals_mv is fed by a view on pages_mv.
    assert sql_rows(engine, "SELECT sum(hits) AS hits FROM totals_mv") == [{"hits": sum(1 for r in everything if r["page"])}]
    # ReplacingMergeTree: the latest click of each user, once merged.
    got = sql_rows(engine, "SELECT user, page FROM last_click_mv FINAL ORDER BY user")
    assert {r["user"]: r["page"] for r in got} == latest_by_user(everything)


def test_deploy_backfills_a_source_that_already_has_rows_and_redeploy_changes_nothing(tmp_path):
    root = write_project(tmp_path / "project")
    rows = clicks(50)
    with Engine.open(tmp_path / "store") as engine:
        engine.deploy_datasource(parse_datasource("clicks", CLICKS))
        engine.append("clicks", ndjson(rows))
        result = engine.deploy(load_project(root))
        assert "pages.pipe" in result.created and "totals.pipe" in result.created
        assert top_pages(engine) == expected_pages(rows)
        assert sql_rows(engine, "SELECT sum(hits) AS hits FROM totals_mv") == [{"hits": sum(1 for r in rows if r["page"])}]
        again = engine.deploy(load_project(root))
        assert again.created == [] and again.changed == []
        assert top_pages(engine) == expected_pages(rows)  # not backfilled twice


def test_engine_settings_change_in_place_and_keep_the_rows(tmp_path):
    """ENGINE_SETTINGS say how parts are kept, not what they hold: a deploy changes them with
    ALTERs, without --force, and the rows stay; a setting taken out is reset to its default."""
    rows = clicks(40)
    settings = 'ENGINE_SETTINGS "min_age_to_force_merge_seconds=300, min_age_to_force_merge_on_partition_only=1"\n'
    with Engine.open(tmp_path / "store") as engine:
        engine.deploy_datasource(parse_datasource("clicks", CLICKS))
        engine.append("clicks", ndjson(rows))

        def table_settings() -> str:
            return engine.store.run("SELECT engine_full FROM system.tables WHERE database = 'evtrack' AND name = 'clicks'",
                                    "TSV").decode()

        assert "min_age_to_force_merge_seconds" not in table_settings()
        with_settings = parse_datasource("clicks", CLICKS + settings)
        assert engine.default.plan_datasource(with_settings) == [
            "MODIFY SETTING min_age_to_force_merge_seconds = 300, min_age_to_force_merge_on_partition_only = 1"]
        assert engine.deploy_datasource(with_settings) == "changed"
        assert "min_age_to_force_merge_seconds = 300" in table_settings()
        assert "min_age_to_force_merge_on_partition_only = 1" in table_settings()
        assert sql_rows(engine, "SELECT count() AS n FROM clicks") == [{"n": len(rows)}]
        assert engine.deploy_datasource(parse_datasource("clicks", CLICKS + settings.replace("300", "60"))) == "changed"
        assert "min_age_to_force_merge_seconds = 60" in table_settings()
        back = parse_datasource("clicks", CLICKS)
        assert engine.default.plan_datasource(back) == [
            "RESET SETTING min_age_to_force_merge_seconds, min_age_to_force_merge_on_partition_only"]
        assert engine.deploy_datasource(back) == "changed"
        assert "min_age_to_force_merge" not in table_settings()
        assert sql_rows(engine, "SELECT count() AS n FROM clicks") == [{"n": len(rows)}]
        with pytest.raises(SchemaConflict, match="the engine would change"):  # a key is no setting
            engine.deploy_datasource(parse_datasource("clicks", CLICKS.replace("ENGINE_SORTING_KEY ts", "ENGINE_SORTING_KEY page, ts")))


def test_a_changed_materialized_pipe_needs_force_which_rebuilds_its_targets(mv_engine):
    engine, root = mv_engine
    rows = clicks(60)
    engine.append("clicks", ndjson(rows))
    (root / "materializations/pages.pipe").write_text(PAGES.replace("FROM clean_clicks", "FROM clean_clicks WHERE ms > 100"))
    with pytest.raises(SchemaConflict, match="Materialized pipe 'pages' changed.*--force"):
        engine.deploy(load_project(root))
    assert top_pages(engine) == expected_pages(rows)  # refused: nothing changed
    engine.deploy(load_project(root), force=True)
    slow = [r for r in rows if r["ms"] > 100]
    assert top_pages(engine) == expected_pages(slow)
    # The chain below it was emptied and refilled through the rebuilt view, not added to.
    assert sql_rows(engine, "SELECT sum(hits) AS hits FROM totals_mv") == [{"hits": sum(1 for r in slow if r["page"])}]
    engine.append("clicks", ndjson(clicks(5, 60)))
    assert top_pages(engine) == expected_pages([r for r in rows + clicks(5, 60) if r["ms"] > 100])


def test_a_pipe_the_rollup_reads_by_name_changing_is_a_change_of_the_rollup(mv_engine):
    engine, root = mv_engine
    (root / "endpoints/clean_clicks.pipe").write_text(CLEAN_CLICKS.replace("lower(page)", "upper(page)"))
    with pytest.raises(SchemaConflict, match="Materialized pipe 'pages' changed"):
        engine.deploy(load_project(root))


def test_a_view_that_fails_on_insert_is_reported(tmp_path):
    boom = """NODE n
SQL >
    SELECT page, countState() AS hits, uniqExactState(user) AS users,
           maxSimpleState(toUInt32(throwIf(page = 'boom', 'no boom pages') + ms)) AS slowest
    FROM clicks GROUP BY page

TYPE MATERIALIZED
DATASOURCE pages_mv
"""
    root = write_project(tmp_path / "project", {"materializations/pages.pipe": boom})
    with Engine.open(tmp_path / "store") as engine:
        engine.deploy(load_project(root))
        with pytest.raises(QueryError, match="no boom pages"):
            engine.append("clicks", ndjson([{"ts": "2024-01-01 00:00:00", "page": "boom", "user": "u", "ms": 1}]))
        # ClickHouse writes the source row before the view fails; the refused append takes it back
        # (see docs/datafiles.md), from the source and from the audit of imports alike.
        assert sql_rows(engine, "SELECT count() AS c FROM clicks") == [{"c": 0}]
        assert sql_rows(engine, "SELECT count() AS c FROM pages_mv") == [{"c": 0}]
        assert engine.store.run("SELECT count() FROM evtrack.clicks__imports", "TSV").strip() == b"0"
        engine.service.flush()  # the refusal, in the ops log with the rows it refused (the metrics pipe's "rejected")
        assert sql_rows(engine, "SELECT event_type, result, rows FROM tinybird.datasources_ops_log "
                                "WHERE datasource_name = 'clicks' AND event_type != 'create'") == [
            {"event_type": "append", "result": "error", "rows": 1}]
        engine.append("clicks", ndjson([{"ts": "2024-01-01 00:00:00", "page": "fine", "user": "u", "ms": 1}]))
        assert sql_rows(engine, "SELECT count() AS c FROM clicks") == [{"c": 1}]
        assert (tmp_path / "store" / "changes").is_dir() and not list((tmp_path / "store" / "changes").glob("*.json"))


def test_a_resend_is_counted_twice_by_an_aggregating_rollup(mv_engine):
    """As on Tinybird: the view sees every insert; a rollup has no event id to deduplicate on."""
    engine, _ = mv_engine
    rows = clicks(20)
    engine.append("clicks", ndjson(rows))
    engine.append("clicks", ndjson(rows))
    assert top_pages(engine) == [{**p, "hits": 2 * p["hits"]} for p in expected_pages(rows)]


def test_extra_columns_of_a_materialized_select_are_ignored_and_missing_ones_defaulted(tmp_path):
    """As ClickHouse writes a view's block: the columns the target has, by name; the SELECT's other
    columns are dropped and the target's missing ones (here `slowest`) take their default, 0."""
    wider = PAGES.replace("maxSimpleState(ms) AS slowest",
                          "avgState(ms) AS mean_ms, quantilesState(0.5, 0.9)(ms) AS spread")
    root = write_project(tmp_path / "project", {"materializations/pages.pipe": wider})
    before, after = clicks(30), clicks(20, 30)
    with Engine.open(tmp_path / "store") as engine:
        engine.deploy_datasource(parse_datasource("clicks", CLICKS))
        engine.append("clicks", ndjson(before))
        result = engine.deploy(load_project(root))
        assert "pages.pipe" in result.created
        assert top_pages(engine) == [dict(row, slowest=0) for row in expected_pages(before)]   # backfilled
        engine.append("clicks", ndjson(after))
        assert top_pages(engine) == [dict(row, slowest=0) for row in expected_pages(before + after)]  # fed
        assert sql_rows(engine, "SELECT sum(hits) AS hits FROM totals_mv") == [
            {"hits": sum(1 for r in before + after if r["page"])}]


def test_a_materialized_column_of_another_type_fails_the_deploy(tmp_path):
    wrong = PAGES.replace("countState() AS hits", "count() AS hits").replace(
        "uniqExactState(user) AS users", "uniqExactState(ms) AS users")
    root = write_project(tmp_path / "project", {"materializations/pages.pipe": wrong})
    with Engine.open(tmp_path / "store") as engine, pytest.raises(BadRequest) as failed:
        engine.deploy(load_project(root))
    assert failed.value.message == (
        "pipe 'pages': the materialized node 'rollup' returns columns of types the datasource 'pages_mv' cannot "
        "take: 'hits' is UInt64, the datasource's 'hits' is AggregateFunction(count); 'users' is "
        "AggregateFunction(uniqExact, UInt32), the datasource's 'users' is AggregateFunction(uniqExact, String)")


def test_a_materialized_select_sharing_no_column_with_its_target_fails_the_deploy(tmp_path):
    wrong = LAST.replace("SELECT user, ts, page", "SELECT user AS u, ts AS t")
    root = write_project(tmp_path / "project", {"materializations/last_click.pipe": wrong})
    with Engine.open(tmp_path / "store") as engine, pytest.raises(BadRequest) as failed:
        engine.deploy(load_project(root))
    assert failed.value.message == (
        "pipe 'last_click': the materialized node 'last' returns none of the columns of the datasource "
        "'last_click_mv' (its columns: user, ts, page)")


def run(*args, data: Path):
    return CliRunner(mix_stderr=False).invoke(cli, ["--data", str(data), *args], catch_exceptions=False)


@pytest.mark.parametrize("path, text, named", [
    ("datasources/kafka_clicks.datasource", CLICKS + "\nKAFKA_CONNECTION_NAME conn\nKAFKA_TOPIC clicks\n", "KAFKA_CONNECTION_NAME"),
    ("datasources/s3_clicks.datasource", CLICKS + "\nIMPORT_SERVICE s3\nIMPORT_CONNECTION_NAME c\n", "IMPORT_SERVICE"),
    ("pipes/export.pipe", "NODE n\nSQL >\n    SELECT * FROM clicks\n\nTYPE sink\nEXPORT_SERVICE kafka\n", "sink pipes"),
    ("pipes/odd.pipe", "NODE n\nSQL >\n    SELECT * FROM clicks\n\nTYPE whatever\n", "TYPE whatever"),
])
def test_deploy_refuses_what_it_does_not_run(tmp_path, path, text, named):
    root = write_project(tmp_path / "project", {path: text})
    result = run("deploy", "--project", str(root), data=tmp_path / "store")
    assert result.exit_code == 1
    assert Path(path).name in result.stderr and named in result.stderr
    assert "created" not in result.output


def test_forward_layout_skips_fixtures_tests_hidden_and_virtualenv_folders(tmp_path):
    root = write_project(tmp_path / "project")
    broken = "this is not a datafile {{"
    for folder in ("fixtures", "tests", ".hidden", "venv", "some_env"):
        (root / folder).mkdir()
        (root / folder / "broken.pipe").write_text(broken)
    (root / "some_env" / "pyvenv.cfg").write_text("home = /usr\n")
    (root / "extra" / "deeper").mkdir(parents=True)
    (root / "extra" / "deeper" / "more.pipe").write_text(TOP_PAGES)
    project = load_project(root)
    assert sorted(project.pipes) == ["clean_clicks", "last_click", "more", "pages", "top_pages", "totals"]
    assert sorted(project.datasources) == ["clicks", "last_click_mv", "pages_mv", "totals_mv"]


def test_quoted_and_unquoted_keywords_mean_the_same(tmp_path):
    quoted = PAGES_MV
    bare = PAGES_MV.replace('"AggregatingMergeTree"', "AggregatingMergeTree").replace('"page"', "page")
    assert parse_datasource("pages_mv", quoted).engine == parse_datasource("pages_mv", bare).engine


def test_the_cli_deploys_a_forward_project_and_reports_each_file(tmp_path):
    root = write_project(tmp_path / "project")
    result = run("deploy", "--project", str(root), data=tmp_path / "store")
    assert result.exit_code == 0, result.stderr
    lines = sorted(result.output.split())
    assert lines.count("created") == 9 and "pages.pipe" in lines and "clean_clicks.pipe" in lines


def test_a_materialized_pipe_posted_to_the_pipes_api_feeds_its_target(tmp_path):
    """POST /v0/pipes with a materialized node (as Tinybird's API describes one) deploys it the same way."""
    root = write_project(tmp_path / "project")
    (root / "materializations" / "pages.pipe").unlink()
    with Engine.open(tmp_path / "store") as engine:
        engine.deploy(load_project(root))
        rows = clicks(30)
        engine.append("clicks", ndjson(rows))
        node = {"name": "rollup", "type": "materialized", "datasource": "pages_mv",
                "sql": PAGES.split("SQL >\n", 1)[1].split("\n\nTYPE", 1)[0]}
        with TestClient(create_app(engine)) as client:
            answer = client.post("/v0/pipes", json={"name": "pages", "nodes": [node]},
                                 headers={"Authorization": f"Bearer {engine.tokens.admin.token}"})
            assert answer.status_code == 200, answer.text
        more = clicks(10, 30)
        engine.append("clicks", ndjson(more))
        assert top_pages(engine) == expected_pages(rows + more)  # backfilled, then fed
