"""The evtrack command, through click's CliRunner (and a subprocess where a new process matters)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from evtrack.cli import cli

from . import reference
from .conftest import BAD_FIXTURE, FIXTURE, ROOT, copy_store


def run(*args, data: Path, input=None):
    return CliRunner(mix_stderr=False).invoke(
        cli, ["--data", str(data), *args], input=input, catch_exceptions=False, terminal_width=200)


@pytest.fixture
def deployed(tmp_path, monkeypatch, deployed_store) -> Path:
    """A store with the project deployed: a copy of the suite's deployed one (the engine's deploy,
    which `evtrack deploy` runs; the test below deploys through the command itself)."""
    monkeypatch.chdir(ROOT)
    return copy_store(deployed_store, tmp_path / "store")


def test_deploy_then_redeploy_is_a_no_op(tmp_path, monkeypatch):
    monkeypatch.chdir(ROOT)
    deployed = tmp_path / "store"
    assert run("deploy", data=deployed).exit_code == 0
    result = run("deploy", data=deployed)
    assert result.exit_code == 0, result.output
    assert result.output.splitlines() == [
        "unchanged  events.datasource",
        "unchanged  events_by_day.datasource",
        "unchanged  events_by_user.datasource",
        "unchanged  events_sessions_by_type.datasource",
        "unchanged  events_users_by_type.datasource",
        "unchanged  event_stats.pipe",
        "unchanged  event_timeseries.pipe",
        "unchanged  get_events.pipe",
        "unchanged  ingest_errors.pipe",
        "unchanged  metrics.pipe",
        "unchanged  user_activity.pipe",
        "unchanged  events_by_day_mv.pipe",  # materialized pipes deploy last
        "unchanged  events_by_user_mv.pipe",
        "unchanged  events_sessions_by_type_mv.pipe",
        "unchanged  events_users_by_type_mv.pipe",
    ]


def test_seed_flow_deploy_send_query(deployed):
    sent = run("send", str(FIXTURE), data=deployed)
    assert sent.exit_code == 0, sent.output
    assert sent.output.splitlines()[:5] == ["lines        6000", "stored       6000", "quarantined  0",
                                            "rejected     0", "retries      0"]
    result = run("query", "user_activity", "--user-id", "user_abc", data=deployed)
    assert result.exit_code == 0, result.output
    expected = reference.user_activity(reference.load(FIXTURE), "user_abc")
    assert json.loads(result.output)["data"] == expected


def test_query_options_accept_tinybird_spelling_and_param(deployed):
    run("send", str(FIXTURE), data=deployed)
    a = run("query", "get_events", "--user_id", "user_abc", "--format", "ndjson", data=deployed)
    b = run("query", "get_events", "--param", "user_id=user_abc", "--format", "ndjson", data=deployed)
    assert a.exit_code == b.exit_code == 0
    assert a.output == b.output and len(a.output.splitlines()) == 7


def test_query_table_and_csv_output(deployed):
    run("send", str(FIXTURE), data=deployed)
    table = run("query", "user_activity", "--user-id", "user_abc", "--format", "table", data=deployed)
    lines = table.output.splitlines()
    assert lines[0].split() == ["user_id", "event_count", "session_count", "first_seen", "last_seen", "recent_event_types"]
    assert lines[1].startswith("user_abc  7") and lines[-1] == "1 row"
    csv = run("query", "event_stats", "--event-type", "purchase", "--format", "csv", data=deployed)
    assert csv.output.splitlines()[0] == '"event_type","event_count","unique_users","session_count","first_seen","last_seen"'


@pytest.mark.parametrize("args, hint, expected", [
    (["get_events", "--start-date", "2023-07-01"], "'--start-date'",
     "'2023-07-01' is not a valid DateTime; expected YYYY-MM-DD HH:MM:SS (UTC), for example 2023-07-01 00:00:00"),
    (["get_events", "--limit", "ten"], "'--limit'",
     "'ten' is not a valid Int32; expected an integer from -2147483648 to 2147483647"),
    (["get_events", "--param", "offset=9999999999"], "'--offset'",
     "'9999999999' is not a valid Int32; expected an integer from -2147483648 to 2147483647"),
    (["get_events", "--param", "oops"], "--param", "'oops' is not NAME=VALUE"),
])
def test_bad_parameter_exits_2_before_any_query(deployed, tmp_path, args, hint, expected):
    # A folder holding only the deployed snapshot: any query would have to open a store in it.
    bare = tmp_path / "bare"
    bare.mkdir()
    shutil.copy(deployed / "project.json", bare / "project.json")
    result = run("query", *args, data=bare)
    assert result.exit_code == 2
    assert result.stderr.splitlines()[-1] == f"Error: Invalid value for {hint}: {expected}"
    assert sorted(p.name for p in bare.iterdir()) == ["project.json"]  # nothing ran


def test_a_datetime_tinybird_takes_but_clickhouse_cannot_read_is_the_querys_error_exit_1(deployed):
    """Tinybird's DateTime() checks the spelling, not the calendar: 30 February reaches ClickHouse,
    whose error it is (tests/test_param_types.py holds what the spelling check takes)."""
    result = run("query", "event_stats", "--end-date", "2023-02-30 00:00:00", data=deployed)
    assert result.exit_code == 1
    line, = result.stderr.splitlines()
    assert line.startswith("Error: [Error] Code: 41. DB::Exception: Cannot read DateTime: unexpected date: 2023-2-30: ")
    assert line.endswith(" (CANNOT_PARSE_DATETIME)")


def test_server_side_template_error_is_one_line_exit_1(deployed):
    result = run("query", "user_activity", data=deployed)
    assert result.exit_code == 1
    assert result.stderr == "Error: user_id (String) query param is required\n"


def test_unknown_pipe_is_a_usage_error(deployed):
    result = run("query", "nope", data=deployed)
    assert result.exit_code == 2
    assert "no deployed pipe named 'nope' (deployed: event_stats, event_timeseries, get_events, ingest_errors, metrics, user_activity)" in result.stderr


def test_query_help_lists_parameters_with_types_and_descriptions(deployed):
    result = run("query", "user_activity", "--help", data=deployed)
    assert result.exit_code == 0
    text = " ".join(result.output.split())
    assert "--user-id, --user_id String The user to describe, e.g. user_abc [String, required]" in text
    assert "--start-date, --start_date DateTime Earliest event time, inclusive, UTC, YYYY-MM-DD HH:MM:SS [DateTime]" in text


def test_send_with_bad_lines_reports_counts_and_reasons_and_exits_1(deployed):
    result = run("send", str(BAD_FIXTURE), data=deployed)
    assert result.exit_code == 1
    lines = result.output.splitlines()
    assert lines[:3] == ["lines        13", "stored       4", "quarantined  9"]
    assert "  - Line is not a valid JSON: 'this is not json'" in lines
    errors = run("sql", "SELECT c__error FROM events_quarantine", "--format", "json", data=deployed)
    assert len(json.loads(errors.output)["data"]) == 9


def test_send_reads_stdin(deployed):
    result = run("send", "-", data=deployed, input=FIXTURE.read_bytes())
    assert result.exit_code == 0, result.output
    assert result.output.splitlines()[:2] == ["lines        6000", "stored       6000"]


def test_send_missing_file_is_bad_usage(deployed):
    result = run("send", "nope.ndjson", data=deployed)
    assert result.exit_code == 2
    assert "file 'nope.ndjson' does not exist" in result.stderr


def test_sql_refuses_writes_in_one_line(deployed):
    result = run("sql", "DROP TABLE events", data=deployed)
    assert result.exit_code == 1
    assert result.stderr.startswith("Error: [Error] ") and result.stderr.count("\n") == 1


def test_pipes_lists_parameters(deployed):
    result = run("pipes", data=deployed)
    assert result.exit_code == 0
    assert "user_activity (endpoint): One user's activity" in result.output
    assert "  --user-id        String    required  The user to describe, e.g. user_abc" in result.output.splitlines()


def test_deploy_snapshot_is_not_changed_by_editing_files(tmp_path):
    project = tmp_path / "project"
    shutil.copytree(ROOT / "datasources", project / "datasources")
    shutil.copytree(ROOT / "pipes", project / "pipes")
    data = tmp_path / "store"
    assert run("deploy", "--project", str(project), data=data).exit_code == 0
    run("send", str(FIXTURE), data=data)
    pipe = project / "pipes" / "event_stats.pipe"
    pipe.write_text(pipe.read_text().replace("ORDER BY event_count DESC, event_type ASC", "ORDER BY event_type DESC"))

    def first():
        return json.loads(run("query", "event_stats", "--format", "json", data=data).output)["data"][0]["event_type"]

    most_frequent = reference.event_stats(reference.load(FIXTURE))[0]["event_type"]
    assert first() == most_frequent != "signup"  # the edited file is not live
    assert "changed    event_stats.pipe" in run("deploy", "--project", str(project), data=data).output.splitlines()
    assert first() == "signup"  # alphabetically last event type in the fixture


def test_incompatible_schema_change_names_the_column_unless_force(deployed, tmp_path):
    project = tmp_path / "project"
    shutil.copytree(ROOT / "datasources", project / "datasources")
    run("send", str(FIXTURE), data=deployed)
    ds = project / "datasources" / "events.datasource"
    ds.write_text(ds.read_text().replace("`country` LowCardinality(String)", "`country` UInt8"))
    result = run("deploy", "--project", str(project), data=deployed)
    assert result.exit_code == 1
    assert result.stderr.startswith(
        "Error: Datasource 'events': column 'country' would change type from LowCardinality(String) to UInt8.")
    ds.write_text(ds.read_text().replace("`country` UInt8 `json:$.country` DEFAULT ''", "`country` LowCardinality(String) `json:$.country` DEFAULT ''")
                  .replace("    `properties`", "    `referrer` String `json:$.referrer` DEFAULT '',\n    `properties`"))
    added = run("deploy", "--project", str(project), data=deployed)
    assert added.exit_code == 0 and "changed    events.datasource" in added.output
    ds.write_text(ds.read_text().replace("    `referrer` String `json:$.referrer` DEFAULT '',\n", ""))
    assert "column 'referrer' would be removed" in run("deploy", "--project", str(project), data=deployed).stderr
    forced = run("deploy", "--force", "--project", str(project), data=deployed)
    assert forced.exit_code == 0, forced.stderr
    count = run("sql", "SELECT count() AS n FROM events FINAL", "--format", "json", data=deployed)
    assert json.loads(count.output)["data"] == [{"n": len(reference.load(FIXTURE))}]  # data kept


def test_data_survives_a_new_process(deployed):
    run("send", str(FIXTURE), data=deployed)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TB_", "EVTRACK_"))}
    out = subprocess.run(
        [sys.executable, "-m", "evtrack", "--data", str(deployed), "query", "event_stats", "--format", "json"],
        capture_output=True, text=True, env=env, cwd=ROOT, timeout=120,
    )
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["data"] == reference.event_stats(reference.load(FIXTURE))


def test_errors_never_show_a_traceback(deployed):
    result = run("sql", "SELECT nonsense(", data=deployed)
    assert result.exit_code == 1 and "Traceback" not in result.stderr + result.output


def test_token_jwt_prints_a_tinybird_jwt_signed_with_the_admin_token(deployed):
    import jwt

    result = run("token", "jwt", "--pipe", "user_activity", "--pipe", "get_events", "--fixed", "user_id=user_abc",
                 "--ttl", "2h", "--name", "alice", data=deployed)
    assert result.exit_code == 0, result.output
    saved = json.loads((deployed / "tokens.json").read_text())
    payload = jwt.decode(result.output.strip(), saved["tokens"][0]["token"], algorithms=["HS256"])
    assert payload["exp"] - 7200 <= int(__import__("time").time()) <= payload["exp"] - 7190
    assert {k: v for k, v in payload.items() if k != "exp"} == {
        "workspace_id": saved["workspace_id"], "name": "alice", "scopes": [
            {"type": "PIPES:READ", "resource": "user_activity", "fixed_params": {"user_id": "user_abc"}},
            {"type": "PIPES:READ", "resource": "get_events", "fixed_params": {"user_id": "user_abc"}}]}


@pytest.mark.parametrize("args, message", [
    (["--pipe", "nope"], "Invalid value for '--pipe': no deployed endpoint named 'nope' (deployed: event_stats, event_timeseries, get_events, ingest_errors, metrics, user_activity)"),
    (["--pipe", "user_activity", "--fixed", "uid=x"], "Invalid value for '--fixed': 'uid' is not a parameter of user_activity (end_date, start_date, user_id)"),
    (["--pipe", "user_activity", "--fixed", "user_id"], "Invalid value for '--fixed': expected NAME=VALUE, e.g. --fixed user_id=user_abc"),
    (["--pipe", "user_activity", "--ttl", "1w"], "Invalid value for '--ttl': '1w' is not a duration: a positive number with s, m, h or d, e.g. 1h"),
])
def test_token_jwt_refuses_bad_options(deployed, args, message):
    result = run("token", "jwt", *args, data=deployed)
    assert result.exit_code == 2
    assert result.stderr.strip().splitlines()[-1] == f"Error: {message}"


def test_deployed_pipe_record_reads_back_as_the_parsed_file(project):
    from evtrack.project import parse_pipe, pipe_from_record, pipe_record

    for name, text in ((p.name, p.source) for p in project.pipes.values()):
        record = json.loads(json.dumps(pipe_record(parse_pipe(name, text))))  # as the snapshot stores it
        assert pipe_from_record(name, text, record) == parse_pipe(name, text)
        # A record of another text (an older deploy) is not used: the text is parsed.
        edited = text.replace("DESCRIPTION >", "DESCRIPTION >\n    Edited.", 1)
        assert pipe_from_record(name, edited, record) == parse_pipe(name, edited)
        assert pipe_from_record(name, edited, record).description != record["description"]


def test_query_on_the_embedded_store_loads_no_datafile_parser_http_client_or_pyarrow(deployed):
    run("send", str(FIXTURE), data=deployed)
    script = (
        "import sys\n"
        "from evtrack.cli import cli\n"
        f"try:\n    cli(['--data', {str(deployed)!r}, 'query', 'user_activity', '--user-id', 'user_abc',"
        " '--format', 'json'])\n"
        "except SystemExit as exc:\n    assert not exc.code, exc.code\n"
        "heavy = ['tinybird.datafile_common', 'httpx', 'pydantic', 'pyarrow']\n"
        "print(sorted(m for m in heavy if m in sys.modules), file=sys.stderr)\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert done.returncode == 0, done.stderr
    assert done.stderr.strip().splitlines()[-1] == "[]"
    expected = reference.user_activity(reference.load(FIXTURE), "user_abc")
    assert json.loads(done.stdout)["data"] == expected
