"""kill -9 during `evtrack deploy --force` leaves the old deployment or the new one, never an
empty or half-full target, and the next deploy of the same files leaves the target equal to its
source. Counts are of raw rows in a plain MergeTree target (nothing there can hide a double).
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time

from evtrack.engine import Engine
from evtrack.project import load_project

from .conftest import ROOT
from .served import clean_env
from .test_exactly_once import make_project

ROWS = 1_000_000
# Two versions of the materialized pipe: each deploy changes it, so each --force refills the target.
VERSIONS = {
    "lower": "SELECT event_id, event_type FROM events",
    "upper": "SELECT event_id, upper(event_type) AS event_type FROM events",
}


def set_version(project, version: str) -> None:
    path = project / "pipes" / "plain_ids_mv.pipe"
    text = path.read_text()
    for sql in VERSIONS.values():
        text = text.replace(sql, VERSIONS[version])
    path.write_text(text)


def deploy(store, project) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "evtrack", "--data", str(store), "deploy", "--force",
                             "--project", str(project)], cwd=ROOT, env=clean_env(),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def kill_at(process: subprocess.Popen, journal, phase: str) -> str:
    """kill -9 the deploy once its refill's record in the journal's folder says ``phase``; the phase it was killed in."""
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and process.poll() is None:
        try:
            seen = next((json.loads(path.read_text())["phase"] for path in journal.glob("*-refill-*.json")), None)
        except (FileNotFoundError, ValueError, KeyError):
            seen = None
        if seen == phase:
            process.send_signal(signal.SIGKILL)
            break
        time.sleep(0.001)
    process.communicate(timeout=60)
    return phase if process.returncode == -signal.SIGKILL else "finished"


def target_matches_source(store, version: str) -> dict:
    expected = "event_type" if version == "lower" else "upper(event_type)"
    with Engine.open(store) as engine:
        body = engine.store.run(
            "SELECT (SELECT count() FROM evtrack.events) AS source, (SELECT count() FROM evtrack.plain_ids) AS target, "
            f"(SELECT count() FROM (SELECT event_id, {expected} AS event_type FROM evtrack.events) AS s "
            "LEFT ANTI JOIN evtrack.plain_ids AS t USING (event_id, event_type)) AS missing, "
            "(SELECT count() FROM system.tables WHERE database = 'evtrack' AND name LIKE '%\\_\\_deploy\\_%') AS staging",
            "JSON")
        return json.loads(body)["data"][0]


def test_kill_9_during_deploy_force_never_leaves_a_broken_target(tmp_path):
    project, store = make_project(tmp_path / "project"), tmp_path / "store"
    set_version(project, "lower")
    with Engine.open(store) as engine:
        engine.deploy(load_project(project))
        engine.store.execute(  # millions of rows, straight into the datasource: its views fill the targets
            f"INSERT INTO evtrack.events (event_id, event_type, user_id, timestamp) SELECT concat('e', toString(number)), "
            f"['tap', 'view', 'buy'][number % 3 + 1], concat('u', toString(number % 1000)), "
            f"toDateTime('2023-05-01 00:00:00') + number FROM numbers({ROWS})")
    deployed = "lower"
    kills = []
    for version, phase in [("upper", "building"), ("lower", "applying"), ("upper", "building"),
                           ("lower", "applying")]:
        set_version(project, version)
        kills.append(kill_at(deploy(store, project), store / "changes", phase))
        # Opening the store finishes or undoes what the kill left: the old deployment or the new one, whole.
        whole = {"source": ROWS, "target": ROWS, "missing": 0, "staging": 0}
        assert whole in (target_matches_source(store, deployed), target_matches_source(store, version))
        again = deploy(store, project)  # the next deploy of the same files (it recovers first)
        out, err = again.communicate(timeout=300)
        assert again.returncode == 0, out + err
        deployed = version
        assert target_matches_source(store, deployed) == {"source": ROWS, "target": ROWS, "missing": 0, "staging": 0}
    assert kills.count("building") >= 1 and kills.count("applying") + kills.count("finished") >= 1
    with Engine.open(store) as engine:
        statuses = [entry["status"] for entry in engine.history.all()]
    assert any(status.startswith("rolled back") for status in statuses)


def test_a_rebuild_table_a_killed_deploy_left_is_dropped_when_the_store_opens(tmp_path, project):
    store = tmp_path / "store"
    with Engine.open(store) as engine:
        engine.deploy(project)
        # What a deploy --force killed while it copied the old rows into the new table leaves.
        engine.store.execute("CREATE TABLE evtrack.`events__rebuild_0123abcd` AS evtrack.events")
    with Engine.open(store) as engine:
        left = engine.store.run("SELECT count() FROM system.tables WHERE database = 'evtrack' "
                                "AND name LIKE '%\\\\_\\\\_rebuild\\\\_%'").strip()
    assert left == b"0"
