"""The one exception tree of evtrack. Each class carries the HTTP status Tinybird answers with.

    EvtrackError (500)
    ├── BadRequest (400)
    │   ├── TemplateError (400)      a pipe template refused the parameters
    │   ├── QueryError (400)         the database refused the SQL
    │   └── IngestError (400)        a body that cannot be ingested at all
    ├── Forbidden (403)
    ├── NotFound (404)
    ├── SchemaConflict (409)         deploy would change a datasource incompatibly
    └── StoreError (500)             the embedded store cannot be opened or used
"""

from __future__ import annotations

__all__ = [
    "EvtrackError",
    "BadRequest",
    "TemplateError",
    "QueryError",
    "IngestError",
    "Forbidden",
    "NotFound",
    "SchemaConflict",
    "StoreError",
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


class IngestError(BadRequest):
    pass


class Forbidden(EvtrackError):
    status = 403


class NotFound(EvtrackError):
    status = 404


class SchemaConflict(EvtrackError):
    status = 409


class StoreError(EvtrackError):
    status = 500
