"""Console routes of the fake Dify api that are not about plugins or models: health, ping,
setup and the init-password gate, system features, login / logout / refresh with the
version's session scheme (tokens in the body before 1.9.2, HttpOnly cookies + CSRF from it),
and the current workspace."""

from __future__ import annotations

import os
import re
import time
from collections.abc import Mapping
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from difystack.fakes.common.http import json_body
from difystack.fakes.common.tokens import jwt_decode, jwt_encode
from difystack.fakes.dify_api.auth import Gatekeeper, decode_base64_password, read_session, sign_session
from difystack.fakes.dify_api.config import ApiConfig
from difystack.fakes.dify_api.errors import (
    ALREADY_SETUP,
    AUTHENTICATION_FAILED,
    INIT_VALIDATE_FAILED,
    LOGIN_LOCKED,
    NOT_INIT_VALIDATED,
    invalid_param,
)
from difystack.fakes.dify_api.state import ApiState, Principal

PASSWORD_PATTERN = re.compile(r"^(?=.*[a-zA-Z])(?=.*\d).{8,}$")
EMAIL_PATTERN = re.compile(r"^[\w.+-]+@([\w-]+\.)*[\w-]+$")


class ConsoleHandlers:
    def __init__(self, config: ApiConfig, state: ApiState, gate: Gatekeeper) -> None:
        self.config = config
        self.state = state
        self.gate = gate

    async def health(self, _: Request) -> Response:
        return JSONResponse({"pid": os.getpid(), "status": "ok", "version": str(self.config.version)})

    async def ping(self, _: Request) -> Response:
        return JSONResponse({"result": "pong"})

    async def setup_status(self, _: Request) -> Response:
        if self.state.setup is None:
            return JSONResponse({"step": "not_started"})
        return JSONResponse({"step": "finished", "setup_at": self.state.setup["setup_at"]})

    async def setup(self, request: Request) -> Response:
        if self.state.setup is not None or self.state.tenant is not None:
            raise ALREADY_SETUP
        if not self.init_validated(request):
            raise NOT_INIT_VALIDATED
        body = await json_body(request)
        email, name, password, language = self.parse_setup(body if isinstance(body, dict) else {})
        self.state.create_owner(email, name, password, language, str(self.config.version))
        return JSONResponse({"result": "success"}, status_code=201)

    @staticmethod
    def parse_setup(body: Mapping[str, Any]) -> tuple[str, str, str, str]:
        email, name, password = body.get("email"), body.get("name"), body.get("password")
        for field, value in (("email", email), ("name", name), ("password", password)):
            if not isinstance(value, str):
                raise invalid_param(
                    f"{field}: Field required"
                    if value is None
                    else f"{field}: Input should be a valid string"
                )
        if not EMAIL_PATTERN.match(email):
            raise invalid_param(f"{email} is not a valid email.")
        if len(name) > 30:
            raise invalid_param("name: String should have at most 30 characters")
        if not PASSWORD_PATTERN.match(password):
            raise invalid_param(
                "Password must contain letters and numbers, and the length must be greater than 8."
            )
        language = body.get("language")
        return email.lower(), name, password, language if isinstance(language, str) else "en-US"

    def init_validated(self, request: Request) -> bool:
        if not self.config.init_password or self.state.setup is not None:
            return True
        return bool(
            read_session(request.cookies.get("session"), self.config.secret_key).get("is_init_validated")
        )

    async def init_status(self, request: Request) -> Response:
        return JSONResponse({"status": "finished" if self.init_validated(request) else "not_started"})

    async def init_validate(self, request: Request) -> Response:
        if self.state.tenant is not None:
            raise ALREADY_SETUP
        body = await json_body(request)
        password = body.get("password") if isinstance(body, dict) else None
        if not isinstance(password, str):
            raise invalid_param("password: Field required")
        if len(password) > 30:
            raise invalid_param("password: String should have at most 30 characters")
        validated = password == self.config.init_password
        response = (
            JSONResponse({"result": "success"}, status_code=201)
            if validated
            else INIT_VALIDATE_FAILED.response()
        )
        session = sign_session({"is_init_validated": validated}, self.config.secret_key)
        response.set_cookie("session", session, path="/", httponly=True, samesite="lax")
        return response

    async def system_features(self, _: Request) -> Response:
        return JSONResponse(
            {
                "sso_enforced_for_signin": False,
                "sso_enforced_for_signin_protocol": "",
                "enable_marketplace": self.config.marketplace_enabled,
                "max_plugin_package_size": self.config.max_package_size,
                "enable_email_code_login": False,
                "enable_email_password_login": True,
                "enable_social_oauth_login": False,
                "is_allow_register": False,
                "is_allow_create_workspace": False,
                "is_email_setup": False,
                "license": {"status": "none", "expired_at": ""},
                "branding": {"enabled": False},
                "webapp_auth": {"enabled": False},
                "plugin_installation_permission": {
                    "plugin_installation_scope": "all",
                    "restrict_to_marketplace_only": False,
                },
                "enable_change_email": True,
            }
        )

    # --- login, logout, refresh ---------------------------------------------------------

    async def login(self, request: Request) -> Response:
        body = await json_body(request)
        body = body if isinstance(body, dict) else {}
        email, password = body.get("email"), body.get("password")
        if not isinstance(email, str) or not isinstance(password, str):
            raise invalid_param("email and password are required")
        if self.config.features.base64_password:
            password = decode_base64_password(password)
        email = email.strip().lower()
        if self.state.login_locked(email):
            raise LOGIN_LOCKED
        account = self.state.account_by_email(email)
        if account is None or not self.state.password_matches(account, password):
            self.state.add_login_error(email)
            raise AUTHENTICATION_FAILED
        self.state.reset_login_errors(email)
        account["last_login_at"] = time.time()
        self.state.save()
        return self.issue_tokens(account["id"])

    def issue_tokens(self, account_id: str) -> Response:
        access_seconds = self.config.access_token_minutes * 60
        now = int(time.time())
        access = jwt_encode(
            {
                "user_id": account_id,
                "exp": now + access_seconds,
                "iss": "SELF_HOSTED",
                "sub": "Console API Passport",
            },
            self.config.secret_key,
        )
        refresh = os.urandom(64).hex()
        refresh_seconds = self.config.refresh_token_days * 86400
        self.state.drop_refresh_tokens(account_id)
        self.state.refresh_tokens[refresh] = {"account_id": account_id, "expires_at": now + refresh_seconds}
        self.state.save()
        if not self.config.features.cookie_session:
            return JSONResponse(
                {"result": "success", "data": {"access_token": access, "refresh_token": refresh}}
            )
        csrf = jwt_encode({"exp": now + access_seconds, "sub": account_id}, self.config.secret_key)
        response = JSONResponse({"result": "success"})
        self.set_cookie(response, "access_token", access, access_seconds, httponly=True)
        self.set_cookie(response, "refresh_token", refresh, refresh_seconds, httponly=True)
        self.set_cookie(response, "csrf_token", csrf, access_seconds, httponly=False)
        return response

    def set_cookie(self, response: Response, name: str, value: str, max_age: int, *, httponly: bool) -> None:
        response.set_cookie(
            self.config.cookie_name(name),
            value,
            max_age=max_age,
            path="/",
            secure=self.config.secure_cookies,
            httponly=httponly,
            samesite="lax",
        )

    async def logout(self, request: Request) -> Response:
        token = self.gate.access_token(request)
        payload = jwt_decode(token, self.config.secret_key) if token else None
        if payload:
            self.state.drop_refresh_tokens(payload.get("user_id"))
            self.state.save()
        response = JSONResponse({"result": "success"})
        if self.config.features.cookie_session:
            for name in ("access_token", "refresh_token", "csrf_token"):
                response.delete_cookie(
                    self.config.cookie_name(name), path="/", secure=self.config.secure_cookies
                )
        return response

    async def refresh_token(self, request: Request) -> Response:
        cookie_session = self.config.features.cookie_session
        if cookie_session:
            token = request.cookies.get(self.config.cookie_name("refresh_token"))
        else:
            body = await json_body(request)
            token = body.get("refresh_token") if isinstance(body, dict) else None
        entry = self.state.refresh_tokens.get(token or "")
        if not token or entry is None or entry["expires_at"] < time.time():
            reason = "No refresh token provided" if not token else "Invalid refresh token"
            return JSONResponse(
                {"result": "fail", "message" if cookie_session else "data": reason}, status_code=401
            )
        del self.state.refresh_tokens[token]
        return self.issue_tokens(entry["account_id"])

    # --- workspace ----------------------------------------------------------------------

    async def current_workspace(self, _: Request, principal: Principal) -> Response:
        tenant = principal.tenant
        return JSONResponse(
            {
                "id": tenant["id"],
                "name": tenant["name"],
                "plan": "sandbox",
                "status": "normal",
                "created_at": tenant["created_at"],
                "role": "owner",
                "in_trial": None,
                "trial_end_reason": None,
                "custom_config": None,
            }
        )
