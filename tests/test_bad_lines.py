"""One corpus of bad lines, each class sent both ways: embedded `evtrack send`, and `evtrack send --host`
to a real `evtrack serve` on loopback. Both must end each line the same way: stored, or not stored
with the same reason (quarantined by the engine, or rejected by the sender for a line too long to
send in a request). Expected outcomes are written here by hand, from what each class must do."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from evtrack.cli import cli

from .served import Served, evtrack

BOM = b"\xef\xbb\xbf"


def good(event_id: str) -> bytes:
    return b'{"event_id": "%s", "event_type": "click", "user_id": "u", "timestamp": "2023-07-15 10:00:00"}' % (
        event_id.encode())


def sized(event_id: str, size: int) -> bytes:
    """A valid event line of exactly ``size`` bytes."""
    start = b'{"event_id": "%s", "event_type": "click", "timestamp": "2023-07-15 10:00:00", "properties": "' % (
        event_id.encode())
    return start + b"x" * (size - len(start) - 2) + b'"}'


TOO_LONG, AT_LIMIT = sized("too-long:2", 1048577), sized("at-the-limit:1", 1048576)
NOT_UTF8 = b'{"event_id": "not-utf8:2", "event_type": "cl\xffick", "timestamp": "2023-07-15 10:00:00"}'
NUL = b'{"event_id": "nul:2", "event_type": "cl\x00ick", "timestamp": "2023-07-15 10:00:00"}'

# case: (the file, the event ids stored, the reasons of the lines not stored); a case's ids start "case:"
CORPUS = {
    "bom": (BOM + good("bom:1") + b"\n" + BOM + good("bom:2") + b"\n", ["bom:1", "bom:2"], []),
    "crlf": (good("crlf:1") + b"\r\n" + good("crlf:2") + b"\r\n", ["crlf:1", "crlf:2"], []),
    "not-utf8": (good("not-utf8:1") + b"\n" + NOT_UTF8 + b"\n", ["not-utf8:1"], [
        """Line is not valid UTF-8: '{"event_id": "not-utf8:2", "event_type": "cl\ufffdick", """
        """"timestamp": "2023-07-15 10:00:00"}'"""]),
    "nul": (good("nul:1") + b"\n" + NUL + b"\n", ["nul:1"], [
        """Line contains a NUL byte: '{"event_id": "nul:2", "event_type": "cl\x00ick", """
        """"timestamp": "2023-07-15 10:00:00"}'"""]),
    "array": (b"[\n  " + good("array:1") + b",\n  " + good("array:2") + b"\n]\n", ["array:1", "array:2"], []),
    "one-line-array": (b"[" + good("one-line-array:1") + b", " + good("one-line-array:2") + b"]\n",
                       ["one-line-array:1", "one-line-array:2"], []),
    "array-after-a-bom": (BOM + b"[\n" + good("array-after-a-bom:1") + b"\n]\n", ["array-after-a-bom:1"], []),
    "object-over-lines": (b'{\n  "event_id": "object-over-lines:1",\n  "event_type": "click",\n'
                          b'  "timestamp": "2023-07-15 10:00:00"\n}\n', ["object-over-lines:1"], []),
    "array-among-lines": (good("array-among-lines:1") + b"\n[" + good("array-among-lines:2") + b"]\n",
                          ["array-among-lines:1"], [
        """Line is not a valid JSON: '[{"event_id": "array-among-lines:2", "event_type": "click", "user_id": "u", """
        """"timestamp": "2023-07-15 10:00:00"}]'"""]),
    "not-json": (b"this is not json\n", [], ["Line is not a valid JSON: 'this is not json'"]),
    "not-an-object": (b"[1, 2, 3]\n", [], ["Line is not a valid JSON: '[1, 2, 3]'"]),
    "missing-field": (b'{"event_id": "missing-field:1", "timestamp": "2023-07-15 10:00:00"}\n', [],
                      ["missing value on column 'event_type' (required: LowCardinality(String) with no DEFAULT)"]),
    "not-a-date": (b'{"event_id": "not-a-date:1", "event_type": "click", "timestamp": "yesterday"}\n', [],
                   ["value 'yesterday' on column 'timestamp' is not DateTime"]),
    "at-the-limit": (AT_LIMIT + b"\n", ["at-the-limit:1"], []),
    "too-long": (good("too-long:1") + b"\n" + TOO_LONG + b"\n" + good("too-long:3") + b"\n",
                 ["too-long:1", "too-long:3"], [
        f"Line is too long: 1048577 bytes, at most 1048576: '{TOO_LONG[:1000].decode()}...'"]),
}


def run(*args: str):
    return CliRunner(mix_stderr=False).invoke(cli, list(args), catch_exceptions=False)


@pytest.fixture(scope="module")
def paths(tmp_path_factory):
    """Each path's options: an embedded store, and a real `evtrack serve` on loopback; both deployed."""
    embedded, served = tmp_path_factory.mktemp("embedded"), tmp_path_factory.mktemp("served")
    for folder in (embedded, served):
        deployed = evtrack("--data", str(folder), "deploy")
        assert deployed.returncode == 0, deployed.stdout + deployed.stderr
    server = Served(served)
    yield {"embedded": ["--data", str(embedded)], "host": ["--host", server.url, "--token", server.admin]}
    assert server.stop() == 0


