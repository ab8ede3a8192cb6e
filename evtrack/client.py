"""The one HTTP client for every remote target: Tinybird Cloud, Tinybird Local or ``evtrack serve``.

Inject an ``httpx.Client`` (for example over ``httpx.MockTransport``, or Starlette's
``TestClient``) to run it against anything. Errors come back as ``RemoteError`` carrying the
server's status and text: JSON ``{"error": ...}`` bodies and the Events API's plain text alike.
"""

from __future__ import annotations

import gzip
import ipaddress
import json
import random
import time
from dataclasses import dataclass
from urllib.parse import urlencode

import httpx

from .errors import EvtrackError

__all__ = ["Client", "RemoteError", "Retry", "MAX_GET_URL"]

MAX_GET_URL = 8000  # longer calls go as POST, as tinybird-cli does


class RemoteError(EvtrackError):
    def __init__(self, status: int, text: str, headers: dict | None = None):
        super().__init__(f"{text} (HTTP {status})", status=status)
        self.text = text
        self.headers = headers or {}


@dataclass(frozen=True)
class Retry:
    """When and how long to wait before sending again, as Tinybird's own SDK does.

    429 waits ``Retry-After`` (else ``X-RateLimit-Reset``); 5xx and connection errors back off
    exponentially from ``base`` seconds, capped at ``cap``, with full jitter. Any other 4xx is final.
    """

    attempts: int = 8
    base: float = 0.2
    cap: float = 10.0

    def delay(self, error: EvtrackError, attempt: int) -> float | None:
        """Seconds to wait before attempt ``attempt + 1``, or None to give up."""
        if attempt + 1 >= self.attempts:
            return None
        status = error.status
        if status == 429:
            headers = {k.lower(): v for k, v in getattr(error, "headers", {}).items()}
            for name in ("retry-after", "x-ratelimit-reset"):
                try:
                    return min(max(float(headers[name]), 0.0), 60.0)
                except (KeyError, ValueError):
                    continue
        elif status < 500:
            return None
        return random.uniform(0, min(self.cap, self.base * 2**attempt))


