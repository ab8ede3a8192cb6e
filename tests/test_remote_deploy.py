"""`evtrack deploy --host` against both kinds of workspace of a real `evtrack serve` on loopback: a
Forward one (made through POST /v1/workspaces, as Tinybird Local makes them) gets a deployment of
the whole project, a Classic one (`evtrack serve --workspace-kind classic`) tinybird-cli's push.
Each kind refuses the other's routes in Tinybird's words, and a wrong --forward/--classic is an
error. The names expected are the project's files, listed by hand.
"""

from __future__ import annotations

import shutil

import httpx
import pytest

from evtrack.server.kinds import CLASSIC_ONLY, FORWARD_ONLY

from .conftest import ROOT
from .served import Served, evtrack

DATASOURCES = ["events.datasource", "events_by_day.datasource", "events_by_user.datasource",
               "events_sessions_by_type.datasource", "events_users_by_type.datasource"]


def _project(folder):
    shutil.copytree(ROOT / "datasources", folder / "datasources")
    shutil.copytree(ROOT / "pipes", folder / "pipes")
    return folder


@pytest.fixture(scope="module")
def forward(tmp_path_factory):
    """A served store and a Forward workspace in it: (server, the workspace's admin token)."""
    server = Served(tmp_path_factory.mktemp("forward_store"))
    try:
        user = httpx.get(f"{server.url}/tokens").json()["user_token"]
        made = httpx.post(f"{server.url}/v1/workspaces", params={"name": "fwd", "token": user})
        assert made.status_code == 200, made.text
        yield server, made.json()["token"]
    finally:
        assert server.stop() == 0


def _deploy(server, token, project, *extra):
    return evtrack("--host", server.url, "--token", token, "deploy", "--project", str(project), *extra)


def _names(server, token, kind):
    listed = httpx.get(f"{server.url}/v0/{kind}", params={"token": token}).json()[kind]
    return sorted(item["name"] for item in listed)


def test_a_forward_workspace_gets_a_deployment_and_loses_a_pipe_the_project_no_longer_has(forward, tmp_path):
    server, token = forward
    project = _project(tmp_path / "p")
    checked = _deploy(server, token, project, "--check")
    assert checked.returncode == 0, checked.stderr
    assert checked.stdout.splitlines()[-1] == "valid: the deployment would succeed (nothing changed)"
    assert _names(server, token, "pipes") == []  # a check changes nothing

    first = _deploy(server, token, project)
    assert first.returncode == 0, first.stderr
    lines = first.stdout.splitlines()
    assert [line.split()[1] for line in lines if line.startswith("created")][:5] == DATASOURCES
    assert lines[-1].startswith("deployment ") and lines[-1].endswith(f" live on {server.url}")
    assert "deployment" in first.stderr  # the progress line
    assert "event_timeseries" in _names(server, token, "pipes")

    (project / "pipes" / "event_timeseries.pipe").unlink()
    second = _deploy(server, token, project)
    assert second.returncode == 0, second.stderr
    assert "deleted    event_timeseries.pipe" in second.stdout.splitlines()
    assert "event_timeseries" not in _names(server, token, "pipes")
    assert _deploy(server, token, project).stdout.splitlines() == ["no changes: nothing deployed"]

    # A datasource goes only when destruction is allowed.
    scratch = project / "datasources" / "scratch.datasource"
    scratch.write_text("SCHEMA >\n    `a` String `json:$.a`\n")
    assert "created    scratch.datasource" in _deploy(server, token, project).stdout.splitlines()
    scratch.unlink()
    refused = _deploy(server, token, project)
    assert refused.returncode == 1
    assert "--allow-destructive-operations" in refused.stderr and "scratch.datasource" in refused.stderr
    assert "scratch" in _names(server, token, "datasources")
    allowed = _deploy(server, token, project, "--allow-destructive")
    assert "deleted    scratch.datasource" in allowed.stdout.splitlines(), allowed.stderr
    assert "scratch" not in _names(server, token, "datasources")


