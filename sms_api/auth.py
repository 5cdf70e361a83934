"""The optional bearer token on the prediction routes (SMS_API_TOKEN).

With a token, `/predict` and `/predict/batch` answer 401 unless the request carries
`Authorization: Bearer <token>`; `/health` and `/ready` stay open for health checks. FastAPI's own
`HTTPBearer` reads the header and declares the scheme in the OpenAPI document; the token is compared in
constant time, and neither it nor what a client sent appears in an answer or a log line.
"""

from __future__ import annotations

import hmac
from collections.abc import Awaitable, Callable
from typing import Annotated, Any

from fastapi import Depends, FastAPI, Request
from fastapi.params import Depends as DependsParam
from fastapi.responses import JSONResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

# auto_error=False: a missing or malformed header reaches `_checker`, which says which of the two it is.
bearer = HTTPBearer(
    auto_error=False,
    description="The token the service was started with (SMS_API_TOKEN); required only when it is set.",
)


class Unauthorized(Exception):
    def __init__(self, detail: str, challenge: str = "Bearer"):
        super().__init__(detail)
        self.detail = detail
        self.challenge = challenge  # the WWW-Authenticate value (RFC 6750, section 3)


def _checker(token: str) -> Callable[..., Awaitable[None]]:
    expected = token.encode()

    async def check_token(
        request: Request, credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)]
    ) -> None:
        if credentials is None:
            if "authorization" not in request.headers:
                raise Unauthorized("missing Authorization header: send 'Authorization: Bearer <token>'")
            # Another scheme (or none after "Bearer"): RFC 6750 gives such a request no error code.
            raise Unauthorized("the Authorization header is not 'Bearer <token>'")
        # Bytes, because compare_digest refuses str holding non-ASCII characters, which a client may send.
        if not hmac.compare_digest(credentials.credentials.encode(), expected):
            raise Unauthorized(
                "the bearer token is not the one this service was started with",
                'Bearer error="invalid_token"',
            )

    return check_token


def dependencies(token: str | None) -> list[DependsParam]:
    """What a prediction route depends on: the token check when a token is set, else nothing (and then
    the OpenAPI document declares no security on the route either)."""
    return [Depends(_checker(token))] if token else []


def install_handler(app: FastAPI) -> None:
    @app.exception_handler(Unauthorized)
    async def unauthorized(request: Request, exc: Unauthorized) -> JSONResponse:
        content: dict[str, Any] = {"error": "unauthorized", "detail": exc.detail}
        return JSONResponse(status_code=401, content=content, headers={"WWW-Authenticate": exc.challenge})
