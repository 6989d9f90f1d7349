"""Bearer-token authentication as a Litestar guard.

Tokens come from ``TRIAGE_API_KEYS`` (see :mod:`serving.settings`). The guard hashes the presented
token and compares it with ``hmac.compare_digest`` against *every* configured token (no early exit,
equal-length digests), so neither the position of a match nor a prefix leaks through timing.
The matching role and the token's name are attached to the request as ``request.user`` (a
:class:`Principal`).
Tokens are never logged or echoed; a failure answers 401 with ``WWW-Authenticate: Bearer``.

A handler may narrow access with ``opt={"roles": ("clinician", "admin")}``; a known token of another
role then gets 403. Without that option every configured role is accepted.

Role matrix (API v1; applied per route in :mod:`serving.controllers`):

=========================  =========  =======  =====
endpoint                   clinician  auditor  admin
=========================  =========  =======  =====
POST /v1/predict[/batch]   yes        403      yes
POST /v1/labels            yes        403      yes
GET  /v1/labels/{id}       403        yes      yes
GET  /v1/symptoms          yes        yes      yes
GET  /v1/diseases          yes        yes      yes
GET  /v1/model             403        yes      yes
GET  /v1/predictions/{id}  403        yes      yes
GET  /v1/models/{version}  403        yes      yes
GET  /metrics              403        403      yes
=========================  =========  =======  =====
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass

from litestar.connection import ASGIConnection
from litestar.exceptions import NotAuthorizedException, PermissionDeniedException
from litestar.handlers.base import BaseRouteHandler

from serving.settings import ApiKey

BEARER_CHALLENGE = 'Bearer realm="triage"'

# who may call what (see the matrix above)
CLINICAL_ROLES: tuple[str, ...] = ("clinician", "admin")
AUDIT_ROLES: tuple[str, ...] = ("auditor", "admin")
SEARCH_ROLES: tuple[str, ...] = ("clinician", "auditor", "admin")
ADMIN_ROLES: tuple[str, ...] = ("admin",)
_MAX_TOKEN_LENGTH = 4096


@dataclass(frozen=True, slots=True)
class Principal:
    role: str
    name: str = ""  # the token's name (TRIAGE_API_KEYS), never the token


class TokenTable:
    """SHA-256 digests of the configured tokens with their roles; plaintext is not kept."""

    __slots__ = ("_entries",)

    def __init__(self, keys: tuple[ApiKey, ...]) -> None:
        self._entries: tuple[tuple[bytes, str, str], ...] = tuple(
            (hashlib.sha256(k.token.encode("utf-8")).digest(), k.role, k.name or k.role)
            for k in keys
        )

    def __len__(self) -> int:
        return len(self._entries)

    def role_for(self, token: str) -> str | None:
        found = self.principal_for(token)
        return None if found is None else found.role

    def principal_for(self, token: str) -> Principal | None:
        """The role and name of ``token``, or ``None``."""
        presented = hashlib.sha256(token.encode("utf-8", "surrogatepass")).digest()
        found: Principal | None = None
        for digest, role, name in self._entries:  # compare with every entry, never break early
            if hmac.compare_digest(presented, digest):
                found = Principal(role=role, name=name)
        return found


def _unauthorized(detail: str) -> NotAuthorizedException:
    return NotAuthorizedException(detail=detail, headers={"WWW-Authenticate": BEARER_CHALLENGE})


def bearer_token_from(header: str | None) -> str | None:
    if not header:
        return None
    scheme, _, token = header.strip().partition(" ")
    if scheme.lower() != "bearer":
        return None
    token = token.strip()
    if not token or len(token) > _MAX_TOKEN_LENGTH:
        return None
    return token


async def require_api_key(connection: ASGIConnection, handler: BaseRouteHandler) -> None:
    """Guard: accept only a configured bearer token; attach its role as ``request.user``.

    A coroutine on purpose: Litestar runs a *sync* guard in a worker thread (anyio offload, about
    0.1 ms per request under load) while this check costs a few microseconds on the event loop.
    """
    token = bearer_token_from(connection.headers.get("authorization"))
    if token is None:
        raise _unauthorized("missing bearer token (Authorization: Bearer <token>)")
    table: TokenTable = connection.app.state.tokens
    principal = table.principal_for(token)
    if principal is None:
        raise _unauthorized("unknown or revoked token")
    connection.scope["user"] = principal
    role = principal.role
    allowed = handler.opt.get("roles")
    if allowed and role not in allowed:
        raise PermissionDeniedException(detail=f"role {role!r} may not call this endpoint")
