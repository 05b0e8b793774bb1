"""LocalAI's error body (``schema.ErrorResponse``) and its answers to unknown routes."""

from __future__ import annotations

import json

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

BAD_JSON_BODY = "code=400, message=Syntax error: the request body must be a JSON object"


def error_response(status: int, message: str, error_type: str = "") -> JSONResponse:
    """``{"error": {"code", "message", "type"}}``; ``type`` is empty unless set."""
    return JSONResponse(
        {"error": {"code": status, "message": message, "type": error_type}}, status_code=status
    )


class LocalAIError(Exception):
    """Raised by a handler; answered with LocalAI's error body."""

    def __init__(self, status: int, message: str, error_type: str = "") -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.error_type = error_type


def model_not_found(name: str) -> LocalAIError:
    message = f"model {json.dumps(name)} not found. To see available models, call GET /v1/models"
    return LocalAIError(404, message, "invalid_request_error")


async def localai_error(_: Request, exc: Exception) -> Response:
    assert isinstance(exc, LocalAIError)
    return error_response(exc.status, exc.message, exc.error_type)


async def http_error(_: Request, exc: Exception) -> Response:
    status = exc.status_code if isinstance(exc, HTTPException) else 500
    if status == 404:
        return error_response(404, "Resource not found")
    detail = exc.detail if isinstance(exc, HTTPException) else str(exc)
    return error_response(status, f"code={status}, message={detail}")
