"""What each kind of workspace answers, as Tinybird does: a Forward workspace changes through
deployments only, a Classic one resource by resource (``tb push``) only; the default workspace of
``evtrack serve`` answers both, unless ``evtrack serve --workspace-kind`` says which it is.

- A Forward workspace refuses the Classic routes that change resources (creating, altering or
  dropping a datasource, pushing, changing or dropping a pipe) with Tinybird's own text, which
  its SDKs recognise ("This is a Tinybird Forward workspace, and this operation is only available
  for Tinybird Classic workspaces."). Appends, replaces, deletes and reads stay open to both.
- A Classic workspace refuses ``/v1/build``, ``/v1/deploy`` (but a ``check=true``, which Forward's
  ``tb`` runs on a Classic workspace before ``tb migrate-to-forward``), moving deployments and
  ``GET /v1/workspace`` (which Forward's ``tb`` takes as the sign of a Forward workspace), in the
  mirror of that text.

Each view is wrapped where the routing table names it (``classic_only``, ``forward_only``): the
check is one function, not a line in each view.
"""

from __future__ import annotations

import functools

from starlette.requests import Request

from ..errors import BadRequest
from .auth import workspace_of

__all__ = ["CLASSIC_ONLY", "FORWARD_ONLY", "changes_deployment", "classic_only", "creates_datasource", "forward_only"]

CLASSIC_ONLY = ("This is a Tinybird Forward workspace, and this operation is only available for Tinybird Classic "
                "workspaces.")
FORWARD_ONLY = ("This is a Tinybird Classic workspace, and this operation is only available for Tinybird Forward "
                "workspaces.")


def _refused_in(kind: str, message: str):
    def wrap(view, when=lambda request: True):
        """``view``, refused in a workspace of ``kind`` (when ``when(request)``: a route that also appends)."""

        @functools.wraps(view)
        async def checked(request: Request):
            if when(request) and workspace_of(request).kind == kind:
                raise BadRequest(message)
            return await view(request)

        return checked

    return wrap


classic_only = _refused_in("forward", CLASSIC_ONLY)
forward_only = _refused_in("classic", FORWARD_ONLY)


def creates_datasource(request: Request) -> bool:
    """``POST /v0/datasources`` creates one unless it appends to or replaces data."""
    return request.query_params.get("mode", "create").lower() not in ("append", "replace")


def changes_deployment(request: Request) -> bool:
    """``POST /v1/deploy`` with ``check=true`` only validates, which a Classic workspace allows."""
    return request.query_params.get("check", "").lower() != "true"