class Client:
    def __init__(self, host: str, token: str, *, http: httpx.Client | None = None, timeout: float = 60.0,
                 sleep=time.sleep, compress: bool | None = None):
        self.host = host.rstrip("/")
        self.loopback = _is_loopback(self.host)
        # gzip saves bandwidth to a remote host; to this machine's loopback it only costs CPU on both ends.
        self.compress = not self.loopback if compress is None else compress
        self._http = http or httpx.Client(base_url=self.host, timeout=timeout)
        self._timeout = timeout
        self._auth = {"Authorization": f"Bearer {token}"}
        self._sleep = sleep

    def reopen(self) -> None:
        """Connections of its own, for a forked child: the parent's sockets stay the parent's."""
        self._http = httpx.Client(base_url=self.host, timeout=self._timeout)

    def close(self) -> None:
        self._http.close()

    def _request(self, method: str, path: str, *, answered=lambda response: False, **kwargs) -> httpx.Response:
        """``answered(response)``: whether an error status still carries the answer the caller reads."""
        headers = {**self._auth, **kwargs.pop("headers", {})}
        try:
            response = self._http.request(method, path, headers=headers, **kwargs)
        except httpx.HTTPError as exc:
            raise EvtrackError(f"cannot reach {self.host}: {exc}", status=503) from None
        if response.status_code >= 400 and not answered(response):
            raise RemoteError(response.status_code, _error_text(response), dict(response.headers))
        return response

    def send(self, datasource: str, ndjson: bytes, wait: bool = True, retry: Retry | None = None,
             key: str | None = None) -> tuple[dict, int]:
        """POST NDJSON to the Events API, gzip-compressed, retrying as ``retry`` says.

        Returns ``{"successful_rows", "quarantined_rows"}`` and how many retries it took. A resend
        after an unanswered attempt cannot double-count: events are deduplicated by ``event_id``.
        ``key`` goes as the ``Idempotency-Key`` header, the same on every resend of these lines:
        ``evtrack serve`` acknowledges a key it has logged without storing the lines again (Tinybird
        ignores the header, and dedups as read by ``event_id``).
        """
        params = {"name": datasource, "wait": "true" if wait else "false"}
        headers = {"Content-Type": "application/x-ndjson", **({"Idempotency-Key": key} if key else {})}
        body = ndjson
        if self.compress:
            body, headers["Content-Encoding"] = gzip.compress(ndjson, compresslevel=1), "gzip"
        retry = retry or Retry(attempts=1)
        attempt = 0
        while True:
            try:
                response = self._request("POST", f"/v0/events?{urlencode(params)}", content=body, headers=headers)
                return response.json(), attempt
            except EvtrackError as error:
                wait_for = retry.delay(error, attempt)
                if wait_for is None:
                    raise
                self._sleep(wait_for)
                attempt += 1

    def query_pipe(self, name: str, params: dict[str, str], fmt: str = "json") -> bytes:
        path = f"/v0/pipes/{name}.{fmt}"
        query = urlencode(params)
        if len(path) + len(query) + 1 > MAX_GET_URL:
            return self._request("POST", path, data=params).content
        return self._request("GET", f"{path}?{query}" if query else path).content

    def run_copy(self, name: str, params: dict[str, str], mode: str | None = None) -> dict:
        """Run a copy pipe (Tinybird's Copy Pipes API): the pipe with its ``job``."""
        query = urlencode({**params, **({"_mode": mode} if mode else {})})
        return self._request("POST", f"/v0/pipes/{name}/copy" + (f"?{query}" if query else "")).json()

    def delete_rows(self, datasource: str, condition: str, dry_run: bool = False, cascade: bool = True) -> dict:
        """Tinybird's delete by condition: on a dry run the rows it would delete, else its job, once finished."""
        data = {"delete_condition": condition, "dry_run": str(dry_run).lower(), "cascade": str(cascade).lower()}
        answer = self._request("POST", f"/v0/datasources/{datasource}/delete", data=data).json()
        while not dry_run and answer.get("status") not in ("done", "error"):
            self._sleep(1)  # Tinybird runs it as a job: wait for it, as `tb datasource delete --wait` does
            answer = self._request("GET", f"/v0/jobs/{answer['job_id']}").json()
        if answer.get("status") == "error":
            raise EvtrackError(f"deleting from '{datasource}' failed: {answer.get('error')}")
        return answer

    def truncate(self, datasource: str, cascade: bool = False) -> None:
        self._request("POST", f"/v0/datasources/{datasource}/truncate", data={"cascade": str(cascade).lower()})

    def sql(self, query: str) -> bytes:
        if len(query) > MAX_GET_URL:
            return self._request("POST", "/v0/sql", content=query.encode()).content
        return self._request("GET", f"/v0/sql?{urlencode({'q': query})}").content

    def pipe(self, name: str) -> dict:
        return self._request("GET", f"/v0/pipes/{name}").json()

    def datasource(self, name: str) -> dict:
        return self._request("GET", f"/v0/datasources/{name}").json()

    # -- workspaces and deployments (Tinybird Forward) -------------------------------------
    def workspace(self, version: str = "v0") -> dict:
        return self._request("GET", f"/{version}/workspace").json()

    def deploy(self, files: dict[str, str], params: dict[str, str]) -> dict:
        """``POST /v1/deploy`` with the project's datafiles (relative path -> text), as Forward's
        ``tb deploy`` sends them. A failed deployment's answer (4xx, ``result: failed``) is returned."""
        parts = [("context://", ("cli-version", b"1.0.0", "text/plain"))]
        parts += [("data_project://", (path, text.encode(), "text/plain")) for path, text in sorted(files.items())]
        return self._request("POST", f"/v1/deploy?{urlencode(params)}", files=parts,
                             answered=lambda response: _is_result(response)).json()

    def deployment(self, ident: str) -> dict:
        return self._request("GET", f"/v1/deployments/{ident}").json()["deployment"]

    def deployments(self) -> list[dict]:
        return self._request("GET", "/v1/deployments").json()["deployments"]

    def set_live(self, ident: str) -> dict:
        return self._request("POST", f"/v1/deployments/{ident}/set-live").json().get("deployment", {})

    def discard(self, ident: str) -> dict:
        return self._request("DELETE", f"/v1/deployments/{ident}").json().get("deployment", {})


def _is_result(response: httpx.Response) -> bool:
    """A 4xx that is a deployment's verdict (``{"result": "failed", ...}``), not an error of the call."""
    try:
        body = response.json()
    except ValueError:
        return False
    return response.status_code < 500 and isinstance(body, dict) and "result" in body and "error" not in body


def _is_loopback(host: str) -> bool:
    name = httpx.URL(host).host
    if name == "localhost":
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def _error_text(response: httpx.Response) -> str:
    text = response.text.strip()
    try:
        body = json.loads(text)
    except ValueError:
        return text or response.reason_phrase
    if isinstance(body, dict) and "error" in body:
        return str(body["error"])
    return text
