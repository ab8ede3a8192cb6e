"""The one exception tree of evtrack: each class carries the HTTP status Tinybird answers with, and
each message that more than one place raises is worded here, once.

    EvtrackError (500)
    ├── BadRequest (400)
    │   ├── MissingParameter (400)     Missing '<name>' parameter
    │   ├── TooManyFields (400)        a form or JSON body with more fields than the server reads
    │   ├── UnreadableParameters (400) a request body that carries no parameters evtrack can read
    │   ├── NotACopyPipe (400)         a copy run of a pipe with no TYPE COPY node
    │   ├── TemplateError (400)        a pipe template refused the parameters
    │   └── QueryError (400)           the database refused the SQL
    │       └── QueryTimeout (408)     the database stopped it at the time limit
    ├── Forbidden (403)
    │   ├── InvalidToken (403)         no token, or not one of the workspace's
    │   ├── InvalidEventsToken (403)   the Events API's one text for any token that cannot append
    │   ├── MissingScope (403)         token needs scope <SCOPE>
    │   └── NoAccess (403)             a token that cannot read the pipe
    ├── NotFound (404)
    ├── MethodNotAllowed (405)
    ├── SchemaConflict (409)           deploy would change a datasource incompatibly
    ├── PayloadTooLarge (413)          a request body (or a gzip body, inflated) over the limit
    ├── URLTooLong (414)               a request URL over the limit
    ├── HeadersTooLarge (431)          request headers over the limit
    ├── TooManyRequests (429)          the server's ingest queue is full: retry after a while
    ├── ClientGone (499)               the client closed the connection before its answer
    ├── Unavailable (503)              nothing was ingested: retry
    └── StoreError (500)               the embedded store cannot be opened or used

A status given to the constructor (``status=``) is for a status someone else decided: the one
Tinybird answered a remote call with, or the code of a template's ``custom_error``.
"""

from __future__ import annotations

__all__ = [
    "EvtrackError",
    "BadRequest",
    "MissingParameter",
    "TooManyFields",
    "UnreadableParameters",
    "NotACopyPipe",
    "TemplateError",
    "QueryError",
    "QueryTimeout",
    "Forbidden",
    "InvalidToken",
    "InvalidEventsToken",
    "MissingScope",
    "NoAccess",
    "NotFound",
    "MethodNotAllowed",
    "SchemaConflict",
    "PayloadTooLarge",
    "URLTooLong",
    "HeadersTooLarge",
    "TooManyRequests",
    "ClientGone",
    "Unavailable",
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


class MissingParameter(BadRequest):
    def __init__(self, name: str):
        super().__init__(f"Missing '{name}' parameter")


class TooManyFields(BadRequest):
    def __init__(self, limit: int):
        super().__init__(f"Too many fields. Maximum number of fields is {limit}.")


class UnreadableParameters(BadRequest):
    """A body that is not a form nor a JSON object, where only parameters are expected."""

    def __init__(self):
        super().__init__("Send parameters in the query string, as form fields or as a JSON object")


class NotACopyPipe(BadRequest):
    def __init__(self, pipe: str):
        super().__init__(f"The pipe '{pipe}' is not a copy pipe (it has no TYPE COPY node)")


class TemplateError(BadRequest):
    pass


class QueryError(BadRequest):
    pass


class QueryTimeout(QueryError):
    status = 408


class Forbidden(EvtrackError):
    status = 403


class InvalidToken(Forbidden):
    def __init__(self):
        super().__init__("invalid authentication token")


class InvalidEventsToken(Forbidden):
    """The Events API says only this, whether the token is missing, unknown or cannot append."""

    def __init__(self):
        super().__init__("Invalid token")


class MissingScope(Forbidden):
    def __init__(self, scope: str):
        super().__init__(f"token needs scope {scope}")


class NoAccess(Forbidden):
    def __init__(self):
        super().__init__("The token you have provided doesn't have access to this resource")


class NotFound(EvtrackError):
    status = 404

    def __init__(self, message: str = "Not found"):  # bare: what a path no route serves gets
        super().__init__(message)


class MethodNotAllowed(EvtrackError):
    status = 405

    def __init__(self):
        super().__init__("Method not allowed")


class SchemaConflict(EvtrackError):
    status = 409


class PayloadTooLarge(EvtrackError):
    status = 413

    def __init__(self, limit: int, *, inflated: bool = False):
        super().__init__(f"The body inflates to more than {limit} bytes" if inflated
                         else f"The body is larger than {limit} bytes")


class URLTooLong(EvtrackError):
    status = 414

    def __init__(self, limit: int):
        super().__init__(f"The URL is longer than {limit} bytes: send long parameters in a POST body")


class HeadersTooLarge(EvtrackError):
    status = 431

    def __init__(self, limit: int):
        super().__init__(f"The request headers are larger than {limit} bytes")


class StoreError(EvtrackError):
    status = 500


class TooManyRequests(EvtrackError):
    """Refused for now; ``headers`` say when to retry, as Tinybird's rate limits do."""

    status = 429

    def __init__(self, retry_after: int, limit: int):
        super().__init__("Too many requests")
        self.headers = {"Retry-After": str(retry_after), "X-RateLimit-Limit": str(limit),
                        "X-RateLimit-Remaining": "0", "X-RateLimit-Reset": str(retry_after)}


class ClientGone(EvtrackError):
    """The client closed the connection before its answer; nobody reads this status."""

    status = 499

    def __init__(self):
        super().__init__("Client closed the connection")


class Unavailable(EvtrackError):
    status = 503

    def __init__(self, reason: str | None = None):
        """Tinybird's text, then (evtrack's) why, when it is known."""
        super().__init__("Service temporarily unavailable, no data ingested, please retry again"
                         + (f" ({reason})" if reason else ""))


class StoreFull(EvtrackError):
    """The store's disk is full: the append was refused whole, nothing of it stored."""

    status = 507
