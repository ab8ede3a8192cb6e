"""The targets the CLI runs against: a Forward-layout project pushed whole to a host, and what each
target answers through the written protocol (delivery, copy runs)."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest
from click.testing import CliRunner

from evtrack.cli import cli

from .served import Served

SALES = """DESCRIPTION >
    Sales, one row each.

SCHEMA >
    `ts` DateTime `json:$.ts`,
    `user` String `json:$.user`,
    `amount` UInt32 `json:$.amount`

ENGINE MergeTree
ENGINE_SORTING_KEY ts
"""
TOTALS = """SCHEMA >
    `user` String `json:$.user`,
    `total` UInt64 `json:$.total`

ENGINE SummingMergeTree
ENGINE_SORTING_KEY user
"""
BIG_SALES = """NODE big
SQL >
    %
    SELECT user, amount FROM sales WHERE amount >= {{ UInt32(min_amount, 0) }} ORDER BY amount DESC, user

TYPE endpoint
"""
TOTALS_MV = """NODE per_user
SQL >
    SELECT user, toUInt64(amount) AS total FROM sales

TYPE MATERIALIZED
DATASOURCE sales_by_user
"""
SNAPSHOT = """NODE totals
SQL >
    SELECT user, toUInt64(sum(amount)) AS total FROM sales GROUP BY user

TYPE COPY
TARGET_DATASOURCE user_totals
COPY_MODE replace
"""
# Tinybird's Forward layout: no pipes/ folder.
FORWARD = {
    "datasources/sales.datasource": SALES,
    "datasources/sales_by_user.datasource": TOTALS,
    "datasources/user_totals.datasource": TOTALS,
    "endpoints/big_sales.pipe": BIG_SALES,
    "materializations/sales_by_user_mv.pipe": TOTALS_MV,
    "copies/snapshot.pipe": SNAPSHOT,
}
SALES_ROWS = [("2024-05-01 10:00:00", "ana", 10), ("2024-05-01 11:00:00", "ana", 20), ("2024-05-02 09:00:00", "bo", 5),
              ("2024-05-02 10:00:00", "cy", 70), ("2024-05-03 10:00:00", "cy", 30)]


def totals() -> list[dict]:
    """Each user's sum, computed here from the rows sent."""
    sums: dict[str, int] = {}
    for _, user, amount in SALES_ROWS:
        sums[user] = sums.get(user, 0) + amount
    return [{"user": user, "total": total} for user, total in sorted(sums.items())]


@pytest.fixture
def server(tmp_path):
    served = Served(tmp_path / "store")
    yield served
    assert served.stop() == 0


def test_deploy_to_a_host_pushes_every_folder_of_a_forward_layout(tmp_path, server, monkeypatch):
    root = tmp_path / "project"
    for name, text in FORWARD.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    monkeypatch.chdir(tmp_path)  # not the project: the CLI learns the copy pipe from the host
    host = ["--host", server.url, "--token", server.admin]
    pushed = CliRunner(mix_stderr=False).invoke(cli, [*host, "deploy", "--project", str(root)])
    assert pushed.exit_code == 0, pushed.output + pushed.stderr

    with httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {server.admin}"}, timeout=30) as http:
        assert sorted(p["name"] for p in http.get("/v0/pipes").json()["pipes"]) == [
            "big_sales", "sales_by_user_mv", "snapshot"]
        assert sorted(d["name"] for d in http.get("/v0/datasources").json()["datasources"]) == [
            "sales", "sales_by_user", "user_totals"]
        body = "\n".join(json.dumps({"ts": ts, "user": user, "amount": amount}) for ts, user, amount in SALES_ROWS)
        sent = http.post("/v0/events", params={"name": "sales", "wait": "true"}, content=body)
        assert sent.json() == {"successful_rows": 5, "quarantined_rows": 0}
        big = http.get("/v0/pipes/big_sales.json", params={"min_amount": "20"})
        assert big.json()["data"] == [{"user": "cy", "amount": 70}, {"user": "cy", "amount": 30},
                                      {"user": "ana", "amount": 20}]
        rolled = http.get("/v0/sql", params={"q": "SELECT user, toUInt64(sum(total)) AS total FROM sales_by_user "
                                                  "GROUP BY user ORDER BY user FORMAT JSON"})
        assert rolled.json()["data"] == totals()
        copied = CliRunner(mix_stderr=False).invoke(cli, [*host, "copy", "run", "snapshot"])
        assert copied.exit_code == 0, copied.output + copied.stderr
        assert copied.output == "3 rows copied into user_totals\n"
        target = http.get("/v0/sql", params={"q": "SELECT user, total FROM user_totals ORDER BY user FORMAT JSON"})
        assert target.json()["data"] == totals()


# -- the protocol ---------------------------------------------------------------------------------
def remote(host: str):
    from evtrack.client import Client
    from evtrack.settings import Secret
    from evtrack.settings import Target as Settings
    from evtrack.targets import Remote

    never = httpx.MockTransport(lambda request: httpx.Response(500))  # nothing here makes a request
    client = Client(host, "p.token", http=httpx.Client(base_url=host, transport=never))
    return Remote(Settings(data=Path("."), host=host, token=Secret("p.token"), origin="test"), client=client)


def test_both_targets_are_targets(tmp_path):
    from evtrack.targets import Embedded, Target

    assert isinstance(Embedded(tmp_path / "store"), Target)
    assert isinstance(remote("https://api.tinybird.co"), Target)


@pytest.mark.parametrize("host, concurrency, expected", [
    pytest.param("https://api.tinybird.co", None, 2, id="tinybird-default"),
    pytest.param("http://127.0.0.1:7181", None, 8, id="loopback-default"),
    pytest.param("https://api.tinybird.co", 5, 5, id="option"),
])
def test_a_send_to_a_host_goes_in_batches_with_the_engines_line_limit(host, concurrency, expected):
    """As docs/commands.md says (Sending): 2 requests in flight to Tinybird, 8 to loopback, unless
    --concurrency; lines over 1,048,576 bytes rejected before sending; no whole-file path."""
    from evtrack.sender import SendOptions

    delivery = remote(host).delivery("events", SendOptions(concurrency=concurrency))
    assert (delivery.concurrency, delivery.max_line, delivery.whole_file) == (expected, 1_048_576, None)
