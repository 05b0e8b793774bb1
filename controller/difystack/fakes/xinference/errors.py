"""Xinference's error shapes: FastAPI's ``{"detail": ...}`` bodies and its 422 validation errors."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response


class ApiError(Exception):
    """Becomes a FastAPI-style ``{"detail": ...}`` response."""

    def __init__(self, status: int, detail: Any, headers: Mapping[str, str] | None = None) -> None:
        super().__init__(str(detail))
        self.status = status
        self.detail = detail
        self.headers = dict(headers or {})


class RegistrationError(Exception):
    """A custom spec is unacceptable; ``status`` is what the real server answers."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def validation_error(location: str, name: str, error_type: str, message: str, given: Any) -> ApiError:
    """The 422 FastAPI answers when a request body does not fit its pydantic model."""
    return ApiError(422, [{"type": error_type, "loc": [location, name], "msg": message, "input": given}])


def missing_field(location: str, name: str, given: Any) -> ApiError:
    return validation_error(location, name, "missing", "Field required", given)


def wrong_type(location: str, name: str, expected: str, given: Any) -> ApiError:
    return validation_error(location, name, f"{expected}_type", f"Input should be a valid {expected}", given)


async def api_error_response(_: Request, exc: Exception) -> Response:
    assert isinstance(exc, ApiError)
    return JSONResponse({"detail": exc.detail}, status_code=exc.status, headers=exc.headers)


async def http_error_response(_: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    return JSONResponse({"detail": exc.detail}, status_code=exc.status_code, headers=exc.headers)
