"""Request heads a real `evtrack serve` refuses: a long URL (414), large headers (431), anything it
cannot parse (400), each with Tinybird's JSON error body; the server answers the next request.

Raw sockets on loopback: an HTTP client would refuse to send some of these, or hide the answer.
"""

from __future__ import annotations

import json
import socket
from urllib.parse import urlsplit

import httpx
import pytest

from .served import Served

DOCUMENTATION = "https://www.tinybird.co/docs/api-reference"
URL_TOO_LONG = "The URL is longer than 16384 bytes: send long parameters in a POST body"
HEADERS_TOO_LARGE = "The request headers are larger than 16384 bytes"


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    served = Served(tmp_path_factory.mktemp("heads") / "store")
    try:
        yield served
    finally:
        assert served.stop() == 0


def exchange(server: Served, *pieces: bytes) -> tuple[int, dict[str, str], bytes]:
    """Send ``pieces`` on a new connection, then read the answer until the server closes it."""
    address = urlsplit(server.url)
    received = b""
    with socket.create_connection((address.hostname, address.port), timeout=30) as sock:
        try:
            for piece in pieces:
                sock.sendall(piece)
        except (BrokenPipeError, ConnectionResetError):
            pass  # refused before the client was done: the answer was sent before the close
        try:
            while chunk := sock.recv(65536):
                received += chunk
        except ConnectionResetError:
            pass  # what the server did not read resets the connection once the answer is in
    head, _, body = received.partition(b"\r\n\r\n")
    status_line, *lines = head.decode("latin-1").split("\r\n")
    headers = dict(line.lower().split(": ", 1) for line in lines)
    return int(status_line.split()[1]), headers, body


def assert_json_error(answer, status: int, message: str) -> None:
    got_status, headers, body = answer
    assert got_status == status, body
    assert (headers.get("content-type"), headers.get("connection")) == ("application/json", "close")
    assert json.loads(body) == {"error": message, "documentation": DOCUMENTATION}


def assert_still_serving(server: Served) -> None:
    response = httpx.get(f"{server.url}/tokens", timeout=30)
    assert response.status_code == 200
    assert set(response.json()) == {"user_token", "admin_token", "workspace_admin_token"}


def test_a_20_kb_query_string_gets_414_json(server):
    answer = exchange(server, b"GET /v0/sql?q=" + b"1" * 20_000 + b" HTTP/1.1\r\nHost: localhost\r\n\r\n")
    assert_json_error(answer, 414, URL_TOO_LONG)
    assert_still_serving(server)


def test_the_url_limit_is_16_kib(server):
    def get(url_length: int):
        path = b"/tokens?q="
        return exchange(server, b"GET " + path + b"1" * (url_length - len(path)) +
                        b" HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")

    assert get(16 * 1024)[0] == 200
    assert_json_error(get(16 * 1024 + 1), 414, URL_TOO_LONG)


def test_a_20_kb_header_gets_431_json(server):
    answer = exchange(server, b"GET /tokens HTTP/1.1\r\nHost: localhost\r\nX-Big: " + b"a" * 20_000 + b"\r\n\r\n")
    assert_json_error(answer, 431, HEADERS_TOO_LARGE)
    assert_still_serving(server)


def test_many_small_headers_past_16_kib_get_431_json(server):
    headers = b"".join(b"X-H%d: %s\r\n" % (i, b"a" * 90) for i in range(200))  # 200 headers of about 100 bytes
    answer = exchange(server, b"GET /tokens HTTP/1.1\r\nHost: localhost\r\n" + headers + b"\r\n")
    assert_json_error(answer, 431, HEADERS_TOO_LARGE)
    assert_still_serving(server)


def test_a_header_that_never_ends_is_cut_short(server):
    # 64 MB offered in pieces, the header never ending: the server answers long before the end.
    answer = exchange(server, b"GET /tokens HTTP/1.1\r\nHost: localhost\r\nX-Endless: ",
                      *(b"a" * 65536 for _ in range(1024)))
    assert_json_error(answer, 431, HEADERS_TOO_LARGE)
    assert_still_serving(server)


def test_a_malformed_request_gets_400_json(server):
    assert_json_error(exchange(server, b"NOT HTTP AT ALL\r\n\r\n"), 400, "Invalid HTTP request received.")
    assert_still_serving(server)


def test_heads_within_the_limits_are_served_one_after_another_on_one_connection(server):
    # Each head is 24 KB (a 12 KB URL and a 12 KB header): the limits are per request, not per connection.
    with httpx.Client(base_url=server.url, timeout=30) as http:
        for _ in range(5):
            response = http.get("/tokens", params={"q": "1" * 12_000}, headers={"X-Pad": "a" * 12_000})
            assert response.status_code == 200