def rows(target: list[str], query: str) -> list[dict]:
    result = run(*target, "sql", f"{query} FORMAT JSONEachRow")
    assert result.exit_code == 0, result.output + result.stderr
    return [json.loads(line) for line in result.output.splitlines() if line]


def quarantined(target: list[str]) -> dict[str, list[str]]:
    """Every import's quarantine reasons, by import id."""
    found: dict[str, list[str]] = {}
    query = "SELECT c__import_id AS id, arrayStringConcat(c__error, '; ') AS reason FROM events_quarantine"
    for row in rows(target, query):
        found.setdefault(row["id"], []).append(row["reason"])
    return found


def outcome(target: list[str], source, rejects) -> dict:
    """How a send of ``source`` ended: exit status, lines read, the events stored, every other line's reason."""
    before = quarantined(target)
    sent = run(*target, "send", str(source), "--rejects", str(rejects), "--json")
    receipt = json.loads(sent.output)
    prefix = source.stem + ":"
    reasons = [reason for import_id, found in quarantined(target).items() if import_id not in before
               for reason in found]
    if rejects.exists():
        reasons += [json.loads(line)["reason"] for line in rejects.read_text(encoding="utf-8").splitlines()]
    stored = rows(target, f"SELECT event_id FROM events WHERE startsWith(event_id, '{prefix}') ORDER BY event_id")
    return {"exit": sent.exit_code, "lines": receipt["lines"], "stored": receipt["stored"],
            "events": [row["event_id"] for row in stored], "reasons": sorted(reasons)}


@pytest.mark.parametrize("name", list(CORPUS))
def test_each_class_of_line_ends_the_same_embedded_and_through_a_host(paths, tmp_path, name):
    content, events, reasons = CORPUS[name]
    source = tmp_path / f"{name}.ndjson"  # its stem starts the case's event ids
    source.write_bytes(content)
    expected = {"exit": 1 if reasons else 0, "lines": len(events) + len(reasons), "stored": len(events),
                "events": events, "reasons": reasons}
    for path, target in paths.items():
        assert outcome(target, source, tmp_path / f"{path}.rejects.ndjson") == expected, path


def around_a_big_line(path, tag: str) -> bytes:
    """1,000 events, one line of 20 MB, 1,000 more; the big line."""
    big = sized(f"{tag}-huge", 20_000_000)
    path.write_bytes(b"".join(good(f"{tag}-{n}") + b"\n" for n in range(1, 1001)) + big + b"\n"
                     + b"".join(good(f"{tag}-{n}") + b"\n" for n in range(1001, 2001)))
    return big


def test_a_line_larger_than_a_request_is_rejected_and_the_send_goes_on(paths, tmp_path):
    source = tmp_path / "big.ndjson"
    shown = around_a_big_line(source, "big")[:1000].decode()
    reason = f"Line is too long: 20000000 bytes, at most 1048576: '{shown}...'"
    count = "SELECT count() AS n FROM events WHERE startsWith(event_id, 'big-')"

    rejects = tmp_path / "big.rejects.ndjson"
    sent = run(*paths["host"], "send", str(source), "--rejects", str(rejects))
    assert sent.exit_code == 1, sent.output + sent.stderr
    assert sent.output.splitlines()[:6] == ["lines        2001", "stored       2000", "quarantined  0",
                                            f"rejected     1 (see {rejects})", f"  - line 1001: {reason}",
                                            "retries      0"]
    assert [json.loads(line) for line in rejects.read_text().splitlines()] == [
        {"line": 1001, "reason": reason, "text": shown}]
    assert rows(paths["host"], count) == [{"n": 2000}]

    # Embedded, the engine quarantines the same line with the same reason.
    sent = run(*paths["embedded"], "send", str(source))
    assert sent.exit_code == 1, sent.output + sent.stderr
    assert sent.output.splitlines()[:4] == ["lines        2001", "stored       2000", "quarantined  1",
                                            f"  - {reason}"]
    assert rows(paths["embedded"], count) == [{"n": 2000}]

    # A send stopped at the big line (where the HTTP 413 used to stop every attempt) resumes past it.
    resumed = tmp_path / "resumed.ndjson"
    shown = around_a_big_line(resumed, "resumed")[:1000].decode()
    checkpoint = tmp_path / "resumed.checkpoint.json"
    offset = resumed.read_bytes().index(b'{"event_id": "resumed-huge"')
    checkpoint.write_text(json.dumps({"source": str(resumed), "offset": offset, "line": 1001}))
    rejects = tmp_path / "resumed.rejects.ndjson"
    sent = run(*paths["host"], "send", str(resumed), "--resume", "--checkpoint", str(checkpoint),
               "--rejects", str(rejects))
    assert sent.exit_code == 1, sent.output + sent.stderr
    reason = f"Line is too long: 20000000 bytes, at most 1048576: '{shown}...'"
    assert sent.output.splitlines()[:5] == ["lines        1001", "stored       1000", "quarantined  0",
                                            f"rejected     1 (see {rejects})", f"  - line 1001: {reason}"]
    assert [json.loads(line) for line in rejects.read_text().splitlines()] == [
        {"line": 1001, "reason": reason, "text": shown}]
    assert not checkpoint.exists()
    assert rows(paths["host"], "SELECT min(event_id) AS first, count() AS n FROM events "
                               "WHERE startsWith(event_id, 'resumed-')") == [{"first": "resumed-1001", "n": 1000}]
