"""HTTP security of the worker's API: bearer-token authentication and bounded request bodies.

- With `AVAILABILITY_API_TOKEN` set, every request needs `Authorization: Bearer <token>`, except the probes
  `/health` and `/ready` (orchestrators call them without credentials; they reveal nothing but liveness and the
  partition numbers held). No or malformed credentials: 401 with `WWW-Authenticate: Bearer realm="availability"`;
  a wrong token: 403. Tokens are compared in constant time (`hmac.compare_digest` of their SHA-256 digests) and never logged or echoed.
- A request whose `Content-Length` exceeds `AVAILABILITY_MAX_REQUEST_BODY_BYTES` is refused with 413 before its body
  is read; views that read a body use `read_body()`, which also stops a chunked body at the limit.
- Without a token the API is open: the worker then binds to loopback unless AVAILABILITY_WEB_HOST says otherwise,
  and says so in its log when it does not.

`check_bearer` is pure; `security_middleware` binds it (and the size limit) to aiohttp, in front of every route,
Faust's own included.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import logging
from collections.abc import Awaitable, Callable
from enum import Enum

from aiohttp import web

from app.errors import UserError

logger = logging.getLogger(__name__)

OPEN_PATHS = frozenset({"/health", "/ready"})
REALM = "availability"
CHALLENGE = f'Bearer realm="{REALM}"'


class AuthOutcome(Enum):
    ALLOWED = 200
    MISSING = 401  # no usable credentials: ask for them
    FORBIDDEN = 403  # credentials given, and wrong


class BodyTooLarge(UserError):
    """The request body is larger than the configured limit (HTTP 413)."""


def check_bearer(authorization: str | None, token: str | None, path: str) -> AuthOutcome:
    """Whether a request for `path` with this Authorization header may proceed. `token` None: no authentication."""
    if token is None or path in OPEN_PATHS:
        return AuthOutcome.ALLOWED
    if not authorization:
        return AuthOutcome.MISSING
    scheme, _, credentials = authorization.strip().partition(" ")
    credentials = credentials.strip()
    if scheme.lower() != "bearer" or not credentials:
        return AuthOutcome.MISSING
    # Digests first, so both sides have the same length and compare_digest's time reveals neither value nor length.
    given = hashlib.sha256(credentials.encode("utf-8", "surrogateescape")).digest()
    expected = hashlib.sha256(token.encode()).digest()
    return AuthOutcome.ALLOWED if hmac.compare_digest(given, expected) else AuthOutcome.FORBIDDEN


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def security_middleware(token: str | None, max_body_bytes: int) -> Callable:
    @web.middleware
    async def secure(request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]):
        outcome = check_bearer(request.headers.get("Authorization"), token, request.path)
        if outcome is AuthOutcome.MISSING:
            return web.json_response(
                {"error": "authentication required: send Authorization: Bearer <token>"},
                status=401,
                headers={"WWW-Authenticate": CHALLENGE},
            )
        if outcome is AuthOutcome.FORBIDDEN:
            logger.warning("HTTP %s %s refused: wrong bearer token from %s", request.method, request.path,
                           request.remote)
            return web.json_response(
                {"error": "the bearer token is not valid for this service"},
                status=403,
                headers={"WWW-Authenticate": f'{CHALLENGE}, error="invalid_token"'},
            )
        length = request.content_length
        if length is not None and length > max_body_bytes:
            return body_too_large(max_body_bytes)
        try:
            return await handler(request)
        except web.HTTPException as error:  # the router's 404 and 405: JSON like every other error of the API
            if error.status < 400 or error.content_type == "application/json":
                raise
            headers = {"Allow": error.headers["Allow"]} if "Allow" in error.headers else None
            return web.json_response({"error": error.reason}, status=error.status, headers=headers)

    return secure


def body_too_large(max_body_bytes: int) -> web.Response:
    return web.json_response({"error": f"request body larger than {max_body_bytes} bytes"}, status=413)


async def read_body(request: web.Request, max_body_bytes: int) -> bytes:
    """The request body, at most `max_body_bytes`; raises BodyTooLarge beyond (also for chunked bodies)."""
    chunks: list[bytes] = []
    size = 0
    while True:
        chunk = await request.content.read(65_536)
        if not chunk:
            return b"".join(chunks)
        size += len(chunk)
        if size > max_body_bytes:
            raise BodyTooLarge(f"request body larger than {max_body_bytes} bytes")
        chunks.append(chunk)


async def read_json_body(request: web.Request, max_body_bytes: int) -> bytes | web.Response:
    """The body of a JSON POST, or the response that refuses it: 415 for another content type, 413 beyond
    `max_body_bytes`."""
    if request.content_type != "application/json":
        return web.json_response({"error": "Content-Type must be application/json"}, status=415)
    try:
        return await read_body(request, max_body_bytes)
    except BodyTooLarge:
        return body_too_large(max_body_bytes)
