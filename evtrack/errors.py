"""The one exception tree of evtrack. Each class carries the HTTP status Tinybird answers with.

    EvtrackError (500)
    ├── BadRequest (400)
    │   ├── TemplateError (400)      a pipe template refused the parameters
    │   └── QueryError (400)         the database refused the SQL
    ├── Forbidden (403)
    ├── NotFound (404)
    ├── SchemaConflict (409)         deploy would change a datasource incompatibly
    ├── TooManyRequests (429)        the server's ingest queue is full: retry after a while
    ├── Unavailable (503)            nothing was ingested: retry
    └── StoreError (500)             the embedded store cannot be opened or used
"""

from __future__ import annotations

__all__ = [
    "EvtrackError",
    "BadRequest",
    "TemplateError",
    "QueryError",
    "Forbidden",
    "NotFound",
    "SchemaConflict",
    "StoreError",
    "TooManyRequests",
    "Unavailable",
]


class EvtrackError(Exception):
    status = 500

    def __init__(self, message: str, *, status: int | None = None, body: object = None):
        super().__init__(message)
        self.message = message
        if status is not None:
            self.status = status
        # A body sent as is, for template custom_error() responses.
        self.body = body


class BadRequest(EvtrackError):
    status = 400


class TemplateError(BadRequest):
    pass


class QueryError(BadRequest):
    pass


class Forbidden(EvtrackError):
    status = 403


class NotFound(EvtrackError):
    status = 404


class SchemaConflict(EvtrackError):
    status = 409


class StoreError(EvtrackError):
    status = 500


class TooManyRequests(EvtrackError):
    """Refused for now; ``headers`` say when to retry, as Tinybird's rate limits do."""

    status = 429

    def __init__(self, retry_after: int, limit: int):
        super().__init__("Too many requests")
        self.headers = {"Retry-After": str(retry_after), "X-RateLimit-Limit": str(limit),
                        "X-RateLimit-Remaining": "0", "X-RateLimit-Reset": str(retry_after)}


class Unavailable(EvtrackError):
    status = 503

    def __init__(self):
        super().__init__("Service temporarily unavailable, no data ingested, please retry again")
