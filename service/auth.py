"""Bearer-token auth as a FastAPI security dependency, applied per router (health stays open).

With `STTM_API_KEY` set, every protected route needs `Authorization: Bearer <key>`
(compared in constant time); without it, nothing is required. The scheme shows in the
OpenAPI schema (`/docs` has an Authorize button).
"""

from __future__ import annotations

import hmac
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from service.errors import ApiError

bearer = HTTPBearer(auto_error=False, description="the server's STTM_API_KEY (required only when it is set)")


async def require_token(
    request: Request, credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)]
) -> None:
    key = request.app.state.runtime.settings.api_key
    if key is None:
        return
    token = credentials.credentials.encode() if credentials else b""
    if not hmac.compare_digest(token, key.get_secret_value().encode()):
        raise ApiError(401, "unauthorized", "a valid bearer token is required")


Protected = [Depends(require_token)]  # `dependencies=` of a router or route
