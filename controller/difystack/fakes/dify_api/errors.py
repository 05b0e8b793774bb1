"""Dify's error shape ``{"code", "message", "status"}``, the errors the console API answers
with, and how the plugin daemon's failures show through the api."""

from __future__ import annotations

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from difystack.fakes.dify_api.daemon_client import PluginDaemonFailure


class DifyError(Exception):
    """A Dify HTTP error: ``{"code", "message", "status"}``."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message

    def response(self) -> JSONResponse:
        return JSONResponse({"code": self.code, "message": self.message, "status": self.status}, self.status)


def invalid_param(message: str) -> DifyError:
    """What a ValueError or a pydantic ValidationError becomes in Dify's console API."""
    return DifyError(400, "invalid_param", message)


NOT_SETUP = DifyError(
    401,
    "not_setup",
    "Dify has not been initialized and installed yet. "
    "Please proceed with the initialization and installation process first.",
)
NOT_INIT_VALIDATED = DifyError(
    401,
    "not_init_validated",
    "Init validation has not been completed yet. Please proceed with the init validation process first.",
)
ALREADY_SETUP = DifyError(
    403,
    "already_setup",
    "Dify has been successfully installed. Please refresh the page or return to the dashboard homepage.",
)
INIT_VALIDATE_FAILED = DifyError(
    401, "init_validate_failed", "Init validation failed. Please check the password and try again."
)
AUTHENTICATION_FAILED = DifyError(401, "authentication_failed", "Invalid email or password.")
INVALID_ENCRYPTED_DATA = DifyError(401, "authentication_failed", "Invalid encrypted data")
LOGIN_LOCKED = DifyError(
    429, "email_code_login_limit", "Too many incorrect password attempts. Please try again later."
)
UNAUTHORIZED = DifyError(401, "unauthorized", "Unauthorized.")
CSRF_INVALID = DifyError(401, "unauthorized", "CSRF token is missing or invalid.")


def unauthorized(message: str) -> DifyError:
    return DifyError(401, "unauthorized", message)


def plugin_error(failure: PluginDaemonFailure) -> JSONResponse:
    """How the console API reports a daemon-side error (PluginDaemonClientSideError)."""
    return JSONResponse({"code": "plugin_error", "message": str(failure)}, status_code=400)


def invoke_error(failure: PluginDaemonFailure) -> DifyError:
    """A plugin's InvokeError -> 400 completion_request_error with its message; else 500."""
    inner = failure.plugin_invoke_error()
    if inner is None:
        return DifyError(500, "internal_server_error", failure.message)
    return DifyError(400, "completion_request_error", inner[1])


def error_text(exc: Exception) -> str:
    """The message Dify shows for a failure: the plugin's own text where there is one."""
    if isinstance(exc, PluginDaemonFailure):
        inner = exc.plugin_invoke_error()
        return inner[1] if inner else exc.message
    if isinstance(exc, DifyError):
        return exc.message
    return str(exc)


async def http_error(_: Request, exc: Exception) -> Response:
    """Werkzeug-style JSON for unknown routes (404) and wrong methods (405)."""
    status = exc.status_code if isinstance(exc, HTTPException) else 500
    codes = {
        404: ("not_found", "The requested URL was not found on the server."),
        405: ("method_not_allowed", "The method is not allowed for the requested URL."),
    }
    code, message = codes.get(status, ("internal_server_error", "Internal Server Error"))
    return JSONResponse({"code": code, "message": message, "status": status}, status_code=status)
