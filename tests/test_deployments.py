"""The deployment history, by command and over HTTP."""

from __future__ import annotations

import httpx

from .served import Served, evtrack
from .test_exactly_once import make_project


def test_deployments_are_listed_by_command_and_over_http_oldest_first_the_replaced_on_request(tmp_path):
    project, store = make_project(tmp_path / "project"), tmp_path / "store"
    assert evtrack("--data", str(store), "deploy", "--project", str(project)).returncode == 0
    (project / "pipes" / "plain_ids_mv.pipe").unlink()
    (project / "datasources" / "plain_ids.datasource").unlink()
    assert evtrack("--data", str(store), "deploy", "--allow-destructive", "--project", str(project)).returncode == 0
    listed = evtrack("--data", str(store), "deployments")
    first, second = listed.stdout.splitlines()
    assert first.split("  ")[2] == "done" and "(created events.datasource, " in first
    assert second.endswith("done  (deleted plain_ids_mv.pipe, plain_ids.datasource)")
    server = Served(store)
    try:
        answer = httpx.get(f"{server.url}/v1/deployments", headers={"Authorization": f"Bearer {server.admin}"})
        (live,) = answer.json()["deployments"]  # as Tinybird lists them: the replaced one is deleted
        every = httpx.get(f"{server.url}/v1/deployments?include_deleted=true",
                          headers={"Authorization": f"Bearer {server.admin}"}).json()["deployments"]
        oldest, newest = every
        assert newest == live and (oldest["id"], newest["id"]) == ("1", "2")
        assert (newest["live"], newest["status"], newest["deleted"]) == (True, "data_ready",
                                                                          ["plain_ids_mv.pipe", "plain_ids.datasource"])
        assert (oldest["live"], oldest["status"], oldest["changed"]) == (False, "deleted", [])
        assert "type_counts_mv.pipe" in oldest["created"]
        one = httpx.get(f"{server.url}/v1/deployments/{oldest['id']}", params={"token": server.admin})
        assert one.json() == {"deployment": oldest}
        missing = httpx.get(f"{server.url}/v1/deployments/nope", params={"token": server.admin})
        assert (missing.status_code, missing.json()["error"]) == (404, "Deployment 'nope' not found")
        tracker = httpx.get(f"{server.url}/v1/deployments", params={"token": server.token("tracker")})
        assert (tracker.status_code, tracker.json()["error"]) == (403, "token needs scope ADMIN")
    finally:
        assert server.stop() == 0
