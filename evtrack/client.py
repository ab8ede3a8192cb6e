"""The one HTTP client for every remote target: Tinybird Cloud, Tinybird Local or ``evtrack serve``.

Inject an ``httpx.Client`` (for example over ``httpx.MockTransport``, or Starlette's
``TestClient``) to run it against anything. Errors come back as ``RemoteError`` carrying the
server's status and text: JSON ``{"error": ...}`` bodies and the Events API's plain text alike.
"""

from __future__ import annotations

import gzip
import json
from urllib.parse import urlencode

import httpx

from .errors import EvtrackError

__all__ = ["Client", "RemoteError", "MAX_GET_URL"]

MAX_GET_URL = 8000  # longer calls go as POST, as tinybird-cli does


class RemoteError(EvtrackError):
    def __init__(self, status: int, text: str):
        super().__init__(f"{text} (HTTP {status})", status=status)
        self.text = text


class Client:
    def __init__(self, host: str, token: str, *, http: httpx.Client | None = None, timeout: float = 60.0):
        self.host = host.rstrip("/")
        self._http = http or httpx.Client(base_url=self.host, timeout=timeout)
        self._auth = {"Authorization": f"Bearer {token}"}

    def close(self) -> None:
        self._http.close()

    def _request(self, method: str, path: str, **kwargs) -> httpx.Response:
        headers = {**self._auth, **kwargs.pop("headers", {})}
        try:
            response = self._http.request(method, path, headers=headers, **kwargs)
        except httpx.HTTPError as exc:
            raise EvtrackError(f"cannot reach {self.host}: {exc}", status=503) from None
        if response.status_code >= 400:
            raise RemoteError(response.status_code, _error_text(response))
        return response

    def send(self, datasource: str, ndjson: bytes, wait: bool = True) -> dict:
        """POST NDJSON to the Events API, gzip-compressed; ``{"successful_rows", "quarantined_rows"}``."""
        params = {"name": datasource, "wait": "true" if wait else "false"}
        response = self._request(
            "POST", f"/v0/events?{urlencode(params)}", content=gzip.compress(ndjson, compresslevel=1),
            headers={"Content-Encoding": "gzip", "Content-Type": "application/x-ndjson"},
        )
        return response.json()

    def query_pipe(self, name: str, params: dict[str, str], fmt: str = "json") -> bytes:
        path = f"/v0/pipes/{name}.{fmt}"
        query = urlencode(params)
        if len(path) + len(query) + 1 > MAX_GET_URL:
            return self._request("POST", path, data=params).content
        return self._request("GET", f"{path}?{query}" if query else path).content

    def sql(self, query: str) -> bytes:
        if len(query) > MAX_GET_URL:
            return self._request("POST", "/v0/sql", content=query.encode()).content
        return self._request("GET", f"/v0/sql?{urlencode({'q': query})}").content

    def pipe(self, name: str) -> dict:
        return self._request("GET", f"/v0/pipes/{name}").json()


def _error_text(response: httpx.Response) -> str:
    text = response.text.strip()
    try:
        body = json.loads(text)
    except ValueError:
        return text or response.reason_phrase
    if isinstance(body, dict) and "error" in body:
        return str(body["error"])
    return text
