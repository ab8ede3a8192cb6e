"""The targets the CLI runs against, and what each answers through the written protocol."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest


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
    """As the README says: 2 requests in flight to Tinybird, 8 to loopback, unless --concurrency; lines
    over 1,048,576 bytes rejected before sending; no whole-file path."""
    from evtrack.sender import SendOptions

    delivery = remote(host).delivery("events", SendOptions(concurrency=concurrency))
    assert (delivery.concurrency, delivery.max_line, delivery.whole_file) == (expected, 1_048_576, None)