def test_staged_deployments_are_listed_promoted_and_discarded(forward, tmp_path):
    server, token = forward
    project = _project(tmp_path / "p")
    assert _deploy(server, token, project).returncode == 0
    (project / "pipes" / "event_timeseries.pipe").unlink()
    staged = _deploy(server, token, project, "--stage")
    assert staged.returncode == 0, staged.stderr
    ident = staged.stdout.splitlines()[-1].split()[1]
    assert f"staged on {server.url}" in staged.stdout
    assert "event_timeseries" in _names(server, token, "pipes")  # the live deployment still serves
    listed = evtrack("--host", server.url, "--token", token, "deployments")
    assert any(line.startswith(f"{ident} ") and "data_ready" in line and "live" not in line
               for line in listed.stdout.splitlines()), listed.stdout
    promoted = evtrack("--host", server.url, "--token", token, "deploy", "--promote", ident)
    assert promoted.stdout.splitlines() == [f"deployment {ident} live on {server.url}"], promoted.stderr
    assert "event_timeseries" not in _names(server, token, "pipes")

    shutil.copy(ROOT / "pipes" / "event_timeseries.pipe", project / "pipes")
    again = _deploy(server, token, project, "--stage")
    other = again.stdout.splitlines()[-1].split()[1]
    discarded = evtrack("--host", server.url, "--token", token, "deploy", "--discard", other)
    assert discarded.stdout.splitlines() == [f"deployment {other} discarded on {server.url}"], discarded.stderr
    assert "event_timeseries" not in _names(server, token, "pipes")


def test_a_forward_workspace_refuses_classic_pushes_and_a_wrong_kind(forward, tmp_path):
    server, token = forward
    pushed = httpx.post(f"{server.url}/v0/pipes", params={"token": token},
                        json={"name": "p", "nodes": [{"name": "n", "sql": "SELECT 1"}]})
    assert (pushed.status_code, pushed.json()["error"]) == (400, CLASSIC_ONLY)
    created = httpx.post(f"{server.url}/v0/datasources", params={"token": token, "name": "x", "schema": "a String"})
    assert (created.status_code, created.json()["error"]) == (400, CLASSIC_ONLY)
    assert httpx.get(f"{server.url}/v0/workspace", params={"token": token}).json()["is_forward"] is True
    wrong = _deploy(server, token, _project(tmp_path / "p"), "--classic")
    assert wrong.returncode == 1
    assert f"the workspace at {server.url} is a Forward workspace, not a Classic one" in wrong.stderr


@pytest.fixture(scope="module")
def classic(tmp_path_factory):
    server = Served(tmp_path_factory.mktemp("classic_store"), "--workspace-kind", "classic")
    try:
        yield server
    finally:
        assert server.stop() == 0


def test_a_classic_workspace_is_pushed_as_before_and_refuses_deployments(classic, tmp_path):
    project = _project(tmp_path / "p")
    pushed = _deploy(classic, classic.admin, project)
    assert pushed.returncode == 0, pushed.stderr
    assert "event_timeseries" in _names(classic, classic.admin, "pipes")
    assert "deployment" not in pushed.stdout  # tb push's own lines, no deployment
    for flag in ("--check", "--stage"):
        refused = _deploy(classic, classic.admin, project, flag)
        assert refused.returncode == 1
        assert f"{flag} needs a Forward workspace: {classic.url} is a Classic workspace" in refused.stderr
    wrong = _deploy(classic, classic.admin, project, "--forward")
    assert f"the workspace at {classic.url} is a Classic workspace, not a Forward one" in wrong.stderr
    files = [("data_project://", ("pipes/x.pipe", "NODE n\nSQL >\n    SELECT 1\n"))]
    deployed = httpx.post(f"{classic.url}/v1/deploy", params={"token": classic.admin, "auto_promote": "true"},
                          files=files)
    assert (deployed.status_code, deployed.json()["error"]) == (400, FORWARD_ONLY)
    # Forward's tb checks a Classic workspace before migrating it: the check runs (and finds this one-pipe
    # project would delete the pushed datasources).
    checked = httpx.post(f"{classic.url}/v1/deploy", params={"token": classic.admin, "check": "true"}, files=files)
    assert checked.json()["result"] == "failed" and "would delete events.datasource" in checked.text
    assert httpx.get(f"{classic.url}/v1/workspace", params={"token": classic.admin}).status_code == 400
    assert httpx.get(f"{classic.url}/v0/workspace", params={"token": classic.admin}).json()["is_forward"] is False
