"""The daemon's answers: ``{"code": 0, "message": "success", "data": ...}`` on success, and on
error ``{"code": -400|-401|-404|-500, "message": "<json {message, error_type, args}>", "data":
null}``, mostly with HTTP 200 like the real daemon (401 for a bad ``X-Api-Key``, 400/404 for
the dispatch pre-checks)."""

from __future__ import annotations

import json
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse


class DaemonError(Exception):
    """An error the daemon reports in its envelope."""

    def __init__(
        self,
        message: str,
        error_type: str = "PluginDaemonBadRequestError",
        code: int = -400,
        http_status: int = 200,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.error_type = error_type
        self.code = code
        self.http_status = http_status

    def envelope(self) -> dict[str, Any]:
        inner = {"message": self.message, "error_type": self.error_type, "args": None}
        return {"code": self.code, "message": json.dumps(inner), "data": None}

    def response(self) -> JSONResponse:
        return JSONResponse(self.envelope(), status_code=self.http_status)


def success(data: Any) -> JSONResponse:
    return JSONResponse({"code": 0, "message": "success", "data": data})


def internal_error(message: str) -> DaemonError:
    return DaemonError(message, "PluginDaemonInternalServerError", -500)


def pagination(request: Request) -> tuple[int, int]:
    try:
        page = int(request.query_params.get("page", ""))
        page_size = int(request.query_params.get("page_size", ""))
    except ValueError as exc:
        raise DaemonError(
            "Key: 'Page' Error:Field validation for 'Page' failed on the 'required' tag"
        ) from exc
    if page < 1 or not 1 <= page_size <= 256:
        raise DaemonError("Key: 'PageSize' Error:Field validation for 'PageSize' failed on the 'max' tag")
    return page, page_size


def page_of(request: Request, items: list[Any]) -> list[Any]:
    """The page of ``items`` that the request's ``page`` and ``page_size`` select."""
    page, page_size = pagination(request)
    return items[(page - 1) * page_size : page * page_size]
